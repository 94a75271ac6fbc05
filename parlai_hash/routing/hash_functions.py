"""Hash functions: a token feature -> an expert. One small class each, one registry.

A hash function builds (once) a table that is stored as a buffer in the
checkpoint, and maps a ``RoutingContext`` to expert ids with it. Adding a type
means writing a subclass and decorating it with ``@register_hash('name')``.

| type        | routes on                                  | table                              |
| random      | the current token x_t                      | token -> random expert             |
| balanced    | x_t                                        | greedy by training frequency       |
| bigram      | (x_{t-1}, x_t)                             | universal-hash coefficients (a,b,c) |
| previous    | x_{t-1} (position 0: expert 0)             | token -> random expert             |
| position    | the position t                             | position -> random expert          |
| oracle      | x_{t+1}, the label (teacher forcing only)  | token -> random expert             |
| predicted   | a frozen baseline's argmax for x_{t+1}     | token -> random expert             |
| clustered   | x_t, by k-means cluster of its embedding   | token -> cluster                   |
| dispersed   | x_t, each cluster spread over all experts  | token -> expert                    |
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Type

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

    def __init__(self, num_experts: int, seed: int):
        self.num_experts = num_experts
        self.seed = seed

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def table_shape(self, inputs: TableInputs) -> tuple:
        """Shape of the table, known without building it."""
        return {'token': (inputs.vocab_size,), 'position': (inputs.n_positions,),
                'coefficients': (3,)}[self.indexed_by]

    def build_table(self, inputs: TableInputs) -> torch.Tensor:
        """The table saved in the checkpoint (built once)."""
        return torch.randint(self.num_experts, (inputs.vocab_size,), generator=self.generator())

    def experts(self, table: torch.Tensor, ctx: RoutingContext) -> torch.Tensor:
        """``[B, T]`` expert id of each token processed now."""
        return table[ctx.tokens]


HASH_TYPES: Dict[str, Type[HashFunction]] = {}


def register_hash(name: str) -> Callable[[Type[HashFunction]], Type[HashFunction]]:
    def deco(cls: Type[HashFunction]) -> Type[HashFunction]:
        HASH_TYPES[name] = cls
        cls.name = name
        return cls

    return deco


@register_hash('random')
class RandomHash(HashFunction):
    """Each dictionary token gets a fixed, uniformly random expert."""


@register_hash('balanced')
class BalancedHash(HashFunction):
    """Greedy balance (paper, Fig. 4): most frequent token first, to the emptiest expert.

    Load is the summed training frequency; ties in load go to the expert with
    fewer token types (so unseen tokens spread out), and tokens of equal
    frequency are taken in a seeded random order (so seeds differ).
    """

    needs_counts = True

    def build_table(self, inputs):
        counts = inputs.token_counts.to(torch.float64)
        shuffled = torch.randperm(inputs.vocab_size, generator=self.generator())
        order = shuffled[torch.argsort(-counts[shuffled], stable=True)].tolist()
        heap = [(0.0, 0, e) for e in range(self.num_experts)]
        table = torch.empty(inputs.vocab_size, dtype=torch.long)
        values = counts.tolist()
        for tok in order:
            load, n_types, e = heapq.heappop(heap)
            table[tok] = e
            heapq.heappush(heap, (load + values[tok], n_types + 1, e))
        return table


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
