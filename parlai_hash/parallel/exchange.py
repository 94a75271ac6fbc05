"""Rows of a dispatch plan to the workers that own their experts, and back.

A ``DispatchPlan`` sorts rows by global expert id. Rank r owns the contiguous
block of experts ``[r·K/W, (r+1)·K/W)``, so rows sorted by expert are already
grouped by destination rank: the send splits are sums of the plan's counts.
One exchange of counts tells each rank what it receives. Both depend only on
the expert ids, so the exchange is computed once per plan and kept on it:
layers sharing a plan (hash layers sharing a table) exchange counts once per
forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
import torch.distributed as dist

from parlai_hash.dispatch import DispatchPlan
from parlai_hash.errors import OptionError
from parlai_hash.expert_sort import sort_by_expert

#: ``(rows sorted by local expert, rows per local expert) -> outputs``.
GroupedFn = Callable[[torch.Tensor, List[int]], torch.Tensor]


class AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with autograd: the backward is the reverse exchange."""

    @staticmethod
    def forward(ctx, x, recv_splits, send_splits, group):  # type: ignore[override]
        ctx.recv_splits, ctx.send_splits, ctx.group = recv_splits, send_splits, group
        out = x.new_empty((sum(recv_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), recv_splits, send_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        back = grad.new_empty((sum(ctx.send_splits), *grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), ctx.send_splits, ctx.recv_splits, group=ctx.group)
        return back, None, None, None


def experts_per_rank(num_experts: int, world_size: int) -> int:
    if num_experts % world_size:
        raise OptionError(
            '--num-experts',
            f"{num_experts} experts cannot be split evenly over {world_size} workers",
            "use a number of experts divisible by --distributed-world-size",
        )
    return num_experts // world_size


@dataclass
class Exchange:
    """Who sends how many of a plan's rows to whom, and how received rows regroup."""

    send_splits: List[int]  # rows sent to each rank
    recv_splits: List[int]  # rows received from each rank
    regroup: torch.Tensor  # received rows (source-major) -> local-expert-major
    ungroup: torch.Tensor  # its inverse
    local_counts: List[int]  # rows per local expert, from all ranks
    group: Optional[dist.ProcessGroup] = None

    @classmethod
    def of(cls, plan: DispatchPlan, group: Optional[dist.ProcessGroup], device: torch.device) -> "Exchange":
        """The plan's exchange on ``group``: built (one count exchange, every rank
        takes part) the first time it is asked for, then read from the plan."""
        key = ('exchange', group)
        if key not in plan.derived:
            plan.derived[key] = cls.build(plan, group, device)
        return plan.derived[key]

    @classmethod
    def build(cls, plan: DispatchPlan, group: Optional[dist.ProcessGroup], device: torch.device) -> "Exchange":
        world = dist.get_world_size(group)
        per_rank = experts_per_rank(len(plan.counts), world)
        counts = torch.tensor(plan.counts, dtype=torch.long).view(world, per_rank)
        # On the tokens' device: NCCL exchanges only CUDA tensors.
        received = torch.empty(len(plan.counts), dtype=torch.long, device=device)
        dist.all_to_all_single(received, counts.flatten().to(device), group=group)
        received = received.cpu().view(world, per_rank)  # from each source, for each local expert
        # Received rows arrive source by source, each sorted by expert:
        # regroup them so each local expert's rows (from every source) are contiguous.
        arrived_for = torch.arange(per_rank).repeat(world).repeat_interleave(received.flatten())
        regrouped = sort_by_expert(arrived_for, per_rank)
        return cls(
            send_splits=counts.sum(1).tolist(),
            recv_splits=received.sum(1).tolist(),
            regroup=regrouped.order.to(device),
            ungroup=regrouped.inverse.to(device),
            local_counts=received.sum(0).tolist(),
            group=group,
        )

    def run(self, tokens: torch.Tensor, plan: DispatchPlan, compute: GroupedFn) -> torch.Tensor:
        """``compute`` on every kept row of ``plan`` by the rank owning its expert.

        ``tokens``: ``[N, a]``; returns ``[N·k, b]`` in the plan's sorted order,
        dropped rows 0, ready for ``dispatch.combine_rows``.
        """
        outgoing = tokens.index_select(0, plan.sources[: sum(self.send_splits)])
        incoming = AllToAll.apply(outgoing, self.recv_splits, self.send_splits, self.group)
        y = compute(incoming.index_select(0, self.regroup), self.local_counts)
        rows = AllToAll.apply(y.index_select(0, self.ungroup), self.send_splits, self.recv_splits, self.group)
        if plan.dropped:
            rows = torch.cat([rows, rows.new_zeros(plan.dropped, y.shape[-1])])
        return rows
