"""``--expert-parallel``: shard every sparse layer's experts over the training workers.

Rank r keeps experts [r·K/W, (r+1)·K/W) (parlai_hash.expert_parallel); a
MultiHash layer keeps those copies of each of its segments. What
ParlAI's data-parallel training needs around that, kept in this one module:

* DDP must not all-reduce expert gradients (each rank owns its experts).
* ParlAI's ``sync_parameters`` at start-up must not copy rank 0's experts
  over everyone's shard.
* Expert gradients sum every worker's loss; DDP *averages* the dense ones, so
  expert gradients are divided by W to match a single data-parallel model.
* Gradient clipping must use the global norm (dense + every rank's experts),
  or ranks would scale the shared dense gradients differently; under --fp16
  that global norm is also what detects an overflow, so all ranks skip alike.
* Checkpoints hold all K experts (gathered, a collective that ParlAI's
  ``save``/``save_nonprimary`` give us on every rank), so they load on one
  process or any W dividing K. The optimizer's per-expert state (Adam's
  moments, momentum) is gathered the same way and cut back to each rank's
  shard on load, so a resumed run continues as an unsharded one would.
* Evaluation runs on full experts gathered around ParlAI's eval loop (see
  ``parlai_hash.train_hooks``): no collective inside an eval forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set

import torch
import torch.distributed as dist
import torch.nn as nn

from parlai_hash.expert_parallel import experts_like, experts_per_rank, gather_experts, local_expert_ffn
from parlai_hash.layers import SparseFFN

#: Marks a parameter that differs by rank (an expert shard).
RANK_LOCAL = '_parlai_hash_rank_local'


def sparse_layers(model: nn.Module) -> Dict[str, SparseFFN]:
    """Module path -> SparseFFN, in a fixed order (collectives must match)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SparseFFN)}


def shard_model(model: nn.Module, rank: int, world: int) -> None:
    """Keep this rank's experts; tell DDP to leave them alone; give the
    layers' token exchanges a process group of their own (every rank calls this)."""
    layers = sparse_layers(model).values()
    for ffn in layers:
        full = dict(ffn.experts.named_parameters())
        local = local_expert_ffn(ffn.experts, rank, world)
        for pname, param in local.named_parameters():
            param.requires_grad_(full[pname].requires_grad)  # keeps --freeze experts
            setattr(param, RANK_LOCAL, True)
        ffn.experts = local
        ffn.expert_parallel = True
    group = dist.new_group()
    for ffn in layers:
        ffn.expert_group = group
    ignored = [n for n, p in model.named_parameters() if getattr(p, RANK_LOCAL, False)]
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)


def shard_state_dict(model: nn.Module, state: Dict[str, torch.Tensor], rank: int, world: int) -> None:
    """Slice full ``[K, ...]`` expert tensors of a checkpoint to this rank's shard
    (MultiHash segments too: ``...experts.expert_w1.0``)."""
    own = model.state_dict()
    for key, value in list(state.items()):
        if key in own and own[key].dim() and value.shape[0] != own[key].shape[0] and '.experts.' in key:
            per_rank = experts_per_rank(value.shape[0], world)
            state[key] = value[rank * per_rank : (rank + 1) * per_rank].clone()


def gather_full_experts(model: nn.Module) -> Dict[str, torch.Tensor]:
    """State-dict key -> all K experts (every rank must call this)."""
    full = {}
    for name, ffn in sparse_layers(model).items():
        for pname, param in ffn.experts.named_parameters():
            full[f'{name}.experts.{pname}'] = gather_experts(param.detach())
    return full


def attach_eval_experts(model: nn.Module) -> None:
    """Give every sharded layer a full copy of its experts for evaluation."""
    full = gather_full_experts(model)
    for name, ffn in sparse_layers(model).items():
        copy = experts_like(ffn.experts, ffn.num_experts)
        with torch.no_grad():
            for pname, param in copy.named_parameters():
                param.copy_(full[f'{name}.experts.{pname}'])
        copy.requires_grad_(False)
        ffn.full_experts = copy


def detach_eval_experts(model: nn.Module) -> None:
    for ffn in sparse_layers(model).values():
        ffn.full_experts = None


def sync_dense_parameters(model: nn.Module) -> bool:
    """ParlAI's sync_parameters, skipping rank-local expert shards."""
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
    """Multiply this rank's expert-shard gradients (any dtype, loss-scaled or not)."""
    for p in model.parameters():
        if p.grad is not None and getattr(p, RANK_LOCAL, False):
            p.grad.mul_(factor)


def rank_local_ids(model: nn.Module, optimizer) -> Set[int]:
    """ids of the expert-shard parameters, and of the float32 master copies that
    ParlAI's safe fp16 optimizer keeps of them (its norm is taken over those)."""
    ids = {id(p) for p in model.parameters() if getattr(p, RANK_LOCAL, False)}
    for p, p32 in zip(getattr(optimizer, 'fp16_params', ()), getattr(optimizer, 'fp32_params', ())):
        if id(p) in ids:
            ids.add(id(p32))
    return ids


def global_grad_norm(params: Iterable[torch.Tensor], local_ids: Set[int],
                     max_norm: float = 0.0) -> torch.Tensor:
    """Norm over dense gradients (equal on every rank) and every rank's expert
    shards; clips to ``max_norm`` if positive. Every rank gets the same norm, so
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
    shard's per-expert tensors gathered to all K experts: a collective, every
    rank calls it. Rows are ranks' shards in order, as in the gathered weights."""
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
            key: gather_experts(value) if _per_expert(value, param.shape[0]) else value
            for key, value in sorted(entry.items())
        }
    return out


def shard_optimizer_state(model: nn.Module, optimizer, rank: int, world: int) -> None:
    """After ParlAI loaded a checkpoint's optimizer state: cut each expert
    shard's full-K tensors down to this rank's rows."""
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


def world_for(opt) -> Optional[int]:
    """W when this process trains expert-parallel, else None: evaluation-only runs
    (``multiprocessing_eval``) keep every expert on every rank."""
    from parlai.utils.distributed import is_distributed

    from parlai_hash.train_hooks import building_train_loop

    if not opt.get('expert_parallel') or not is_distributed() or not building_train_loop():
        return None
    return dist.get_world_size()
