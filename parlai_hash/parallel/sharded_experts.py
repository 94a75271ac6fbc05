"""Sharded expert modules: called like ``ExpertFFN`` / ``MultiHashExpertFFN``.

``ShardedExpertFFN(full, rank, world, group)`` holds rank ``rank``'s block of
``full``'s experts under the same parameter names (``expert_w1`` ...,
``[K/W, ...]``), so a sparse layer calls ``experts(x, plan, gates)`` (MultiHash:
``experts(x, plans)``) without knowing where its experts live. In training
mode the plan's rows travel to the ranks owning their experts
(``parallel.exchange``). In eval mode the module runs a copy of all K experts
gathered beforehand (``gather_for_eval``, a collective every rank calls around
evaluation), so evaluation needs no collective and ranks may run different
numbers of batches or decoding steps.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from parlai_hash.dispatch import DispatchPlan, combine_rows
from parlai_hash.experts import ExpertFFN, Experts, MultiHashExpertFFN
from parlai_hash.grouped_gemm import grouped_linear
from parlai_hash.parallel.exchange import Exchange, experts_per_rank


def expert_block(full: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s block of a full ``[K, ...]`` expert tensor (a copy)."""
    per_rank = experts_per_rank(full.shape[0], world_size)
    return full[rank * per_rank : (rank + 1) * per_rank].clone()


def gather_blocks(local: torch.Tensor, group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """The full ``[K, ...]`` tensor from every rank's block (a collective)."""
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def _empty_like(full: Experts, num_experts: int) -> Experts:
    """A local module of ``full``'s kind and sizes with ``num_experts`` experts."""
    sizes = (num_experts, full.dim, full.dim_hidden, full.relu_dropout.p, full.activation)
    if isinstance(full, MultiHashExpertFFN):
        return MultiHashExpertFFN(full.num_hashes, *sizes)
    return ExpertFFN(*sizes)


class ShardedExperts:
    """What both sharded kinds add to the local module they extend.

    ``num_experts`` stays the layer's K (plans route over all of them); the
    parameters hold ``local_experts`` = K/W of them, from expert ``rank·K/W``.
    """

    num_experts: int
    training: bool

    def _take_block(self, full: Experts, rank: int, world: int, group: Optional[dist.ProcessGroup]) -> None:
        like = next(full.parameters())
        self.to(device=like.device, dtype=like.dtype)  # type: ignore[attr-defined]
        whole = dict(full.named_parameters())
        with torch.no_grad():
            for name, param in self.named_parameters():  # type: ignore[attr-defined]
                param.copy_(expert_block(whole[name], rank, world))
                param.requires_grad_(whole[name].requires_grad)  # keeps --freeze experts
        self.set_gemm(full.gemm)  # type: ignore[attr-defined]
        self.local_experts = self.num_experts
        self.num_experts = full.num_experts
        self.rank, self.world, self.group = rank, world, group
        # Not a submodule: the gathered copy is not saved, trained or seen by DDP.
        self.__dict__['_gathered'] = None

    def gathered_parameters(self) -> Dict[str, torch.Tensor]:
        """Parameter name -> all K experts, from every rank (a collective)."""
        return {name: gather_blocks(param.detach(), self.group)
                for name, param in self.named_parameters()}  # type: ignore[attr-defined]

    def gather_for_eval(self) -> None:
        """Gather all K experts for evaluation (a collective: every rank calls it)."""
        full = _empty_like(self, self.num_experts)  # type: ignore[arg-type]
        like = next(self.parameters())  # type: ignore[attr-defined]
        full.to(device=like.device, dtype=like.dtype)
        with torch.no_grad():
            for name, value in self.gathered_parameters().items():
                full.get_parameter(name).copy_(value)
        full.requires_grad_(False)
        full.set_gemm(self.gemm)  # type: ignore[attr-defined]
        self.__dict__['_gathered'] = full.eval()

    def release_eval(self) -> None:
        self.__dict__['_gathered'] = None

    def _evaluating(self) -> Experts:
        gathered = self.__dict__['_gathered']
        if gathered is None:
            raise RuntimeError(
                "expert-parallel experts run in eval mode without their gathered copy: call "
                "ExpertParallel.gather_for_eval() on every worker before evaluating "
                "(the agent does so around ParlAI's eval loop)"
            )
        return gathered

    def _exchange(self, plan: DispatchPlan, device: torch.device) -> Exchange:
        return Exchange.of(plan, self.group, device)


class ShardedExpertFFN(ShardedExperts, ExpertFFN):
    """This rank's block of an ``ExpertFFN``'s experts; tokens travel to their expert's rank."""

    def __init__(self, full: ExpertFFN, rank: int, world: int, group: Optional[dist.ProcessGroup] = None):
        ExpertFFN.__init__(self, experts_per_rank(full.num_experts, world), full.dim, full.dim_hidden,
                           full.relu_dropout.p, full.activation)
        self._take_block(full, rank, world, group)

    def forward(self, x: torch.Tensor, plan: DispatchPlan,
                gates: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.training:
            return self._evaluating()(x, plan, gates)
        rows = self._exchange(plan, x.device).run(x.reshape(-1, self.dim), plan, self.forward_sorted)
        return combine_rows(rows, plan, gates, x.shape[:-1])


class ShardedMultiHashExpertFFN(ShardedExperts, MultiHashExpertFFN):
    """This rank's block of copies of every MultiHash segment; hash m's rows travel with ``plans[m]``.

    Each segment is its own round trip: ``B_m`` reads the whole hidden vector,
    which exists only back on the token's rank once every ``A_m`` has run.
    """

    def __init__(self, full: MultiHashExpertFFN, rank: int, world: int,
                 group: Optional[dist.ProcessGroup] = None):
        MultiHashExpertFFN.__init__(self, full.num_hashes, experts_per_rank(full.num_experts, world),
                                    full.dim, full.dim_hidden, full.relu_dropout.p, full.activation)
        self._take_block(full, rank, world, group)

    def forward(self, x: torch.Tensor, plans: List[DispatchPlan]) -> torch.Tensor:
        if not self.training:
            return self._evaluating()(x, plans)

        def segment(rows, weight, bias, m):
            def compute(received: torch.Tensor, counts: List[int]) -> torch.Tensor:
                return grouped_linear(received, weight, bias, counts, self.gemm)

            out = self._exchange(plans[m], rows.device).run(rows, plans[m], compute)
            return combine_rows(out, plans[m], None, rows.shape[:-1])

        return self.forward_segments(x, segment)


def shard_experts(model: nn.Module, rank: int, world: int,
                  group: Optional[dist.ProcessGroup] = None) -> Dict[str, ShardedExperts]:
    """Swap every local expert module in ``model`` for this rank's sharded one.

    Returns module path -> sharded module, in a fixed order (collectives over
    them must match on every rank). Raises before changing anything if some
    layer's experts do not divide over ``world``.
    """
    slots = [(parent, child_name, child) for parent in model.modules()
             for child_name, child in parent.named_children()
             if isinstance(child, (ExpertFFN, MultiHashExpertFFN)) and not isinstance(child, ShardedExperts)]
    for _, _, experts in slots:
        experts_per_rank(experts.num_experts, world)
    for parent, child_name, experts in slots:
        kind = ShardedMultiHashExpertFFN if isinstance(experts, MultiHashExpertFFN) else ShardedExpertFFN
        setattr(parent, child_name, kind(experts, rank, world, group))
    return {name: m for name, m in model.named_modules() if isinstance(m, ShardedExperts)}
