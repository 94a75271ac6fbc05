"""One model trained expert-parallel: what ParlAI's data-parallel training needs around it.

* Its expert modules are swapped for sharded ones (``sharded_experts``), once,
  when the model is built; their exchanges run on a process group of their
  own: they happen inside backward, next to DDP's asynchronous all-reduces,
  which would otherwise share one communicator with them.
* DDP must not all-reduce expert gradients (each rank owns its experts).
* ParlAI's ``sync_parameters`` at start-up must not copy rank 0's experts
  over everyone's block.
* Expert gradients sum every worker's loss; DDP *averages* the dense ones, so
  expert gradients are divided by W to match a single data-parallel model.
* Gradient clipping must use the global norm (dense + every rank's experts),
  or ranks would scale the shared dense gradients differently; under --fp16
  that global norm is also what detects an overflow, so all ranks skip alike.
* Checkpoints hold all K experts (gathered, a collective that ParlAI's
  ``save``/``save_nonprimary`` give us on every rank), so they load on one
  process or any W dividing K. The optimizer's per-expert state (Adam's
  moments, momentum) is gathered the same way and cut back to each rank's
  block on load, so a resumed run continues as an unsharded one would.
* Evaluation runs on full experts gathered around ParlAI's eval loop: no
  collective inside an eval forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Set

import torch
import torch.distributed as dist
import torch.nn as nn

from parlai_hash.parallel.sharded_experts import ShardedExperts, expert_block, gather_blocks, shard_experts

#: Marks a parameter that differs by rank (a block of experts).
RANK_LOCAL = '_parlai_hash_rank_local'


class ExpertParallel:
    """``model``'s experts sharded over W ranks, and the collectives training needs.

    Every rank builds one (a collective: it creates the exchanges' process group).
    """

    def __init__(self, model: nn.Module, rank: int, world: int):
        self.model, self.rank, self.world = model, rank, world
        # Refuses experts that do not divide over W before any collective.
        self.layers: Dict[str, ShardedExperts] = shard_experts(model, rank, world)
        group = dist.new_group()
        for experts in self.layers.values():
            experts.group = group
            for param in experts.parameters():  # type: ignore[attr-defined]
                setattr(param, RANK_LOCAL, True)
        ignored = [n for n, p in model.named_parameters() if getattr(p, RANK_LOCAL, False)]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)

    @classmethod
    def for_training(cls, opt: Mapping[str, Any], model: nn.Module) -> Optional["ExpertParallel"]:
        """Shard ``model`` when this process trains with ``--expert-parallel``; else None.

        Evaluation-only runs (``multiprocessing_eval``) keep every expert on every rank.
        """
        from parlai.utils.distributed import is_distributed

        from parlai_hash.train_hooks import building_train_loop

        if not opt.get('expert_parallel') or not is_distributed() or not building_train_loop():
            return None
        import parlai.core.torch_generator_agent as generator_module

        sharded = cls(model, dist.get_rank(), dist.get_world_size())
        # ParlAI copies rank 0's parameters to every rank at start-up: not the blocks.
        generator_module.sync_parameters = sync_dense_parameters
        return sharded

    @property
    def experts_per_worker(self) -> int:
        return next(iter(self.layers.values())).local_experts if self.layers else 0

    # ------------------------------------------------------------ evaluation

    def gather_for_eval(self) -> None:
        """Every sharded layer gets a full copy of its experts (every rank calls this)."""
        for experts in self.layers.values():
            experts.gather_for_eval()

    def release_eval(self) -> None:
        for experts in self.layers.values():
            experts.release_eval()

    # ------------------------------------------------------------ checkpoints

    def gather_experts(self) -> Dict[str, torch.Tensor]:
        """State-dict key -> all K experts (every rank must call this)."""
        return {f'{path}.{name}': value for path, experts in self.layers.items()
                for name, value in experts.gathered_parameters().items()}

    def shard_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Cut a checkpoint's full ``[K, ...]`` expert tensors to this rank's block, in place
        (MultiHash segments too: ``...experts.expert_w1.0``)."""
        for path, experts in self.layers.items():
            for name, param in experts.named_parameters():  # type: ignore[attr-defined]
                key = f'{path}.{name}'
                if key in state and state[key].shape[0] == experts.num_experts != param.shape[0]:
                    state[key] = expert_block(state[key], self.rank, self.world)

    def gather_optimizer_state(self, optimizer, state: Dict[str, Any]) -> Dict[str, Any]:
        return gather_optimizer_state(self.model, optimizer, state)

    def shard_optimizer_state(self, optimizer) -> None:
        shard_optimizer_state(self.model, optimizer, self.rank, self.world)

    # ------------------------------------------------------------ updates

    @contextmanager
    def update(self, optimizer) -> Iterator[None]:
        """Around ParlAI's ``update_params``: expert gradients averaged like DDP's
        dense ones, every gradient norm global."""
        scale_expert_grads(self.model, 1.0 / self.world)
        with global_norm_in_parlai_update(self.model, optimizer):
            yield


def sync_dense_parameters(model: nn.Module) -> bool:
    """ParlAI's sync_parameters, skipping rank-local expert blocks."""
    from parlai.utils.distributed import is_distributed, is_primary_worker

    if not is_distributed():
        return True
    with torch.no_grad():
        for p in model.parameters():
            if getattr(p, RANK_LOCAL, False):
                continue
            if not is_primary_worker():
                p.data.zero_()
            dist.all_reduce(p.data, dist.ReduceOp.SUM)
    return True


def scale_expert_grads(model: nn.Module, factor: float) -> None:
    """Multiply this rank's expert-block gradients (any dtype, loss-scaled or not)."""
    for p in model.parameters():
        if p.grad is not None and getattr(p, RANK_LOCAL, False):
            p.grad.mul_(factor)


def rank_local_ids(model: nn.Module, optimizer) -> Set[int]:
    """ids of the expert-block parameters, and of the float32 master copies that
    ParlAI's safe fp16 optimizer keeps of them (its norm is taken over those)."""
    ids = {id(p) for p in model.parameters() if getattr(p, RANK_LOCAL, False)}
    for p, p32 in zip(getattr(optimizer, 'fp16_params', ()), getattr(optimizer, 'fp32_params', ())):
        if id(p) in ids:
            ids.add(id(p32))
    return ids


def global_grad_norm(params: Iterable[torch.Tensor], local_ids: Set[int],
                     max_norm: float = 0.0) -> torch.Tensor:
    """Norm over dense gradients (equal on every rank) and every rank's expert
    blocks; clips to ``max_norm`` if positive. Every rank gets the same norm, so
    they scale shared gradients alike and agree on an fp16 overflow (inf/nan)."""
    params = [p for p in params if p.grad is not None]
    device = params[0].grad.device if params else torch.device('cpu')

    def squared(grads) -> torch.Tensor:
        # On the gradients' device: NCCL reduces only CUDA tensors, and no host sync per parameter.
        if not grads:
            return torch.zeros((), dtype=torch.float64, device=device)
        norms = torch.stack([torch.linalg.vector_norm(g.detach(), dtype=torch.float32) for g in grads])
        return norms.double().pow(2).sum()

    dense_sq = squared([p.grad for p in params if id(p) not in local_ids])
    local_sq = squared([p.grad for p in params if id(p) in local_ids])
    dist.all_reduce(local_sq, dist.ReduceOp.SUM)
    norm = (dense_sq + local_sq).sqrt().float()
    if max_norm > 0:
        coef = max_norm / (float(norm) + 1e-6)
        if coef < 1:
            for p in params:
                p.grad.mul_(coef)
    return norm


@contextmanager
def global_norm_in_parlai_update(model: nn.Module, optimizer) -> Iterator[None]:
    """Run ParlAI's own ``update_params`` (fp16 loss scaling and overflow skips,
    metrics, scheduler) with every gradient norm it takes made global.

    It takes the norm through one of three functions, looked up when called:
    ``torch.nn.utils.clip_grad_norm_`` (float32 with --gradient-clip),
    ``compute_grad_norm`` (without), and ``parlai.utils.fp16.clip_grad_norm``
    (inside both fp16 optimizers). Each is swapped for the global norm here.
    """
    import parlai.core.torch_agent as torch_agent_module
    import parlai.utils.fp16 as fp16_module

    ids = rank_local_ids(model, optimizer)

    def clip(params, max_norm=0.0, *args, **kwargs):
        return global_grad_norm(params, ids, max_norm)

    def norm_only(params, norm_type=2.0):
        return global_grad_norm(params, ids)

    saved = (torch.nn.utils.clip_grad_norm_, fp16_module.clip_grad_norm,
             torch_agent_module.compute_grad_norm)
    torch.nn.utils.clip_grad_norm_ = clip
    fp16_module.clip_grad_norm = clip
    torch_agent_module.compute_grad_norm = norm_only
    try:
        yield
    finally:
        (torch.nn.utils.clip_grad_norm_, fp16_module.clip_grad_norm,
         torch_agent_module.compute_grad_norm) = saved


def _state_holder(optimizer):
    """The torch optimizer holding per-parameter state: ParlAI's fp16 wrappers
    keep it in the optimizer they wrap."""
    return getattr(optimizer, 'optimizer', optimizer)


def _optimizer_params(optimizer) -> List[torch.Tensor]:
    """Parameters in the order ``state_dict()`` numbers them."""
    return [p for group in _state_holder(optimizer).param_groups for p in group['params']]


def _per_expert(value: Any, rows: int) -> bool:
    """A state tensor with one row per expert of its parameter (moments,
    Adafactor's factored second moments); not a step count."""
    return torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == rows


def gather_optimizer_state(model: nn.Module, optimizer, state: Dict[str, Any]) -> Dict[str, Any]:
    """``state`` (this rank's ``optimizer.state_dict()``) with every expert
    block's per-expert tensors gathered to all K experts: a collective, every
    rank calls it. Rows are ranks' blocks in order, as in the gathered weights."""
    ids = rank_local_ids(model, optimizer)
    out = dict(state)
    out['state'] = dict(state['state'])
    for index, param in enumerate(_optimizer_params(optimizer)):
        if id(param) not in ids:
            continue
        entry = state['state'].get(index)
        # Keep an entry only if every rank has one (all must join each gather).
        have = torch.tensor([0 if entry is None else 1], device=param.device)
        dist.all_reduce(have, dist.ReduceOp.MIN)
        if not int(have):
            out['state'].pop(index, None)
            continue
        out['state'][index] = {
            key: gather_blocks(value) if _per_expert(value, param.shape[0]) else value
            for key, value in sorted(entry.items())
        }
    return out


def shard_optimizer_state(model: nn.Module, optimizer, rank: int, world: int) -> None:
    """After ParlAI loaded a checkpoint's optimizer state: cut each expert
    block's full-K tensors down to this rank's rows."""
    ids = rank_local_ids(model, optimizer)
    state = _state_holder(optimizer).state
    for param in _optimizer_params(optimizer):
        entry = state.get(param)
        if id(param) not in ids or not entry:
            continue
        rows = param.shape[0]
        for key, value in entry.items():
            if _per_expert(value, rows * world):
                entry[key] = value[rank * rows : (rank + 1) * rows].clone()
