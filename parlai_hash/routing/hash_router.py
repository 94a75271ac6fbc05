"""HashRouter: the module that holds hash tables as buffers and applies them."""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn

from parlai_hash.errors import OptionError
from parlai_hash.routing.context import RoutingContext
from parlai_hash.routing.hash_functions import HASH_TYPES, HashFunction, TableInputs



def hash_function_class(hash_type: str):
    if hash_type not in HASH_TYPES:
        raise OptionError(
            '--hash-type',
            f"unknown hash type {hash_type!r}",
            f"choose one of {', '.join(sorted(HASH_TYPES))}",
        )
    return HASH_TYPES[hash_type]


def make_hash_function(hash_type: str, num_experts: int, seed: int) -> HashFunction:
    return hash_function_class(hash_type)(num_experts, seed)


class HashRouter(nn.Module):
    """Routes each token by N fixed hashes; the tables are one buffer ``[N, ...]``.

    N is 1 except for MultiHash. Because the tables are saved, a reloaded model
    routes identically on any device, whatever the data it sees at load time.
    """

    def __init__(self, hash_type: str, num_experts: int, seed: int, table: torch.Tensor):
        super().__init__()
        self.hash_type = hash_type
        self.num_experts = num_experts
        self.num_hashes = table.shape[0]
        self.functions: List[HashFunction] = [
            make_hash_function(hash_type, num_experts, seed + m) for m in range(self.num_hashes)
        ]
        self.register_buffer('table', table)
        # Routers built with the same type and seed hold the same table (shared
        # when built, equal after .cuda() copies each buffer): layers may share plans.
        self.table_key = (hash_type, num_experts, seed, self.num_hashes)

    @staticmethod
    def build_tables(
        hash_type: str, num_experts: int, seed: int, inputs: TableInputs, num_hashes: int = 1
    ) -> torch.Tensor:
        """``[N, ...]`` tables, hash m seeded with ``seed + m``."""
        functions = [make_hash_function(hash_type, num_experts, seed + m) for m in range(num_hashes)]
        return torch.stack([f.build_table(inputs).to(torch.long) for f in functions])

    @staticmethod
    def placeholder_tables(
        hash_type: str, num_experts: int, inputs: TableInputs, num_hashes: int = 1
    ) -> torch.Tensor:
        """Zero tables of the right shape, for a checkpoint to fill on load."""
        shape = make_hash_function(hash_type, num_experts, 0).table_shape(inputs)
        return torch.zeros((num_hashes, *shape), dtype=torch.long)

    @property
    def function(self) -> HashFunction:
        return self.functions[0]

    @property
    def generatable(self) -> bool:
        return self.function.generatable

    def describe(self, name: str, token_counts: Optional[torch.Tensor] = None) -> str:
        """One log line: bucket sizes of each table (and dictionary-count shares)."""
        parts = []
        for m, f in enumerate(self.functions):
            if f.indexed_by == 'coefficients':
                parts.append(f'hash {m}: coefficients {self.table[m].tolist()}')
                continue
            sizes = torch.bincount(self.table[m], minlength=self.num_experts)
            text = f'hash {m}: {f.indexed_by}s per expert min {sizes.min().item()} max {sizes.max().item()}'
            if f.indexed_by == 'token' and token_counts is not None and token_counts.sum() > 0:
                load = torch.zeros(self.num_experts, dtype=torch.float64)
                load.index_add_(0, self.table[m], token_counts.to(torch.float64))
                text += f', max expert share of dictionary counts {(load.max() / load.sum()).item():.3f}'
            parts.append(text)
        return f"{name}: {self.hash_type} hash into {self.num_experts} experts; " + '; '.join(parts)

    def forward(self, ctx: RoutingContext, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, T]`` expert ids (``[B, T, N]`` for MultiHash); ``hidden`` is unused."""
        routes = [f.experts(self.table[m], ctx) for m, f in enumerate(self.functions)]
        return routes[0] if self.num_hashes == 1 else torch.stack(routes, dim=-1)
