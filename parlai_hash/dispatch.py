"""Dispatch: which rows go to which expert, and their outputs back to the tokens.

One fast path for every router: a token's k routed rows (k = 1 but for top-k
routing) are sorted by expert (``DispatchPlan``) so that each expert runs a
single GEMM on a contiguous slice; ``combine_rows`` un-permutes the outputs
and sums each token's k of them, weighted by their gates.
Routing (which expert a token goes to) lives in ``parlai_hash.routing``; the
experts that run on the sorted rows in ``parlai_hash.experts``, and their GEMM
kernels (per-expert loop, torch's grouped GEMM on CUDA) in
``parlai_hash.grouped_gemm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from parlai_hash.expert_sort import sort_by_expert


@dataclass
class DispatchPlan:
    """Where each routed row goes: the sort order, its inverse and per-expert counts.

    A row is one (token, choice) pair: ``choices`` rows per token, token-major
    (top-k routing has k choices; one expert per token is 1). Built once from
    the expert ids; it depends only on routing, so a layer (or several layers
    with the same routing) can reuse it. Rows not kept (padding, rows over an
    expert's capacity) sort after every expert and are not computed: their
    output is 0, so the residual passes them on.
    """

    order: torch.Tensor  # [N·k] row indices sorted by expert, dropped rows last
    inverse: torch.Tensor  # [N·k] position of each row in the sorted order
    counts: List[int]  # rows per expert, length K
    dropped: int = 0  # rows at the end of ``order`` that no expert computes
    choices: int = 1  # rows per token (k)
    #: [N·k] the token each sorted row reads (``order`` itself when k = 1)
    sources: Optional[torch.Tensor] = None
    #: What users of the plan derive from it, computed once per plan: layers
    #: sharing a plan share it too (expert parallelism keeps its exchange of
    #: counts between workers here).
    derived: Dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.sources is None:
            self.sources = (self.order if self.choices == 1
                            else torch.div(self.order, self.choices, rounding_mode='floor'))

    @classmethod
    def from_experts(
        cls,
        experts: torch.Tensor,
        num_experts: int,
        keep: Optional[torch.Tensor] = None,
        choices: int = 1,
    ) -> "DispatchPlan":
        """``experts``: expert id of every row, token-major (``[..., k]`` or flat);
        ``keep``: the same shape, False for rows no expert computes."""
        experts = experts.reshape(-1)
        if keep is not None:
            experts = experts.masked_fill(~keep.reshape(-1), num_experts)
        groups = sort_by_expert(experts, num_experts + 1)  # id K: dropped, sorted last
        counts = groups.counts.tolist()
        return cls(
            order=groups.order,
            inverse=groups.inverse,
            counts=counts[:num_experts],
            dropped=counts[num_experts],
            choices=choices,
        )


def combine_rows(rows: torch.Tensor, plan: DispatchPlan, gates: Optional[torch.Tensor],
                 lead_shape: torch.Size) -> torch.Tensor:
    """Expert outputs of the sorted rows (dropped rows 0) back to their tokens: ``[*lead_shape, b]``.

    ``gates`` (``[*lead_shape, k]`` or None) scale each choice; with k choices a
    token's output is the gate-weighted sum of its k rows. The sum runs over a
    gathered ``[N, k, b]`` view rather than an atomic scatter-add, so it is the
    same in every run; a dropped row adds 0 and gives its gate no gradient.
    """
    y = rows.index_select(0, plan.inverse)
    if plan.choices == 1:
        y = y.reshape(*lead_shape, rows.shape[-1])
        return y if gates is None else y * gates
    y = y.view(-1, plan.choices, rows.shape[-1])
    if gates is not None:
        y = y * gates.reshape(-1, plan.choices, 1)
    return y.sum(1).reshape(*lead_shape, rows.shape[-1])
