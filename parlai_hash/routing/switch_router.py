"""Switch Transformer routing (Fedus et al., 2021) and its Token Switch variant."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from parlai_hash.routing.context import RoutingContext
from parlai_hash.routing.route import Route, capacity_keep


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """``K · Σ_i f_i · P_i`` over real tokens (``probs [N, K]``, ``experts [N]``).

    f_i: share of tokens whose top-1 is expert i (no gradient); P_i: mean router
    probability of expert i. 1.0 at perfect balance; K when all pick one expert.
    """
    f = torch.bincount(experts, minlength=num_experts).to(probs.dtype) / max(experts.numel(), 1)
    p = probs.mean(dim=0)
    return num_experts * torch.sum(f * p)


class SwitchRouter(nn.Module):
    """Top-1 learned router: logits (in float32) -> softmax -> argmax; gate = its probability.

    ``source='hidden'`` routes on the hidden state entering the FFN (Switch);
    ``source='token'`` routes on a separate learned embedding of the current
    token and ignores the hidden state (Token Switch, the paper's Table 6).
    """

    def __init__(
        self,
        dim: int,
        num_experts: int,
        vocab_size: int,
        source: str = 'hidden',
        capacity_factor: float = 1.25,
        eval_capacity_factor: float = 0.0,
        jitter: float = 0.0,
        load_balance_weight: float = 0.01,
        z_loss_weight: float = 0.0,
    ):
        super().__init__()
        self.num_experts = num_experts
        self.source = source
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.jitter = jitter
        self.load_balance_weight = load_balance_weight
        self.z_loss_weight = z_loss_weight
        self.token_embedding = nn.Embedding(vocab_size, dim) if source == 'token' else None
        if self.token_embedding is not None:
            nn.init.normal_(self.token_embedding.weight, 0, dim**-0.5)
        self.router_weight = nn.Parameter(torch.empty(num_experts, dim))
        # small init keeps early routing near uniform (as in Switch)
        nn.init.normal_(self.router_weight, 0, math.sqrt(0.1 / dim))

    def router_input(self, ctx: RoutingContext, hidden: torch.Tensor) -> torch.Tensor:
        if self.token_embedding is not None:
            return self.token_embedding(ctx.tokens)
        return hidden

    def forward(self, ctx: RoutingContext, hidden: torch.Tensor) -> Route:
        inp = self.router_input(ctx, hidden).float()
        if self.training and self.jitter > 0:
            inp = inp * torch.empty_like(inp).uniform_(1 - self.jitter, 1 + self.jitter)
        logits = F.linear(inp, self.router_weight.float())  # float32 routing, whatever the model dtype
        probs = logits.softmax(dim=-1)
        gate, experts = probs.max(dim=-1)
        real = ctx.mask
        stats = {}
        # Computed in eval too, so valid reports show it; it only trains in training.
        aux = self.load_balance_weight * load_balancing_loss(
            probs[real], experts[real], self.num_experts
        )
        if self.z_loss_weight > 0:
            aux = aux + self.z_loss_weight * torch.logsumexp(logits[real], -1).pow(2).mean()
        factor = self.capacity_factor if self.training else self.eval_capacity_factor
        keep = None
        if factor > 0:
            capacity = max(1, math.ceil(factor * int(real.sum()) / self.num_experts))
            keep = capacity_keep(experts, real, self.num_experts, capacity)
            n_real = max(int(real.sum()), 1)
            stats['dropped'] = float((real & ~keep).sum()) / n_real
        return Route(experts=experts, gates=gate.to(hidden.dtype), keep=keep, aux_loss=aux, stats=stats)
