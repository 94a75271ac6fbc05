"""Top-k layers under expert parallelism (2 CPU processes, gloo) equal the single-process layer."""

import os

import pytest
import torch
from conftest import leave_process_group
import torch.distributed as dist
import torch.multiprocessing as mp

from parlai_hash.options import SparseConfig
from parlai_hash.layers import SparseFFN
from parlai_hash.parallel.sharded_experts import expert_block
from parlai_hash.parallel.training import ExpertParallel
from parlai_hash.routing import HashRouter, RoutingContext, SwitchRouter, TableInputs

K, D, H, N, V, WORLD = 4, 6, 10, 7, 40, 2  # experts, dim, hidden, tokens per rank, vocab, ranks


def setup():
    """The layer, every rank's tokens and hidden states, and the incoming gradients."""
    torch.manual_seed(0)
    tokens = torch.randint(1, V, (WORLD, N))
    tokens[0, -2:] = 0  # padding on rank 0: never sent
    x = torch.randn(WORLD, N, D, dtype=torch.float64)
    grad = torch.randn(WORLD, N, D, dtype=torch.float64)
    return tokens, x, grad


def layer(kind):
    torch.manual_seed(1)
    if kind == 'hash':
        counts = torch.rand(V, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        inputs = TableInputs(vocab_size=V, n_positions=16, token_counts=counts)
        table = HashRouter.build_tables('balanced', K, 3, inputs, experts_per_token=2)
        router = HashRouter('balanced', K, 3, table, experts_per_token=2, gates='learned', dim=D)
    else:
        router = SwitchRouter(D, K, V, capacity_factor=0.8, experts_per_token=2)
    return SparseFFN(SparseConfig(K, experts_per_token=2), 'dec0', router, D, H).double()


def run(ffn, tokens, x, grad):
    ffn.routing = RoutingContext.full(tokens, pad_idx=0)
    x = x.clone().requires_grad_(True)
    y = ffn(x)
    (y * grad).sum().backward()
    return y.detach(), x.grad


def worker(rank, init, out_dir, kind):
    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=WORLD)
    try:
        tokens, x, grad = setup()
        ffn = layer(kind)
        ExpertParallel(ffn, rank, WORLD)
        assert ffn.experts.expert_w1.shape[0] == K // WORLD
        ffn.train()
        y, dx = run(ffn, tokens[rank : rank + 1], x[rank : rank + 1], grad[rank : rank + 1])
        torch.save({'y': y, 'dx': dx, 'grads': {n: p.grad for n, p in ffn.named_parameters()}},
                   os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        leave_process_group()


@pytest.mark.parametrize('kind', ['hash', 'switch'])
def test_top_2_expert_parallel_equals_single_process(tmp_path, kind):
    mp.spawn(worker, args=(f'file://{tmp_path}/rendezvous', str(tmp_path), kind), nprocs=WORLD, join=True)
    tokens, x, grad = setup()
    ffn = layer(kind)
    ffn.train()
    # one process, each rank's batch on its own (Switch capacity is per worker batch)
    reference = [run(ffn, tokens[r : r + 1], x[r : r + 1], grad[r : r + 1]) for r in range(WORLD)]
    summed = {n: p.grad for n, p in ffn.named_parameters()}  # gradients accumulate over the ranks' batches
    results = [torch.load(tmp_path / f'rank{r}.pt', weights_only=False) for r in range(WORLD)]
    for r, res in enumerate(results):
        torch.testing.assert_close(res['y'], reference[r][0])
        torch.testing.assert_close(res['dx'], reference[r][1])
        for name, g in res['grads'].items():
            if name.startswith('experts.'):
                torch.testing.assert_close(g, expert_block(summed[name], r, WORLD), msg=name)
    for name in (n for n in summed if n.startswith('router.')):  # data-parallel: DDP would sum these
        torch.testing.assert_close(sum(res['grads'][name] for res in results), summed[name], msg=name)
    assert reference[0][0][0, -2:].abs().sum() == 0  # padding was never computed
