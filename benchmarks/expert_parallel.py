"""What a routing plan known in advance saves under expert parallelism.

W CPU processes (gloo) each hold K/W experts of L sparse layers and train on
their own T tokens. Timed per training step (forward + backward of the L
layers, interleaved, medians):

- hash, shared plan: the plan (sort + one count exchange) is built once per
  batch from the token ids and reused by every layer sharing the table;
- hash, plan per layer: the same routing, rebuilt in every layer;
- switch: the router runs on each layer's hidden state, so each layer must
  build its own plan after it.

Before timing, every kind's step is checked against the same layers run in one
process (full experts, every worker's tokens): output, input gradient, expert
weight gradients and (switch) router gradients must agree.

    .venv/bin/python -m benchmarks.expert_parallel [--world 2] [--layers 4] ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Dict, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.dispatch import rel_err
from parlai_hash.dispatch import DispatchPlan
from parlai_hash.experts import ExpertFFN
from parlai_hash.parallel.exchange import Exchange
from parlai_hash.parallel.sharded_experts import ShardedExpertFFN, expert_block
from parlai_hash.routing import RoutingContext, SwitchRouter

KINDS = ['hash-shared', 'hash-per-layer', 'switch']
#: float32 throughout; the two sides differ only in how rows are grouped into GEMMs and sums.
CHECK_RTOL = 1e-5


def step(kind: str, layers, routers, x: torch.Tensor, tokens: torch.Tensor, table: torch.Tensor,
         K: int) -> torch.Tensor:
    """One training step (fwd + bwd) of the L expert-parallel layers; returns the output."""
    keep = torch.ones_like(tokens, dtype=torch.bool)
    # A shared plan keeps its exchange of counts: the layers after the first reuse it.
    shared = DispatchPlan.from_experts(table[tokens], K, keep=keep) if kind == 'hash-shared' else None
    h = x
    for layer, router in zip(layers, routers):
        if kind == 'switch':
            route = router(RoutingContext.full(tokens, pad_idx=-1), h)
            h = h + layer(h, DispatchPlan.from_experts(route.experts, K, keep=keep), route.gates)
        else:
            h = h + layer(h, shared or DispatchPlan.from_experts(table[tokens], K, keep=keep))
    h.sum().backward()
    return h.detach()


def reference(kind: str, full: Sequence[ExpertFFN], routers, x: torch.Tensor, tokens: torch.Tensor,
              table: torch.Tensor, K: int) -> torch.Tensor:
    """``step`` in one process: every expert local, no exchange."""
    h = x
    for layer, router in zip(full, routers):
        if kind == 'switch':
            route = router(RoutingContext.full(tokens, pad_idx=-1), h)
            h = h + layer(h, DispatchPlan.from_experts(route.experts, K), route.gates)
        else:
            h = h + layer(h, DispatchPlan.from_experts(table[tokens], K))
    h.sum().backward()
    return h.detach()



def grad_or_zero(p: torch.Tensor) -> torch.Tensor:
    """A parameter's gradient; None (experts that received no token) reads as 0."""
    return torch.zeros_like(p) if p.grad is None else p.grad


def check(layers, full, routers, x: torch.Tensor, tokens: torch.Tensor, table: torch.Tensor, K: int,
          rank: int, world: int) -> Dict[str, float]:
    """Warm-up step of every kind, asserting it matches ``reference`` on every worker's
    tokens: output and input gradient (this worker's rows), expert gradients (this
    worker's shard) and router gradients (summed over workers). A collective: every
    worker raises if any disagrees."""
    xs, ts = [torch.empty_like(x) for _ in range(world)], [torch.empty_like(tokens) for _ in range(world)]
    dist.all_gather(xs, x.detach())
    dist.all_gather(ts, tokens)
    T = x.shape[1]
    mine = slice(rank * T, (rank + 1) * T)
    errs: Dict[str, float] = {}
    for kind in KINDS:
        for m in [*layers, *full, *routers]:
            m.zero_grad(set_to_none=True)
        x.grad = None
        y = step(kind, layers, routers, x, tokens, table, K)
        dx = x.grad
        router_grads = []
        for r in routers:  # data-parallel: the reference's gradient is the sum over workers
            g = r.router_weight.grad
            g = torch.zeros_like(r.router_weight) if g is None else g.clone()
            dist.all_reduce(g)
            router_grads.append(g)
            r.zero_grad(set_to_none=True)
        x_all = torch.cat(xs, dim=1).requires_grad_(True)
        y_ref = reference(kind, full, routers, x_all, torch.cat(ts, dim=1), table, K)
        errs[f'{kind} y'] = rel_err(y, y_ref[:, mine])
        errs[f'{kind} dx'] = rel_err(dx, x_all.grad[:, mine])
        errs[f'{kind} dexperts'] = max(
            rel_err(grad_or_zero(dict(local.named_parameters())[name]),
                    expert_block(grad_or_zero(p), rank, world))
            for local, whole in zip(layers, full) for name, p in whole.named_parameters()
        )
        if kind == 'switch':
            errs[f'{kind} drouter'] = max(
                rel_err(g, r.router_weight.grad) for g, r in zip(router_grads, routers))
    for m in [*layers, *full, *routers]:
        m.zero_grad(set_to_none=True)
    x.grad = None
    worst = torch.tensor([v if v == v else float('inf') for v in errs.values()])  # NaN -> inf
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    errs = dict(zip(errs, worst.tolist()))
    bad = {k: v for k, v in errs.items() if not v < CHECK_RTOL}
    if bad:
        raise AssertionError(f'expert-parallel step disagrees with the single-process layers '
                             f'(relative error > {CHECK_RTOL}): {bad}')
    return errs


def plan_ms(table: torch.Tensor, tokens: torch.Tensor, K: int, reps: int = 20) -> float:
    keep = torch.ones_like(tokens, dtype=torch.bool)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(reps):
        Exchange.build(DispatchPlan.from_experts(table[tokens], K, keep=keep), None, tokens.device)
    return 1e3 * (time.perf_counter() - t0) / reps


def worker(rank: int, world: int, init: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(max(1, args.threads // world))
    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        K = args.experts
        full = [ExpertFFN(K, args.dim, args.ffn) for _ in range(args.layers)]  # the same on every worker
        layers = [ShardedExpertFFN(f, rank, world) for f in full]
        routers = [SwitchRouter(args.dim, K, args.vocab, capacity_factor=0.0) for _ in range(args.layers)]
        table = torch.randint(K, (args.vocab,))
        gen = torch.Generator().manual_seed(rank)
        probs = 1.0 / torch.arange(1, args.vocab + 1, dtype=torch.float)
        tokens = torch.multinomial(probs, args.tokens, True, generator=gen).unsqueeze(0)
        x = torch.randn(1, args.tokens, args.dim, generator=gen, requires_grad=True)
        kinds = KINDS
        times = {k: [] for k in kinds}
        errs = check(layers, full, routers, x, tokens, table, K, rank, world)  # doubles as warm-up
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
        result['check'] = max(errs.values())
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
    print(f"check ok: every routing's expert-parallel step matches the single-process layers "
          f"(output, input, expert and router gradients; worst rel err {r['check']:.1e} < {CHECK_RTOL})\n")
    print('| routing | ms per step | x hash (shared plan) |')
    print('|---|---|---|')
    for k in KINDS:
        print(f'| {k} | {r[k]:.2f} | {r[k] / base:.2f}x |')
    print(f"\nBuilding one plan (sort + count exchange) takes {r['plan']:.2f} ms; a shared plan saves "
          f"{args.layers - 1} of them per step ({(args.layers - 1) * r['plan']:.1f} ms).")


if __name__ == '__main__':
    main()
