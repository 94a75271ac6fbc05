"""Hash functions: token feature -> expert. One small class each, one registry.

A hash function builds (once) a table that is stored as a buffer, and maps a
``RoutingContext`` to expert ids. Adding a type means writing a subclass and
decorating it with ``@register_hash('name')``; nothing else changes.
"""

from __future__ import annotations

import heapq
from typing import Callable, Dict, Optional, Type

import torch

from parlai_hash.routing.context import RoutingContext


class HashFunction:
    """Base class: a random-free mapping from a token feature to an expert."""

    #: whether the type can route while generating (the oracle cannot).
    generatable: bool = True

    def __init__(self, num_experts: int, seed: int):
        self.num_experts = num_experts
        self.seed = seed

    def build_table(
        self, vocab_size: int, token_counts: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The ``[vocab_size]`` token -> expert table saved in the checkpoint."""
        raise NotImplementedError

    def experts(self, table: torch.Tensor, ctx: RoutingContext) -> torch.Tensor:
        """``[B, T]`` expert id of each token processed now."""
        return table[ctx.tokens]


HASH_TYPES: Dict[str, Type[HashFunction]] = {}


def register_hash(name: str) -> Callable[[Type[HashFunction]], Type[HashFunction]]:
    def deco(cls: Type[HashFunction]) -> Type[HashFunction]:
        HASH_TYPES[name] = cls
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


@register_hash('random')
class RandomHash(HashFunction):
    """Each dictionary token gets a fixed, uniformly random expert."""

    def build_table(self, vocab_size, token_counts):
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randint(self.num_experts, (vocab_size,), generator=gen)


@register_hash('balanced')
class BalancedHash(HashFunction):
    """Greedy balance (paper, Fig. 4): most frequent token first, to the emptiest expert.

    Load is the summed training frequency; ties go to the expert with fewer
    token types, so unseen tokens spread out instead of piling on one expert.
    """

    def build_table(self, vocab_size, token_counts):
        if token_counts is None:
            raise ValueError("balanced hashing needs token frequencies from the dictionary")
        counts = token_counts.to(torch.float64)
        # Stable sort on the negated counts, so equal counts keep id order.
        order = torch.argsort(-counts, stable=True).tolist()
        heap = [(0.0, 0, e) for e in range(self.num_experts)]
        table = torch.empty(vocab_size, dtype=torch.long)
        values = counts.tolist()
        for tok in order:
            load, n_types, e = heapq.heappop(heap)
            table[tok] = e
            heapq.heappush(heap, (load + values[tok], n_types + 1, e))
        return table
