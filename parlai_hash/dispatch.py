"""Dispatch: move tokens to stacked expert weights and back.

One fast path for every router: a token's k routed rows (k = 1 but for top-k
routing) are sorted by expert so that each expert runs a single GEMM on a
contiguous slice, then the outputs are un-permuted and each token's k outputs
summed, weighted by their gates.
Routing (which expert a token goes to) lives in ``parlai_hash.routing``; the
GEMM kernels over sorted rows (per-expert loop, torch's grouped GEMM on CUDA)
in ``parlai_hash.grouped_gemm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from parlai_hash.expert_sort import sort_by_expert
from parlai_hash.grouped_gemm import GEMM_BACKENDS, grouped_linear


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


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    'relu': F.relu,
    'gelu': F.gelu,
}


def init_expert_weights(w1, b1, w2, b2, dim: int, dim_hidden: int) -> None:
    """Per expert, what TransformerFFN does: xavier weights (fans of the full
    ``d x D`` matrices, also for MultiHash segments) and nn.Linear's biases."""
    with torch.no_grad():
        bound = math.sqrt(6.0 / (dim + dim_hidden))
        w1.uniform_(-bound, bound)
        w2.uniform_(-bound, bound)
        b1.uniform_(-1 / math.sqrt(dim), 1 / math.sqrt(dim))
        b2.uniform_(-1 / math.sqrt(dim_hidden), 1 / math.sqrt(dim_hidden))


def activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(
            f"--activation {name!r} is not supported by expert layers; "
            f"use one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


class _ExpertsBase(nn.Module):
    """Sizes, activation and ``--relu-dropout``, as in ParlAI's TransformerFFN."""

    def __init__(self, num_experts: int, dim: int, dim_hidden: int, relu_dropout: float,
                 activation: str):
        super().__init__()
        self.num_experts = num_experts
        self.dim = dim
        self.dim_hidden = dim_hidden
        self.activation = activation
        self.nonlinear = activation_function(activation)
        self.relu_dropout = nn.Dropout(p=relu_dropout)
        #: GEMM kernel over sorted rows (``--expert-gemm``); not saved, a run-time choice.
        self.gemm = 'auto'

    def set_gemm(self, backend: str) -> None:
        if backend not in GEMM_BACKENDS:
            raise ValueError(f"--expert-gemm {backend!r}: use one of {', '.join(GEMM_BACKENDS)}")
        self.gemm = backend


class ExpertFFN(_ExpertsBase):
    """K feed-forward experts with stacked weights ``[K, d, D]`` and ``[K, D, d]``.

    Same semantics as ParlAI's ``TransformerFFN`` (lin1, activation,
    ``--relu-dropout``, lin2), so with ``K=1`` it is that dense layer.
    """

    def __init__(
        self,
        num_experts: int,
        dim: int,
        dim_hidden: int,
        relu_dropout: float = 0.0,
        activation: str = 'relu',
    ):
        super().__init__(num_experts, dim, dim_hidden, relu_dropout, activation)
        self.expert_w1 = nn.Parameter(torch.empty(num_experts, dim, dim_hidden))
        self.expert_b1 = nn.Parameter(torch.empty(num_experts, dim_hidden))
        self.expert_w2 = nn.Parameter(torch.empty(num_experts, dim_hidden, dim))
        self.expert_b2 = nn.Parameter(torch.empty(num_experts, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_expert_weights(self.expert_w1, self.expert_b1, self.expert_w2, self.expert_b2,
                             self.dim, self.dim_hidden)

    def forward_sorted(self, x_sorted: torch.Tensor, counts: List[int]) -> torch.Tensor:
        """Run the experts on rows already sorted by expert."""
        h = grouped_linear(x_sorted, self.expert_w1, self.expert_b1, counts, self.gemm)
        h = self.relu_dropout(self.nonlinear(h))
        return grouped_linear(h, self.expert_w2, self.expert_b2, counts, self.gemm)

    def forward(self, x: torch.Tensor, plan: DispatchPlan,
                gates: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x``: ``[..., d]``; ``plan`` routes its ``N = x.numel() // d`` tokens'
        ``N·k`` rows; ``gates`` (``[..., k]``) weight each token's k outputs.

        Rows the plan drops get output 0 (and no gradient through the experts).
        """
        flat = x.reshape(-1, self.dim)
        y = self.forward_sorted(flat.index_select(0, plan.sources), plan.counts)
        return combine_rows(y, plan, gates, x.shape[:-1])


#: ``(rows [N, a], weight [K, a, b], bias [K, b], hash m) -> [N, b]``, one MultiHash segment.
SegmentFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


class MultiHashExpertFFN(_ExpertsBase):
    """MultiHash (paper, section 3.2): N hashes, each picking one of K copies of a segment.

    The first matrix is split by columns into N segments ``A_m: d -> D/N``; the
    second into N segments ``B_m: D -> d/N``. Hash m picks which of the K copies
    of segment m a token uses; the N hidden parts are concatenated (``D``) and
    every ``B_m`` reads that whole hidden vector, so the N outputs (``d/N`` each)
    concatenate to ``d``. Reading ``B_m`` as ``D -> d/N`` (not ``D/N -> d/N``)
    is what keeps the parameters equal to K full experts, as the paper states:
    ``K·(d·D + D·d)`` weights and ``K·(D + d)`` biases. Each segment's copies
    are one stacked parameter, e.g. ``expert_w1.0: [K, d, D/N]``.
    """

    def __init__(
        self,
        num_hashes: int,
        num_experts: int,
        dim: int,
        dim_hidden: int,
        relu_dropout: float = 0.0,
        activation: str = 'relu',
    ):
        super().__init__(num_experts, dim, dim_hidden, relu_dropout, activation)
        self.num_hashes = num_hashes
        n, k, h, o = num_hashes, num_experts, dim_hidden // num_hashes, dim // num_hashes
        self.expert_w1 = nn.ParameterList(nn.Parameter(torch.empty(k, dim, h)) for _ in range(n))
        self.expert_b1 = nn.ParameterList(nn.Parameter(torch.empty(k, h)) for _ in range(n))
        self.expert_w2 = nn.ParameterList(nn.Parameter(torch.empty(k, dim_hidden, o)) for _ in range(n))
        self.expert_b2 = nn.ParameterList(nn.Parameter(torch.empty(k, o)) for _ in range(n))
        for m in range(n):
            init_expert_weights(self.expert_w1[m], self.expert_b1[m], self.expert_w2[m],
                                 self.expert_b2[m], dim, dim_hidden)

    def forward(self, x: torch.Tensor, plans: List[DispatchPlan]) -> torch.Tensor:
        """``x``: ``[..., d]``; ``plans[m]`` routes the rows for hash m."""

        def segment(rows, weight, bias, m):
            plan = plans[m]
            out = grouped_linear(rows.index_select(0, plan.order), weight, bias, plan.counts, self.gemm)
            return out.index_select(0, plan.inverse)

        return self.forward_segments(x, segment)

    def forward_segments(self, x: torch.Tensor, segment: SegmentFn) -> torch.Tensor:
        """The MultiHash FFN around ``segment(rows, weight, bias, m)``, which applies
        hash m's copies of one segment to every row: here (``forward``) or, under
        expert parallelism, on the ranks that own them."""
        shape = x.shape
        flat = x.reshape(-1, self.dim)
        n = self.num_hashes
        h = torch.cat([segment(flat, self.expert_w1[m], self.expert_b1[m], m) for m in range(n)], -1)
        h = self.relu_dropout(self.nonlinear(h))
        y = torch.cat([segment(h, self.expert_w2[m], self.expert_b2[m], m) for m in range(n)], -1)
        return y.reshape(shape)
