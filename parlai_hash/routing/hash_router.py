"""HashRouter: the module that holds a hash function's table as a buffer."""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn as nn

from parlai_hash.errors import OptionError
from parlai_hash.routing.context import RoutingContext
from parlai_hash.routing.hash_functions import HASH_TYPES, HashFunction

logger = logging.getLogger(__name__)


def make_hash_function(hash_type: str, num_experts: int, seed: int) -> HashFunction:
    if hash_type not in HASH_TYPES:
        raise OptionError(
            '--hash-type',
            f"unknown hash type {hash_type!r}",
            f"choose one of {', '.join(sorted(HASH_TYPES))}",
        )
    return HASH_TYPES[hash_type](num_experts, seed)


class HashRouter(nn.Module):
    """Routes each token by a fixed hash; the table is a buffer in the checkpoint.

    Because the table is saved, a reloaded model routes identically on any
    device, whatever the dictionary counts are at load time.
    """

    def __init__(
        self,
        hash_type: str,
        num_experts: int,
        vocab_size: int,
        seed: int,
        token_counts: Optional[torch.Tensor] = None,
        name: str = 'hash',
    ):
        super().__init__()
        self.hash_type = hash_type
        self.num_experts = num_experts
        self.function = make_hash_function(hash_type, num_experts, seed)
        table = self.function.build_table(vocab_size, token_counts)
        self.register_buffer('table', table.to(torch.long))
        self._log_table(name, token_counts)

    def _log_table(self, name: str, token_counts: Optional[torch.Tensor]) -> None:
        sizes = torch.bincount(self.table, minlength=self.num_experts)
        msg = (
            f"{name}: {self.hash_type} hash over {self.table.numel()} tokens into "
            f"{self.num_experts} experts; tokens per expert min {sizes.min().item()} "
            f"max {sizes.max().item()}"
        )
        if token_counts is not None and token_counts.sum() > 0:
            load = torch.zeros(self.num_experts, dtype=torch.float64)
            load.index_add_(0, self.table, token_counts.to(torch.float64))
            share = load / load.sum()
            msg += f"; max expert share of dictionary counts {share.max().item():.3f}"
        logger.info(msg)

    @property
    def generatable(self) -> bool:
        return self.function.generatable

    def forward(self, ctx: RoutingContext, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, T]`` expert ids; hash routing never looks at ``hidden``."""
        return self.function.experts(self.table, ctx)
