"""Balanced linear assignment of tokens to experts (BASE layers' training routing).

``balanced_assignment(scores)`` gives every expert the same number of tokens
(T/K; when K does not divide T the first T mod K experts take one more) and
maximises the total token-expert affinity, up to ``eps`` per token. It is the
auction algorithm for "similar objects" (Bertsekas & Castañon, 1989): each
expert is ``capacity`` identical slots whose price is what its weakest holder
paid. Every round, all unassigned tokens bid at once (vectorised): each bids
for its best expert net of price, raising that price by the margin over its
second-best plus ``eps``; each expert keeps its highest bidders up to capacity.
"""

from __future__ import annotations

import torch

from parlai_hash.expert_sort import sort_by_expert


def expert_capacities(num_tokens: int, num_experts: int, device=None) -> torch.Tensor:
    caps = torch.full((num_experts,), num_tokens // num_experts, dtype=torch.long, device=device)
    caps[: num_tokens % num_experts] += 1
    return caps


@torch.no_grad()
def balanced_assignment(
    scores: torch.Tensor, eps: float = 1e-2, max_rounds: int = 100_000
) -> torch.Tensor:
    """``[T]`` expert of each token for ``scores [T, K]``; each expert gets T/K (±1).

    ``eps`` is relative to the score range: the result's total score is within
    ``T · eps · range`` of the optimum.
    """
    scores = scores.detach().to(torch.float64)
    num_tokens, num_experts = scores.shape
    device = scores.device
    if num_experts == 1 or num_tokens == 0:
        return torch.zeros(num_tokens, dtype=torch.long, device=device)
    span = (scores.max() - scores.min()).clamp_min(1e-12)
    step = eps * span
    capacity = expert_capacities(num_tokens, num_experts, device)
    owner = torch.full((num_tokens,), -1, dtype=torch.long, device=device)
    paid = torch.zeros(num_tokens, dtype=torch.float64, device=device)
    price = torch.zeros(num_experts, dtype=torch.float64, device=device)
    for _ in range(max_rounds):
        free = (owner < 0).nonzero().squeeze(1)
        if free.numel() == 0:
            return owner
        value = scores[free] - price
        top = value.topk(2, dim=1)
        best = top.indices[:, 0]
        bid = price[best] + (top.values[:, 0] - top.values[:, 1]) + step
        owner[free] = best
        paid[free] = bid
        # Each expert keeps its highest-paying tokens, up to capacity.
        held = (owner >= 0).nonzero().squeeze(1)
        # highest payers first, so each token's rank within its expert orders by what it paid
        held = held[torch.argsort(-paid[held], stable=True)]
        experts = owner[held]
        groups = sort_by_expert(experts, num_experts)
        counts, rank = groups.counts, groups.rank
        evicted = held[rank >= capacity[experts]]
        owner[evicted] = -1
        # A full expert's price is what its weakest kept token paid.
        kept = rank < capacity[experts]
        full = counts >= capacity
        weakest = torch.full((num_experts,), float('inf'), dtype=torch.float64, device=device)
        weakest.scatter_reduce_(0, experts[kept], paid[held[kept]], reduce='amin')
        price = torch.where(full, weakest, price)
    raise RuntimeError(f"balanced_assignment did not converge in {max_rounds} rounds")
