"""Hash functions: a token feature -> an expert. One small class each, one registry.

A hash function builds (once) a table that is stored as a buffer in the
checkpoint, and maps a ``RoutingContext`` to expert ids with it. Adding a type
means writing a subclass and decorating it with ``@register_hash('name')``.

| type        | routes on                                  | table                              |
| random      | the current token x_t                      | token -> random expert (top-k: k)  |
| balanced    | x_t                                        | greedy by frequency, 2 choices     |
|             |                                            | (top-k: k slots, distinct experts) |
| bigram      | (x_{t-1}, x_t)                             | universal-hash coefficients (a,b,c) |
| previous    | x_{t-1} (position 0: expert 0)             | token -> random expert             |
| position    | the position t                             | position -> random expert          |
| oracle      | x_{t+1}, the label (teacher forcing only)  | token -> random expert             |
| predicted   | a frozen baseline's argmax for x_{t+1}     | token -> random expert             |
| clustered   | x_t, by k-means cluster of its embedding   | token -> cluster                   |
| dispersed   | x_t, each cluster spread over all experts  | token -> expert                    |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Type

import torch

from parlai_hash.errors import OptionError
from parlai_hash.routing.context import NO_TOKEN, RoutingContext

#: Expert used where there is no previous token (position 0), for ``previous``.
START_EXPERT = 0
#: The Mersenne prime 2^31 - 1: modulus of the bigram universal hash.
BIGRAM_PRIME = 2**31 - 1


@dataclass
class TableInputs:
    """What table builders may use. Loaded lazily by the agent, only if needed."""

    vocab_size: int
    n_positions: int
    token_counts: Optional[torch.Tensor] = None  # [V] training frequencies
    embeddings: Optional[torch.Tensor] = None  # [V, d] a baseline's token embeddings


class HashFunction:
    """Base class: a fixed mapping from a token feature to an expert."""

    name: str = ''
    #: whether the type can route while generating (the oracle cannot).
    generatable: bool = True
    #: what its table is indexed by: 'token' tables must match the dictionary.
    indexed_by: str = 'token'
    needs_counts: bool = False
    needs_embeddings: bool = False
    needs_predictor: bool = False
    #: whether it can build ``[V, k]`` tables: k distinct experts per token
    top_k: bool = False

    def __init__(self, num_experts: int, seed: int, experts_per_token: int = 1):
        self.num_experts = num_experts
        self.seed = seed
        self.experts_per_token = experts_per_token

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def table_shape(self, inputs: TableInputs) -> tuple:
        """Shape of the table, known without building it."""
        shape = {'token': (inputs.vocab_size,), 'position': (inputs.n_positions,),
                 'coefficients': (3,)}[self.indexed_by]
        return shape if self.experts_per_token == 1 else (*shape, self.experts_per_token)

    def build_table(self, inputs: TableInputs) -> torch.Tensor:
        """The table saved in the checkpoint (built once)."""
        return torch.randint(self.num_experts, (inputs.vocab_size,), generator=self.generator())

    def experts(self, table: torch.Tensor, ctx: RoutingContext) -> torch.Tensor:
        """``[B, T]`` expert id of each token processed now (``[B, T, k]`` from a top-k table)."""
        return table[ctx.tokens]


HASH_TYPES: Dict[str, Type[HashFunction]] = {}


def register_hash(name: str) -> Callable[[Type[HashFunction]], Type[HashFunction]]:
    def deco(cls: Type[HashFunction]) -> Type[HashFunction]:
        HASH_TYPES[name] = cls
        cls.name = name
        return cls

    return deco


def distinct_random_experts(vocab_size: int, num_experts: int, per_token: int,
                            gen: torch.Generator, chunk: int = 4096) -> torch.Tensor:
    """``[V, per_token]`` distinct uniformly random experts per token, in random
    order; drawn ``chunk`` tokens at a time (bounds memory for large V·K)."""
    chunks = [torch.empty(0, per_token, dtype=torch.long)]
    for start in range(0, vocab_size, chunk):
        rows = min(chunk, vocab_size - start)
        chunks.append(torch.rand(rows, num_experts, generator=gen).topk(per_token, dim=1).indices)
    return torch.cat(chunks)


@register_hash('random')
class RandomHash(HashFunction):
    """Each dictionary token gets a fixed, uniformly random expert (top-k: k distinct ones)."""

    top_k = True

    def build_table(self, inputs):
        if self.experts_per_token == 1:
            return super().build_table(inputs)
        return distinct_random_experts(inputs.vocab_size, self.num_experts, self.experts_per_token,
                                       self.generator())


def water_level(counts: Sequence[float], num_experts: int) -> float:
    """Each expert's load in a perfect split of the counts, apart from experts
    holding a single token heavier than that (which then hold it alone)."""
    heaviest_first = sorted(counts, reverse=True)
    rest = sum(heaviest_first)
    for n_alone in range(num_experts):
        level = rest / (num_experts - n_alone)
        if n_alone >= len(heaviest_first) or heaviest_first[n_alone] <= level:
            return level
        rest -= heaviest_first[n_alone]
    return rest


@register_hash('balanced')
class BalancedHash(HashFunction):
    """Greedy balance (paper, Fig. 4), each token choosing between two seeded experts.

    Tokens go most frequent first (equal frequencies in a seeded order; special
    tokens count 0), each to the emptier (summed frequency, then fewer types) of
    ``choices`` experts drawn from the seed, unless that lifts it above the
    ``water_level``: then to the emptiest expert, as the plain greedy would.
    Unseen tokens add no load: they go to the candidate with fewer unseen tokens.

    Why: the plain greedy (every expert a candidate) groups the same tokens
    whatever the seed, so MultiHash (seeds s, s+1, ...) and per-layer tables were
    one partition relabelled. Two random candidates (multiple-choice hashing,
    the paper's [14]) make tables of different seeds about as unrelated as two
    random tables (more candidates drift back to the greedy partition), and the
    water level keeps the busiest expert the greedy's (README, "Hash types").
    With K <= 2 every expert is a candidate: the plain greedy.
    """

    needs_counts = True
    top_k = True
    #: candidate experts per slot
    choices = 2
    #: tokens whose candidates are drawn at once (bounds memory for large V·K)
    candidate_chunk = 4096

    def candidates(self, vocab_size: int, gen: torch.Generator) -> torch.Tensor:
        """``[V, c]`` distinct random experts per token, in random order: ``choices``
        for the first slot and one more per further slot."""
        c = min(self.choices + self.experts_per_token - 1, self.num_experts)
        return distinct_random_experts(vocab_size, self.num_experts, c, gen, self.candidate_chunk)

    def build_table(self, inputs: TableInputs) -> torch.Tensor:
        """``[V]`` (``[V, k]`` with k slots per token: each slot carries the token's
        count, goes to the emptier of the first ``choices`` candidates the token
        does not hold yet, and the water level is that of the k·counts)."""
        k = self.experts_per_token
        counts = inputs.token_counts.to(torch.float64)
        gen = self.generator()
        shuffled = torch.randperm(inputs.vocab_size, generator=gen)
        order = shuffled[torch.argsort(-counts[shuffled], stable=True)].tolist()
        candidates = self.candidates(inputs.vocab_size, gen).tolist()
        values = counts.tolist()
        capacity = water_level(values * k, self.num_experts)
        # the fallback scans experts in a seeded order, so labels differ between seeds too
        experts = torch.randperm(self.num_experts, generator=gen).tolist()
        load = [0.0] * self.num_experts
        n_types = [0] * self.num_experts
        n_unseen = [0] * self.num_experts
        table = [[0] * k for _ in range(inputs.vocab_size)]
        for tok in order:
            count = values[tok]
            held = table[tok]
            for slot in range(k):
                free = [x for x in candidates[tok] if x not in held[:slot]][: self.choices]
                # min keeps the first of equal candidates, and their order is random
                if count > 0:
                    e = min(free, key=lambda x: (load[x], n_types[x]))
                    if load[e] + count > capacity:
                        e = min((x for x in experts if x not in held[:slot]),
                                key=lambda x: (load[x], n_types[x]))
                else:
                    e = min(free, key=lambda x: (n_unseen[x], load[x]))
                    n_unseen[e] += 1
                held[slot] = e
                load[e] += count
                n_types[e] += 1
        table = torch.tensor(table, dtype=torch.long)
        return table[:, 0] if k == 1 else table


@register_hash('bigram')
class BigramHash(HashFunction):
    """Universal hash of the pair: ((a·x_{t-1} + b·x_t + c) mod p) mod K, p = 2^31-1.

    a, b in [1, p) and c in [0, p) are drawn from the seed and saved as the table.
    At position 0, x_{t-1} is taken as -1 (mapped to p - 1).
    """

    indexed_by = 'coefficients'

    def build_table(self, inputs):
        gen = self.generator()
        a, b = torch.randint(1, BIGRAM_PRIME, (2,), generator=gen).tolist()
        c = torch.randint(0, BIGRAM_PRIME, (1,), generator=gen).item()
        return torch.tensor([a, b, c], dtype=torch.long)

    def experts(self, table, ctx):
        a, b, c = table[0], table[1], table[2]
        prev = ctx.previous_tokens % BIGRAM_PRIME  # NO_TOKEN -> p - 1
        # each product < 2^62; reduce before adding so the sum stays in int64
        mixed = ((a * prev) % BIGRAM_PRIME + (b * ctx.tokens) % BIGRAM_PRIME + c) % BIGRAM_PRIME
        return mixed % self.num_experts


@register_hash('previous')
class PreviousTokenHash(HashFunction):
    """Routes on the previous token x_{t-1}; position 0 goes to expert 0."""

    def experts(self, table, ctx):
        prev = ctx.previous_tokens
        routed = table[prev.clamp(min=0)]
        return routed.masked_fill(prev == NO_TOKEN, START_EXPERT)


@register_hash('position')
class PositionHash(HashFunction):
    """Routes on the position t alone (the paper's sanity check)."""

    indexed_by = 'position'

    def build_table(self, inputs):
        return torch.randint(self.num_experts, (inputs.n_positions,), generator=self.generator())

    def experts(self, table, ctx):
        return table[ctx.positions % table.numel()]


@register_hash('oracle')
class OracleHash(HashFunction):
    """Routes on the next token x_{t+1}: the label, known under teacher forcing only."""

    generatable = False

    def experts(self, table, ctx):
        upcoming = ctx.upcoming_tokens
        if upcoming is None:
            raise OptionError(
                '--hash-type',
                "oracle routing needs the next token, which exists only under teacher "
                "forcing, so an oracle model cannot generate",
                "evaluate it with --skip-generation true; generate with another hash type",
            )
        return table[upcoming]


@register_hash('predicted')
class PredictedHash(HashFunction):
    """Routes on the next token a frozen baseline predicts (its argmax)."""

    needs_predictor = True

    def experts(self, table, ctx):
        if ctx.predicted_next is None:
            raise RuntimeError("predicted routing ran without the baseline's predictions")
        return table[ctx.predicted_next]


def kmeans_clusters(embeddings: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """``[V]`` cluster of each token embedding (k-means, k clusters)."""
    from sklearn.cluster import KMeans  # only the clustered types need it

    data = embeddings.detach().to(torch.float32).cpu().numpy()
    labels = KMeans(n_clusters=k, random_state=seed, n_init=3).fit_predict(data)
    return torch.as_tensor(labels, dtype=torch.long)


@register_hash('clustered')
class ClusteredHash(HashFunction):
    """k-means (K clusters) of a baseline's token embeddings: each cluster is an expert."""

    needs_embeddings = True

    def build_table(self, inputs):
        return kmeans_clusters(inputs.embeddings, self.num_experts, self.seed)


@register_hash('dispersed')
class DispersedHash(HashFunction):
    """The same clusters, but each cluster's tokens dealt evenly over all K experts.

    Similar tokens end up on *different* experts (the paper's contrast to
    ``clustered``): within a cluster, tokens in a seeded random order go to
    experts 0, 1, ..., K-1, 0, ... starting from a per-cluster offset.
    """

    needs_embeddings = True

    def build_table(self, inputs):
        clusters = kmeans_clusters(inputs.embeddings, self.num_experts, self.seed)
        gen = self.generator()
        table = torch.empty_like(clusters)
        for c in range(self.num_experts):
            members = (clusters == c).nonzero().squeeze(1)
            members = members[torch.randperm(members.numel(), generator=gen)]
            table[members] = (torch.arange(members.numel()) + c) % self.num_experts
        return table
