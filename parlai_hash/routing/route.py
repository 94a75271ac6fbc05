"""What a router decides for one forward pass: the one type every router returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Hashable, Optional

import torch

from parlai_hash.expert_sort import sort_by_expert


@dataclass
class Route:
    """k expert choices per token and what learned routers add to them.

    Top-k routing: choice j of a token is one whole expert, weighted by its
    gate. MultiHash: choice m is the expert of segment m (N choices, no gates).
    """

    experts: torch.Tensor  # [B, T, k] expert ids
    gates: Optional[torch.Tensor] = None  # [B, T, k] weight of each choice's output; None: 1
    keep: Optional[torch.Tensor] = None  # [B, T, k] False: over capacity, not computed
    aux_loss: Optional[torch.Tensor] = None  # scalar added to the training loss
    #: Routes with the same key in one forward pass are the same routing (hash
    #: layers sharing a table), so they share dispatch plans. None: never shared.
    plan_key: Optional[Hashable] = None
    stats: Dict[str, float] = field(default_factory=dict)  # e.g. dropped share


def capacity_keep(experts: torch.Tensor, real: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Keep each expert's first ``capacity`` real rows, a bool tensor shaped like ``experts``.

    ``experts``: ``[B, T]``, or ``[B, T, k]`` for k choices per token; then
    every token's first choice comes before any second choice (each in token
    order), so a full expert drops second choices first. Padding is never kept
    (and never uses capacity).
    """
    top_k = experts.dim() > real.dim()
    by_choice = experts.movedim(-1, 0) if top_k else experts  # [k, B, T]: choice-major
    flat = by_choice.reshape(-1).masked_fill(~real.expand_as(by_choice).reshape(-1), num_experts)
    rank = sort_by_expert(flat, num_experts + 1).rank
    keep = ((rank < capacity) & (flat < num_experts)).reshape(by_choice.shape)
    return keep.movedim(0, -1) if top_k else keep
