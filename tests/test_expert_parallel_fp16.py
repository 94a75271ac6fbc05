"""--expert-parallel under ParlAI's --fp16 optimizers: one global gradient norm on every rank.

ParlAI runs its fp16 path only on CUDA, so the optimizers are driven here by
hand on CPU half tensors, on 2 gloo processes, exactly as its
``update_params`` calls them (``clip_main_grads``), inside the agent's
``global_norm_in_parlai_update``.
"""

import math
import os

import pytest
import torch
from conftest import leave_process_group
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

WORLD = 2
LOSS_SCALE = 8.0
DENSE_GRAD = [0.5, -1.0, 2.0]
EXPERT_GRADS = {0: [1.0, 2.0], 1: [-3.0, 0.25]}  # each rank owns different experts


def global_norm() -> float:
    sq = sum(g * g for g in DENSE_GRAD)  # equal on every rank: counted once
    sq += sum(g * g for grads in EXPERT_GRADS.values() for g in grads)
    return math.sqrt(sq)


def make(rank: int, impl: str, overflow: bool, momentum: float = 0.0):
    from parlai.utils.fp16 import MemoryEfficientFP16Optimizer, SafeFP16Optimizer

    from parlai_hash.parallel.training import RANK_LOCAL

    model = nn.Module()
    model.dense = nn.Parameter(torch.zeros(3, dtype=torch.half))
    model.expert = nn.Parameter(torch.zeros(2, dtype=torch.half))
    setattr(model.expert, RANK_LOCAL, True)
    inner = torch.optim.SGD(model.parameters(), lr=1.0, momentum=momentum)
    if impl == 'safe':
        optimizer = SafeFP16Optimizer(inner)
    else:
        optimizer = MemoryEfficientFP16Optimizer(inner)
    optimizer.scaler.loss_scale = LOSS_SCALE
    # What backward of a loss scaled by LOSS_SCALE leaves in the half gradients.
    model.dense.grad = torch.tensor(DENSE_GRAD, dtype=torch.half) * LOSS_SCALE
    expert = torch.tensor(EXPERT_GRADS[rank], dtype=torch.half) * LOSS_SCALE
    if overflow and rank == 1:
        expert[0] = float('inf')
    model.expert.grad = expert
    if impl == 'safe':
        optimizer._needs_sync = True
    else:
        optimizer._grads_are_scaled = True
    return model, optimizer


def worker(rank, init, out_dir, impl, overflow):
    from parlai_hash.parallel.training import global_norm_in_parlai_update

    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=WORLD)
    try:
        model, optimizer = make(rank, impl, overflow)
        with global_norm_in_parlai_update(model, optimizer):
            norm = optimizer.clip_main_grads(100.0)  # what ParlAI's update_params calls
        torch.save({'norm': float(norm), 'loss_scale': optimizer.scaler.loss_scale},
                   os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        leave_process_group()


@pytest.mark.parametrize('impl', ['safe', 'mem_efficient'])
@pytest.mark.parametrize('overflow', [False, True])
def test_fp16_optimizers_see_the_global_norm_and_skip_an_overflow_together(tmp_path, impl, overflow):
    mp.spawn(worker, args=(f'file://{tmp_path}/rendezvous', str(tmp_path), impl, overflow),
             nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f'rank{r}.pt') for r in range(WORLD)]
    if not overflow:
        for res in results:
            # Unscaled, dense counted once, both ranks' experts: not this rank's norm.
            assert res['norm'] == pytest.approx(global_norm(), rel=1e-3)
            assert res['loss_scale'] == LOSS_SCALE
    else:
        # An inf in one rank's experts: every rank sees the overflow and lowers its scale.
        for res in results:
            assert not math.isfinite(res['norm']) or res['norm'] == -1
            assert res['loss_scale'] < LOSS_SCALE


def test_control_parlai_alone_takes_only_this_ranks_norm():
    """A control, not a test of our code: on this set-up ParlAI's own norm (this
    rank's gradients only) differs from the global one, so the global-norm checks
    above can fail: they would if the patch were not applied."""
    from parlai.utils.fp16 import clip_grad_norm

    model, optimizer = make(0, 'safe', overflow=False)
    optimizer._sync_fp16_grads_to_fp32()
    local = float(clip_grad_norm(optimizer.fp32_params, 0))
    assert local != pytest.approx(global_norm(), rel=1e-3)


def optimizer_state_worker(rank, init, out_dir, impl):
    from parlai_hash.parallel.training import gather_optimizer_state, shard_optimizer_state

    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=WORLD)
    try:
        model, optimizer = make(rank, impl, overflow=False, momentum=0.9)
        optimizer.step()  # momentum buffers = this rank's unscaled gradients
        full = gather_optimizer_state(model, optimizer, optimizer.state_dict())
        fresh_model, fresh = make(rank, impl, overflow=False, momentum=0.9)
        fresh.load_state_dict(full)  # as ParlAI's init_optim does on resume
        shard_optimizer_state(fresh_model, fresh, rank, WORLD)
        inner = getattr(fresh, 'optimizer', fresh)
        restored = [inner.state[p]['momentum_buffer'].float() for g in inner.param_groups for p in g['params']]
        torch.save({'full': {i: v['momentum_buffer'].float() for i, v in full['state'].items()},
                    'restored': restored}, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        leave_process_group()


@pytest.mark.parametrize('impl', ['safe', 'mem_efficient'])
def test_fp16_optimizer_state_is_gathered_and_cut_back_per_rank(tmp_path, impl):
    mp.spawn(optimizer_state_worker, args=(f'file://{tmp_path}/rendezvous', str(tmp_path), impl),
             nprocs=WORLD, join=True)
    every_expert = torch.tensor(EXPERT_GRADS[0] + EXPERT_GRADS[1])
    for rank in range(WORLD):
        res = torch.load(tmp_path / f'rank{rank}.pt')
        dense, expert = res['full'][0], res['full'][1]
        torch.testing.assert_close(dense, torch.tensor(DENSE_GRAD))  # not gathered
        torch.testing.assert_close(expert, every_expert)  # both ranks' rows, in rank order
        torch.testing.assert_close(res['restored'][0], torch.tensor(DENSE_GRAD))
        torch.testing.assert_close(res['restored'][1], torch.tensor(EXPERT_GRADS[rank]))
