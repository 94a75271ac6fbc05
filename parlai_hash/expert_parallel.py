"""Expert parallelism: each of W ranks holds K/W experts of every sparse layer.

Tokens go to the rank that owns their expert and back with
``all_to_all_single`` (variable split sizes); the dense parameters stay
data-parallel. The plan (who sends how many tokens to whom, and how received
tokens regroup by local expert) depends only on the expert ids, so for hash
routing it is known from the token ids before the layer runs and one plan
serves every layer that shares the table; Switch must build it per layer, after
its router. Rank r owns experts ``[r·K/W, (r+1)·K/W)``; under MultiHash, those
copies of every segment, and each hash moves tokens with its own plan.

Checkpoints stay ordinary: ``gather_experts`` rebuilds the full ``[K, ...]``
tensors from the shards (a collective: every rank calls it), and
``shard_experts`` slices a full tensor for a rank, for any W that divides K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Union

import torch
import torch.distributed as dist

from parlai_hash.dispatch import DispatchPlan, ExpertFFN, MultiHashExpertFFN, combine_rows, grouped_linear
from parlai_hash.errors import OptionError
from parlai_hash.expert_sort import sort_by_expert

#: Either kind of expert module (a sparse layer's ``experts``).
Experts = Union[ExpertFFN, MultiHashExpertFFN]
#: ``(rows sorted by local expert, tokens per local expert) -> outputs``.
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
class ExpertParallelPlan:
    """One batch's routing across ranks, from the expert ids alone."""

    local: DispatchPlan  # this rank's rows sorted by global expert, dropped last
    send_splits: List[int]  # rows sent to each rank
    recv_splits: List[int]  # rows received from each rank
    regroup: torch.Tensor  # received rows (source-major) -> local-expert-major
    ungroup: torch.Tensor  # its inverse
    local_counts: List[int]  # tokens per local expert, from all ranks
    group: Optional[dist.ProcessGroup] = None

    @classmethod
    def build(
        cls,
        experts: torch.Tensor,
        num_experts: int,
        keep: Optional[torch.Tensor] = None,
        group: Optional[dist.ProcessGroup] = None,
        choices: int = 1,
    ) -> "ExpertParallelPlan":
        """``experts``, ``keep``: as for ``DispatchPlan.from_experts`` (``choices`` rows per token)."""
        world = dist.get_world_size(group)
        per_rank = experts_per_rank(num_experts, world)
        local = DispatchPlan.from_experts(experts, num_experts, keep=keep, choices=choices)
        # On the experts' device: NCCL exchanges only CUDA tensors.
        sent = torch.tensor(local.counts, dtype=torch.long, device=experts.device)
        # How many tokens each source rank sends to each of my local experts.
        received = torch.empty_like(sent)
        dist.all_to_all_single(received, sent, group=group)
        counts = torch.tensor(local.counts, dtype=torch.long).view(world, per_rank)
        received = received.cpu().view(world, per_rank)
        send_splits = counts.sum(1).tolist()
        recv_splits = received.sum(1).tolist()
        # Received rows arrive source by source, each sorted by expert:
        # regroup them so each local expert's rows (from every source) are contiguous.
        arrived_for = torch.arange(per_rank).repeat(world).repeat_interleave(received.flatten())
        regrouped = sort_by_expert(arrived_for, per_rank)
        regroup, ungroup = regrouped.order, regrouped.inverse
        return cls(
            local=local,
            send_splits=send_splits,
            recv_splits=recv_splits,
            regroup=regroup.to(experts.device),
            ungroup=ungroup.to(experts.device),
            local_counts=received.sum(0).tolist(),
            group=group,
        )


def expert_parallel_forward(
    x: torch.Tensor, plan: ExpertParallelPlan, compute: Union[ExpertFFN, GroupedFn],
    gates: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Experts over ranks: ``x [..., a]`` -> ``[..., b]`` (dropped rows 0).

    ``compute`` runs this rank's experts on the rows they received, sorted by
    local expert: an ``ExpertFFN`` (its whole FFN) or any grouped function,
    e.g. one MultiHash segment. With k choices per token, ``gates [..., k]``
    weight the k outputs that come back (see ``dispatch.combine_rows``).
    """
    if isinstance(compute, ExpertFFN):
        compute = compute.forward_sorted
    flat = x.reshape(-1, x.shape[-1])
    kept = sum(plan.send_splits)
    outgoing = flat.index_select(0, plan.local.sources[:kept])
    incoming = AllToAll.apply(outgoing, plan.recv_splits, plan.send_splits, plan.group)
    y = compute(incoming.index_select(0, plan.regroup), plan.local_counts)
    returned = AllToAll.apply(y.index_select(0, plan.ungroup), plan.send_splits, plan.recv_splits, plan.group)
    if plan.local.dropped:
        returned = torch.cat([returned, returned.new_zeros(plan.local.dropped, y.shape[-1])])
    return combine_rows(returned, plan.local, gates, x.shape[:-1])


def multihash_expert_parallel_forward(
    x: torch.Tensor, plans: List[ExpertParallelPlan], local_experts: MultiHashExpertFFN
) -> torch.Tensor:
    """MultiHash over ranks: hash m's segments travel with ``plans[m]``.

    Each segment is its own round trip: ``B_m`` reads the whole hidden vector,
    which exists only back on the token's rank once every ``A_m`` has run.
    """

    def segment(rows, weight, bias, m):
        def compute(received: torch.Tensor, counts: List[int]) -> torch.Tensor:
            return grouped_linear(received, weight, bias, counts, local_experts.gemm)

        return expert_parallel_forward(rows, plans[m], compute)

    return local_experts.forward_segments(x, segment)


def shard_experts(full: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s slice of a full ``[K, ...]`` expert tensor."""
    per_rank = experts_per_rank(full.shape[0], world_size)
    return full[rank * per_rank : (rank + 1) * per_rank].clone()


def gather_experts(local: torch.Tensor, group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """The full ``[K, ...]`` tensor from every rank's shard (a collective)."""
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def experts_like(template: Experts, num_experts: int) -> Experts:
    """A module like ``template`` (kind, sizes, activation, dropout, kernel,
    dtype, device) with ``num_experts`` experts; its weights are to be copied in."""
    sizes = (num_experts, template.dim, template.dim_hidden, template.relu_dropout.p)
    if isinstance(template, MultiHashExpertFFN):
        new = MultiHashExpertFFN(template.num_hashes, *sizes)
    else:
        new = ExpertFFN(*sizes)
    like = next(template.parameters())
    new = new.to(device=like.device, dtype=like.dtype)
    new.nonlinear, new.gemm = template.nonlinear, template.gemm
    return new


def local_expert_ffn(full: Experts, rank: int, world_size: int) -> Experts:
    """This rank's experts module holding its K/W experts of ``full``
    (MultiHash: K/W copies of every segment)."""
    local = experts_like(full, experts_per_rank(full.num_experts, world_size))
    whole = dict(full.named_parameters())
    with torch.no_grad():
        for name, param in local.named_parameters():
            param.copy_(shard_experts(whole[name], rank, world_size))
    return local
