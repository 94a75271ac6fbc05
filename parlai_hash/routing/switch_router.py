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
    """``K · Σ_i f_i · P_i`` over real tokens (``probs [N, K]``, ``experts [N]`` or ``[N, k]``).

    f_i: share of the routed rows (all k choices of every token) that go to
    expert i (no gradient); P_i: mean router probability of expert i. 1.0 at
    perfect balance; K when all pick one expert.
    """
    f = torch.bincount(experts.reshape(-1), minlength=num_experts).to(probs.dtype) / max(experts.numel(), 1)
    p = probs.mean(dim=0)
    return num_experts * torch.sum(f * p)


#: How Token Switch turns the current token into router logits.
TOKEN_TABLES = ('logits', 'embedding')


class SwitchRouter(nn.Module):
    """Learned router: logits (in float32) -> softmax -> top-k experts per token.

    k = 1 (Switch): the argmax, gated by its probability. k > 1: the k most
    probable experts, gated by their probabilities renormalised to sum to 1
    over the k; the balancing loss counts all k choices, and under a capacity
    every token's first choice is served before any second choice.

    ``source='hidden'`` routes on the hidden state entering the FFN (Switch):
    logits = W·h + b, the bias as in the paper's appendix B count (Switch 1x64
    has 65,600 = 64·1024 + 64 parameters more than Hash 1x64).
    ``source='token'`` routes on the current token alone (Token Switch, the
    paper's Table 6), through "an extra lookup table ... the size of the
    dictionary": ``token_table='logits'`` reads the K logits from a learned
    ``[V, K]`` table (the reading that keeps Token Switch at Switch's printed
    751M / 1.28B); ``'embedding'`` is the earlier form, a learned ``[V, d]``
    token embedding fed to W·e + b (8.2M more parameters at d=1024).
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
        load_balance_weight: float = 0.1,
        z_loss_weight: float = 0.0,
        bias: bool = True,
        token_table: str = 'logits',
        experts_per_token: int = 1,
    ):
        super().__init__()
        self.num_experts = num_experts
        self.experts_per_token = experts_per_token
        self.source = source
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.jitter = jitter
        self.load_balance_weight = load_balance_weight
        self.z_loss_weight = z_loss_weight
        # small init keeps early routing near uniform (as in Switch)
        std = math.sqrt(0.1 / dim)
        # Token Switch's logits table replaces the router matrix; the other forms use W (and b).
        self.token_logits = self.token_embedding = self.router_weight = self.router_bias = None
        if source == 'token' and token_table == 'logits':
            self.token_logits = nn.Embedding(vocab_size, num_experts)
            nn.init.normal_(self.token_logits.weight, 0, std)
        else:
            if source == 'token':
                self.token_embedding = nn.Embedding(vocab_size, dim)
                nn.init.normal_(self.token_embedding.weight, 0, dim**-0.5)
            self.router_weight = nn.Parameter(torch.empty(num_experts, dim))
            nn.init.normal_(self.router_weight, 0, std)
            if bias:
                self.router_bias = nn.Parameter(torch.zeros(num_experts))

    def router_input(self, ctx: RoutingContext, hidden: torch.Tensor) -> torch.Tensor:
        if self.token_embedding is not None:
            return self.token_embedding(ctx.tokens)
        return hidden

    def router_logits(self, ctx: RoutingContext, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, T, K]`` logits in float32, whatever the model's dtype."""
        if self.token_logits is not None:
            return self.token_logits(ctx.tokens).float()
        inp = self.router_input(ctx, hidden).float()
        if self.training and self.jitter > 0:
            inp = inp * torch.empty_like(inp).uniform_(1 - self.jitter, 1 + self.jitter)
        bias = None if self.router_bias is None else self.router_bias.float()
        return F.linear(inp, self.router_weight.float(), bias)

    def forward(self, ctx: RoutingContext, hidden: torch.Tensor) -> Route:
        logits = self.router_logits(ctx, hidden)
        probs = logits.softmax(dim=-1)
        k = self.experts_per_token
        if k == 1:
            gate, experts = probs.max(dim=-1)
            gate, experts = gate.unsqueeze(-1), experts.unsqueeze(-1)
        else:
            top, experts = probs.topk(k, dim=-1)
            gate = top / top.sum(dim=-1, keepdim=True)
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
            rows = int(real.sum()) * k
            capacity = max(1, math.ceil(factor * rows / self.num_experts))
            keep = capacity_keep(experts, real, self.num_experts, capacity)
            stats['dropped'] = float((real.unsqueeze(-1) & ~keep).sum()) / max(rows, 1)
        return Route(experts=experts, gates=gate.to(hidden.dtype), keep=keep, aux_loss=aux, stats=stats)
