"""``--hash-gates``: how much of each table-chosen expert a token uses.

The hash table alone decides which k experts run; a gate only weights their
outputs. ``none`` (the paper, k = 1): the expert's output as is. ``uniform``:
1/k each. ``learned``: ``LearnedHashGate``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from parlai_hash.errors import OptionError

HASH_GATES = ('none', 'uniform', 'learned')


def check_hash_gates(gates: str, experts_per_token: int) -> None:
    """Refuse gate modes that do not fit k experts per token."""
    if gates not in HASH_GATES:
        raise OptionError('--hash-gates', f"unknown mode {gates!r}", f"choose one of {', '.join(HASH_GATES)}")
    k = experts_per_token
    if gates == 'none' and k > 1:
        raise OptionError(
            '--hash-gates',
            f"none would add up the outputs of --experts-per-token {k} experts unweighted",
            "pass --hash-gates uniform or learned, or --experts-per-token 1",
        )
    if gates == 'learned' and k == 1:
        raise OptionError(
            '--hash-gates',
            "learned gates are normalised over a token's experts, so with --experts-per-token 1 "
            "the gate is always 1 and learns nothing",
            "pass --experts-per-token 2 or more, or --hash-gates none",
        )


def uniform_gates(experts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T, k]`` of 1/k."""
    return torch.full(experts.shape, 1.0 / experts.shape[-1], dtype=dtype, device=experts.device)


class LearnedHashGate(nn.Module):
    """Gates from a learned scorer: ``s = W·h`` over all K experts (no bias), read
    at the token's k table ids, then ``sqrt(softplus(s))`` normalised to sum to 1
    over the k (DeepSeek-V4's hash layers).

    softplus keeps every weight positive without softmax's exponential
    competition, and the square root flattens large scores further, so a gate
    moves the mix between the k experts slowly rather than picking one.
    """

    #: floor before the root: sqrt's gradient at 0 is infinite
    min_weight = 1e-12

    def __init__(self, dim: int, num_experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, dim))
        # small, like the Switch router: the first gates are about 1/k each
        nn.init.normal_(self.weight, 0, math.sqrt(0.1 / dim))

    def forward(self, hidden: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """``[B, T, k]`` gates (in ``hidden``'s dtype; computed in float32) for ``experts [B, T, k]``."""
        scores = F.linear(hidden.float(), self.weight.float())
        weights = F.softplus(scores.gather(-1, experts)).clamp_min(self.min_weight).sqrt()
        return (weights / weights.sum(dim=-1, keepdim=True)).to(hidden.dtype)
