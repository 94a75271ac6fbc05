"""Expert parallelism on 2 and 4 CPU processes (gloo) equals the single-process layer."""

import os

import pytest
import torch
from conftest import leave_process_group
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from parlai_hash.dispatch import DispatchPlan
from parlai_hash.experts import ExpertFFN
from parlai_hash.parallel.sharded_experts import ShardedExpertFFN, expert_block, gather_blocks
from parlai_hash.routing import HashRouter, RoutingContext, SwitchRouter

K, D, H, N, V = 8, 6, 10, 7, 40  # experts, dim, hidden, tokens per rank, vocab


def setup(world):
    """What every rank and the reference share: weights, tokens, incoming gradients."""
    torch.manual_seed(0)
    ffn = ExpertFFN(K, D, H).double()
    router = SwitchRouter(D, K, V, capacity_factor=1.0).double()
    tokens = torch.randint(1, V, (world, N))
    tokens[0, -2:] = 0  # padding on rank 0: dropped, never sent
    x = torch.randn(world, N, D, dtype=torch.float64)
    grad = torch.randn(world, N, D, dtype=torch.float64)
    table = torch.randint(K, (V,))
    return ffn, router, tokens, x, grad, table


def route(kind, router, table, tokens, x):
    ctx = RoutingContext.full(tokens, pad_idx=0)
    if kind == 'hash':
        return table[tokens], ctx.mask, None
    r = router(ctx, x)
    return r.experts.squeeze(-1), ctx.mask & r.keep.squeeze(-1), r.gates.squeeze(-1)  # one choice per token


def worker(rank, world, init, out_dir, kind):
    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=world)
    try:
        ffn, router, tokens, x, grad, table = setup(world)
        local = ShardedExpertFFN(ffn, rank, world)
        assert local.expert_w1.shape[0] == K // world and local.num_experts == K
        xr = x[rank : rank + 1].clone().requires_grad_(True)
        experts, keep, gates = route(kind, router, table, tokens[rank : rank + 1], xr)
        y = local(xr, DispatchPlan.from_experts(experts, K, keep=keep))
        if gates is not None:
            y = y * gates.unsqueeze(-1)
        (y * grad[rank : rank + 1]).sum().backward()
        full_w1 = gather_blocks(local.expert_w1.detach())
        torch.save({
            'y': y.detach(), 'dx': xr.grad,
            'grads': {n: p.grad for n, p in local.named_parameters()},
            'router': router.router_weight.grad,
            'full_w1': full_w1,
        }, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        leave_process_group()


def reference(kind, world):
    """One process, all ranks' tokens as one batch (a data-parallel loss is their sum)."""
    ffn, router, tokens, x, grad, table = setup(world)
    x = x.clone().requires_grad_(True)
    experts, keep, gates = [], [], []
    outputs = []
    for r in range(world):  # route per rank: Switch capacity is per worker batch
        e, k, g = route(kind, router, table, tokens[r : r + 1], x[r : r + 1])
        y = ffn(x[r : r + 1], DispatchPlan.from_experts(e, K, keep=k))
        outputs.append(y if g is None else y * g.unsqueeze(-1))
    y = torch.cat(outputs)
    (y * grad).sum().backward()
    return y.detach(), x.grad, ffn, router


@pytest.mark.parametrize('world', [2, 4])
@pytest.mark.parametrize('kind', ['hash', 'switch'])
def test_expert_parallel_equals_single_process(tmp_path, world, kind):
    init = f'file://{tmp_path}/rendezvous'
    mp.spawn(worker, args=(world, init, str(tmp_path), kind), nprocs=world, join=True)
    y_ref, dx_ref, ffn_ref, router_ref = reference(kind, world)
    results = [torch.load(tmp_path / f'rank{r}.pt', weights_only=False) for r in range(world)]
    for r, res in enumerate(results):
        torch.testing.assert_close(res['y'][0], y_ref[r])
        torch.testing.assert_close(res['dx'][0], dx_ref[r])
        for name, g in res['grads'].items():
            torch.testing.assert_close(g, expert_block(getattr(ffn_ref, name).grad, r, world))
        torch.testing.assert_close(res['full_w1'], ffn_ref.expert_w1.detach())
    if kind == 'switch':  # data-parallel router: DDP would sum these
        torch.testing.assert_close(sum(res['router'] for res in results), router_ref.router_weight.grad)
    assert y_ref[0, -2:].abs().sum() == 0  # padding was never computed


def test_experts_must_divide_over_workers():
    from parlai_hash.errors import OptionError
    from parlai_hash.parallel.exchange import experts_per_rank
    with pytest.raises(OptionError, match='^--num-experts'):
        experts_per_rank(6, 4)
    assert experts_per_rank(8, 4) == 2


# ------------------------------------------------------------------ MultiHash
# SparseFFN and the sharding helpers import ParlAI (~1 s): imported here, not at
# the top, so the workers of the tests above start without it.

NH = 2  # hashes: segments of D/NH and H/NH


def multihash_layers(seed):
    """Two MultiHash layers sharing one table (``--hash-per-layer same``): one plan list serves both."""
    from parlai_hash.layers import SparseFFN
    from parlai_hash.options import SparseConfig
    torch.manual_seed(seed)
    table = torch.randint(K, (NH, V))
    return nn.ModuleList(
        SparseFFN(SparseConfig(K, num_hashes=NH), f'dec{i}', HashRouter('random', K, 0, table), D, H)
        for i in range(2)
    ).double()


def multihash_forward(layers, tokens, x):
    ctx = RoutingContext.full(tokens, pad_idx=0)
    for layer in layers:
        layer.routing = ctx
    h = x + layers[0](x)
    return layers[1](h), ctx


def multihash_worker(rank, world, init, out_dir):
    from parlai_hash.parallel.exchange import Exchange
    from parlai_hash.parallel.training import RANK_LOCAL, ExpertParallel
    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=world)
    try:
        _, _, tokens, x, grad, _ = setup(world)
        full = multihash_layers(seed=0).state_dict()
        layers = multihash_layers(seed=100 + rank)  # other weights: the checkpoint must replace them
        parallel = ExpertParallel(layers, rank, world)
        parallel.shard_state_dict(full)  # a whole checkpoint loads on any W
        layers.load_state_dict(full)
        exchanges = []  # every count exchange of the training forward
        build = Exchange.__dict__['build']
        Exchange.build = classmethod(lambda cls, *a: exchanges.append(1) or build.__func__(cls, *a))
        try:
            xr = x[rank : rank + 1].clone().requires_grad_(True)
            y, ctx = multihash_forward(layers, tokens[rank : rank + 1], xr)
        finally:
            Exchange.build = build
        (y * grad[rank : rank + 1]).sum().backward()
        parallel.gather_for_eval()
        layers.eval()
        with torch.no_grad():
            y_eval, _ = multihash_forward(layers, tokens[rank : rank + 1], xr)
        torch.save({
            'y': y.detach(), 'dx': xr.grad, 'y_eval': y_eval,
            'plans': [len(plans) for plans in ctx.plans.values()], 'exchanges': len(exchanges),
            'groups': {layer.experts.group is not None and layer.experts.group != dist.group.WORLD
                       for layer in layers},
            'grads': {n: p.grad for n, p in layers.named_parameters() if getattr(p, RANK_LOCAL, False)},
            'full': parallel.gather_experts(),
        }, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        leave_process_group()


@pytest.mark.parametrize('world', [2, 4])
def test_multihash_expert_parallel_equals_single_process(tmp_path, world):
    init = f'file://{tmp_path}/rendezvous'
    mp.spawn(multihash_worker, args=(world, init, str(tmp_path)), nprocs=world, join=True)
    _, _, tokens, x, grad, _ = setup(world)
    ref = multihash_layers(seed=0)
    x = x.clone().requires_grad_(True)
    y_ref, _ = multihash_forward(ref, tokens, x)
    (y_ref * grad).sum().backward()
    ref_params = dict(ref.named_parameters())
    for r in range(world):
        res = torch.load(tmp_path / f'rank{r}.pt', weights_only=False)
        torch.testing.assert_close(res['y'][0], y_ref[r].detach())
        torch.testing.assert_close(res['y_eval'][0], y_ref[r].detach())
        torch.testing.assert_close(res['dx'][0], x.grad[r])
        # every segment of both layers: [K/W, ...] shards of the full gradients
        assert len(res['grads']) == 2 * 4 * NH
        for name, g in res['grads'].items():
            assert g.shape[0] == K // world
            torch.testing.assert_close(g, expert_block(ref_params[name].grad, r, world))
        assert res['full'].keys() == {n for n in ref_params if '.experts.' in n}
        for name, w in res['full'].items():
            torch.testing.assert_close(w, ref_params[name].detach())
        assert res['plans'] == [NH]  # one plan per hash, shared by both layers...
        assert res['exchanges'] == NH  # ...and one exchange of counts per hash, not per layer
        assert res['groups'] == {True}  # the exchanges ran on the layers' own group
    assert y_ref[0, -2:].abs().sum() == 0  # padding was never computed


def test_multihash_experts_must_divide_over_workers():
    from parlai_hash.errors import OptionError
    from parlai_hash.parallel.training import ExpertParallel
    layers = multihash_layers(seed=0)
    with pytest.raises(OptionError, match='^--num-experts'):
        ExpertParallel(layers, 0, 3)  # refused before any collective (none is set up here)
    assert all(type(layer.experts).__name__ == 'MultiHashExpertFFN' for layer in layers)  # untouched
