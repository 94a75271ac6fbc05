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
  or ranks would scale the shared dense gradients differently.
* Checkpoints hold all K experts (gathered, a collective that ParlAI's
  ``save``/``save_nonprimary`` give us on every rank), so they load on one
  process or any W dividing K; the optimizer's state of sharded experts is
  rank-local and not saved (resuming restarts Adam's moments).
* Evaluation runs on full experts gathered around ParlAI's eval loop (see
  ``parlai_hash.train_hooks``): no collective inside an eval forward.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

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
    """Keep this rank's experts; tell DDP to leave them alone."""
    for ffn in sparse_layers(model).values():
        full = dict(ffn.experts.named_parameters())
        local = local_expert_ffn(ffn.experts, rank, world)
        for pname, param in local.named_parameters():
            param.requires_grad_(full[pname].requires_grad)  # keeps --freeze experts
            setattr(param, RANK_LOCAL, True)
        ffn.experts = local
        ffn.expert_parallel = True
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


def global_grad_norm_and_scale(model: nn.Module, world: int) -> float:
    """Divide expert gradients by W, return the global gradient norm."""
    dense_sq = torch.zeros((), dtype=torch.float64)
    local_sq = torch.zeros((), dtype=torch.float64)
    for p in model.parameters():
        if p.grad is None:
            continue
        if getattr(p, RANK_LOCAL, False):
            p.grad.div_(world)
            local_sq += p.grad.detach().double().pow(2).sum()
        else:
            dense_sq += p.grad.detach().double().pow(2).sum()
    dist.all_reduce(local_sq, dist.ReduceOp.SUM)
    return math.sqrt(float(dense_sq + local_sq))


def clip_(model: nn.Module, max_norm: float, norm: float) -> None:
    coef = max_norm / (norm + 1e-6)
    if coef < 1:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(coef)


def world_for(opt) -> Optional[int]:
    """W when this process trains expert-parallel, else None."""
    from parlai.utils.distributed import is_distributed

    if not opt.get('expert_parallel') or not is_distributed():
        return None
    if not str(opt.get('datatype', 'train')).startswith('train'):
        return None  # evaluation-only runs keep every expert on every rank
    return dist.get_world_size()
