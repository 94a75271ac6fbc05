"""The experts: K feed-forward networks with stacked weights, run on rows sorted by expert.

``ExpertFFN`` (K full FFNs, ``[K, d, D]`` and ``[K, D, d]``) and
``MultiHashExpertFFN`` (K copies of each of N segments) are called with the
dispatch plan a sparse layer built (``parlai_hash.dispatch``):
``experts(x, plan, gates)``, or ``experts(x, plans)`` with one plan per hash.
Their semantics are ParlAI's ``TransformerFFN`` (lin1, activation,
``--relu-dropout``, lin2). Under ``--expert-parallel`` a sharded module with the
same call takes their place (``parlai_hash.parallel``).
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from parlai_hash.dispatch import DispatchPlan, combine_rows
from parlai_hash.grouped_gemm import GEMM_BACKENDS, grouped_linear

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    'relu': F.relu,
    'gelu': F.gelu,
}


def init_expert_weights(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                        dim: int, dim_hidden: int) -> None:
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


#: Either kind of expert module (a sparse layer's ``experts``).
Experts = Union[ExpertFFN, MultiHashExpertFFN]
