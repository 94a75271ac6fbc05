"""What a learned router decides for one forward pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch


@dataclass
class Route:
    """Expert choice per token, plus what learned routers add to it.

    Hash routers return a bare ``[B, T]`` tensor of expert ids; ``SparseFFN``
    treats that as ``Route(experts)``.
    """

    experts: torch.Tensor  # [B, T] (or [B, T, N] for MultiHash)
    gates: Optional[torch.Tensor] = None  # [B, T] scale of the expert output
    keep: Optional[torch.Tensor] = None  # [B, T] False: over capacity, FFN skipped
    aux_loss: Optional[torch.Tensor] = None  # scalar added to the training loss
    stats: Dict[str, float] = field(default_factory=dict)  # e.g. dropped share


def capacity_keep(experts: torch.Tensor, real: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Keep each expert's first ``capacity`` real tokens, in token order.

    ``[B, T]`` bool; padding is never kept (and never uses capacity).
    """
    flat = experts.reshape(-1).masked_fill(~real.reshape(-1), num_experts)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_experts + 1)
    starts = torch.cumsum(counts, 0) - counts
    sorted_experts = flat[order]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device) - starts[sorted_experts]
    keep = (rank < capacity) & (flat < num_experts)
    return keep.reshape(experts.shape)
