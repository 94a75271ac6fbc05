"""HashRouter: the module that holds hash tables as buffers and applies them."""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn

from parlai_hash.errors import OptionError
from parlai_hash.routing.context import RoutingContext
from parlai_hash.routing.hash_functions import HASH_TYPES, HashFunction, TableInputs
from parlai_hash.routing.hash_gates import LearnedHashGate, check_hash_gates, uniform_gates
from parlai_hash.routing.route import Route



def hash_function_class(hash_type: str):
    if hash_type not in HASH_TYPES:
        raise OptionError(
            '--hash-type',
            f"unknown hash type {hash_type!r}",
            f"choose one of {', '.join(sorted(HASH_TYPES))}",
        )
    return HASH_TYPES[hash_type]


def make_hash_function(hash_type: str, num_experts: int, seed: int,
                       experts_per_token: int = 1) -> HashFunction:
    cls = hash_function_class(hash_type)
    if experts_per_token > 1 and not cls.top_k:
        top_k = sorted(name for name, c in HASH_TYPES.items() if c.top_k)
        raise OptionError(
            '--experts-per-token',
            f"--hash-type {hash_type} routes each token to one expert; tables of "
            f"{experts_per_token} experts per token exist for {' and '.join(top_k)}",
            f"use --hash-type {' or '.join(top_k)}, or --experts-per-token 1",
        )
    return cls(num_experts, seed, experts_per_token)


class HashRouter(nn.Module):
    """Routes each token by N fixed hashes; the tables are one buffer ``[N, ...]``.

    N is 1 except for MultiHash. A top-k table (``experts_per_token`` k > 1)
    is ``[1, V, k]``: k distinct experts per token, weighted by ``gates``
    (``parlai_hash.routing.hash_gates``). Because the tables are saved, a
    reloaded model routes identically on any device, whatever the data it sees
    at load time.
    """

    def __init__(self, hash_type: str, num_experts: int, seed: int, table: torch.Tensor,
                 experts_per_token: int = 1, gates: str = 'none', dim: Optional[int] = None):
        super().__init__()
        check_hash_gates(gates, experts_per_token)
        self.hash_type = hash_type
        self.num_experts = num_experts
        self.num_hashes = table.shape[0]
        self.experts_per_token = experts_per_token
        if self.num_hashes > 1 and (experts_per_token > 1 or gates != 'none'):
            raise OptionError(
                '--multihash',
                "MultiHash routes each of its segments to one expert, ungated; it does not "
                "combine with --experts-per-token or --hash-gates",
                "pass --multihash 1, or --experts-per-token 1 --hash-gates none",
            )
        self.functions: List[HashFunction] = [
            make_hash_function(hash_type, num_experts, seed + m, experts_per_token)
            for m in range(self.num_hashes)
        ]
        self.register_buffer('table', table)
        self.gates = gates
        self.gate = LearnedHashGate(dim, num_experts) if gates == 'learned' else None
        # Routers built with the same type, seed and k hold the same table (shared
        # when built, equal after .cuda() copies each buffer): layers may share plans.
        self.table_key = (hash_type, num_experts, seed, self.num_hashes, experts_per_token)

    @staticmethod
    def build_tables(
        hash_type: str, num_experts: int, seed: int, inputs: TableInputs, num_hashes: int = 1,
        experts_per_token: int = 1,
    ) -> torch.Tensor:
        """``[N, ...]`` tables, hash m seeded with ``seed + m``."""
        functions = [make_hash_function(hash_type, num_experts, seed + m, experts_per_token)
                     for m in range(num_hashes)]
        return torch.stack([f.build_table(inputs).to(torch.long) for f in functions])

    @staticmethod
    def placeholder_tables(
        hash_type: str, num_experts: int, inputs: TableInputs, num_hashes: int = 1,
        experts_per_token: int = 1,
    ) -> torch.Tensor:
        """Zero tables of the right shape, for a checkpoint to fill on load."""
        shape = make_hash_function(hash_type, num_experts, 0, experts_per_token).table_shape(inputs)
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
        k = self.experts_per_token
        for m, f in enumerate(self.functions):
            if f.indexed_by == 'coefficients':
                parts.append(f'hash {m}: coefficients {self.table[m].tolist()}')
                continue
            ids = self.table[m].reshape(-1)  # top-k: token-major, k per token
            sizes = torch.bincount(ids, minlength=self.num_experts)
            text = f'hash {m}: {f.indexed_by}s per expert min {sizes.min().item()} max {sizes.max().item()}'
            if f.indexed_by == 'token' and token_counts is not None and token_counts.sum() > 0:
                load = torch.zeros(self.num_experts, dtype=torch.float64)
                load.index_add_(0, ids, token_counts.to(torch.float64).repeat_interleave(k))
                text += f', max expert share of dictionary counts {(load.max() / load.sum()).item():.3f}'
            parts.append(text)
        per_token = f' ({k} per token)' if k > 1 else ''
        return (f"{name}: {self.hash_type} hash into {self.num_experts} experts{per_token}; "
                + '; '.join(parts))

    def forward(self, ctx: RoutingContext, hidden: Optional[torch.Tensor] = None) -> Route:
        """Experts ``[B, T, k]`` (MultiHash: ``[B, T, N]``, segment m's at m); ``hidden``
        feeds learned gates only, never the choice of experts."""
        routes = [f.experts(self.table[m], ctx) for m, f in enumerate(self.functions)]
        if self.num_hashes > 1:
            experts = torch.stack(routes, dim=-1)
        else:
            experts = routes[0] if self.experts_per_token > 1 else routes[0].unsqueeze(-1)
        gates = None
        if self.gate is not None:
            gates = self.gate(hidden, experts)
        elif self.gates == 'uniform':
            gates = uniform_gates(experts, torch.float32 if hidden is None else hidden.dtype)
        return Route(experts=experts, gates=gates, plan_key=self.table_key)
