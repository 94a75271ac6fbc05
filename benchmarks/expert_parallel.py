"""What a routing plan known in advance saves under expert parallelism.

W CPU processes (gloo) each hold K/W experts of L sparse layers and train on
their own T tokens. Timed per training step (forward + backward of the L
layers, interleaved, medians):

- hash, shared plan: the plan (sort + one count exchange) is built once per
  batch from the token ids and reused by every layer sharing the table;
- hash, plan per layer: the same routing, rebuilt in every layer;
- switch: the router runs on each layer's hidden state, so each layer must
  build its own plan after it.

    .venv/bin/python -m benchmarks.expert_parallel [--world 2] [--layers 4] ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from parlai_hash.dispatch import ExpertFFN
from parlai_hash.expert_parallel import ExpertParallelPlan, expert_parallel_forward, local_expert_ffn
from parlai_hash.routing import RoutingContext, SwitchRouter


def step(kind: str, layers, routers, x: torch.Tensor, tokens: torch.Tensor, table: torch.Tensor, K: int):
    keep = torch.ones_like(tokens, dtype=torch.bool)
    shared = ExpertParallelPlan.build(table[tokens], K, keep=keep) if kind == 'hash-shared' else None
    h = x
    for layer, router in zip(layers, routers):
        if kind == 'switch':
            route = router(RoutingContext.full(tokens, pad_idx=-1), h)
            plan = ExpertParallelPlan.build(route.experts, K, keep=keep)
            h = h + expert_parallel_forward(h, plan, layer) * route.gates.unsqueeze(-1)
        else:
            plan = shared or ExpertParallelPlan.build(table[tokens], K, keep=keep)
            h = h + expert_parallel_forward(h, plan, layer)
    h.sum().backward()


def plan_ms(table: torch.Tensor, tokens: torch.Tensor, K: int, reps: int = 20) -> float:
    keep = torch.ones_like(tokens, dtype=torch.bool)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(reps):
        ExpertParallelPlan.build(table[tokens], K, keep=keep)
    return 1e3 * (time.perf_counter() - t0) / reps


def worker(rank: int, world: int, init: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(max(1, args.threads // world))
    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        K = args.experts
        layers = [local_expert_ffn(ExpertFFN(K, args.dim, args.ffn), rank, world) for _ in range(args.layers)]
        routers = [SwitchRouter(args.dim, K, args.vocab, capacity_factor=0.0) for _ in range(args.layers)]
        table = torch.randint(K, (args.vocab,))
        gen = torch.Generator().manual_seed(rank)
        probs = 1.0 / torch.arange(1, args.vocab + 1, dtype=torch.float)
        tokens = torch.multinomial(probs, args.tokens, True, generator=gen).unsqueeze(0)
        x = torch.randn(1, args.tokens, args.dim, generator=gen, requires_grad=True)
        kinds = ['hash-shared', 'hash-per-layer', 'switch']
        times = {k: [] for k in kinds}
        for k in kinds:  # warm-up
            step(k, layers, routers, x, tokens, table, K)
        for r in range(args.reps):
            for k in kinds[r % 3:] + kinds[: r % 3]:
                for m in layers + routers:
                    m.zero_grad(set_to_none=True)
                dist.barrier()
                t0 = time.perf_counter()
                step(k, layers, routers, x, tokens, table, K)
                times[k].append(time.perf_counter() - t0)
        result = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        result['plan'] = plan_ms(table, tokens, K)
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.barrier()
        dist.destroy_process_group()


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog='python -m benchmarks.expert_parallel', description=__doc__.split('\n\n')[0])
    p.add_argument('--world', type=int, default=2)
    p.add_argument('--layers', type=int, default=4)
    p.add_argument('--experts', type=int, default=16)
    p.add_argument('--dim', type=int, default=256)
    p.add_argument('--ffn', type=int, default=1024)
    p.add_argument('--tokens', type=int, default=2048, help='per worker')
    p.add_argument('--vocab', type=int, default=8000)
    p.add_argument('--reps', type=int, default=9)
    p.add_argument('--threads', type=int, default=2, help='CPU threads shared by the workers')
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix='parlai_hash_ep_')
    out = os.path.join(tmp, 'result.pt')
    mp.spawn(worker, args=(args.world, f'file://{tmp}/rdv', args, out), nprocs=args.world, join=True)
    r = torch.load(out, weights_only=False)
    base = r['hash-shared']
    print(f'Expert parallelism, {args.world} gloo workers, {args.layers} sparse layers of K={args.experts} '
          f'(d={args.dim}, D={args.ffn}), {args.tokens} Zipf tokens per worker, fwd+bwd per step, '
          f'median of {args.reps} interleaved steps, torch {torch.__version__}.\n')
    print('| routing | ms per step | x hash (shared plan) |')
    print('|---|---|---|')
    for k in ('hash-shared', 'hash-per-layer', 'switch'):
        print(f'| {k} | {r[k]:.1f} | {r[k] / base:.2f}x |')
    print(f"\nBuilding one plan (sort + count exchange) takes {r['plan']:.2f} ms; a shared plan saves "
          f"{args.layers - 1} of them per step ({(args.layers - 1) * r['plan']:.1f} ms).")


if __name__ == '__main__':
    main()
