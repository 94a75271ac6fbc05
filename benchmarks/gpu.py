"""GPU speed: hash layer vs a dense FFN of the same compute, and whole-model tokens/s.

    .venv/bin/python -m benchmarks.gpu                 # on a CUDA machine, bf16
    .venv/bin/python -m benchmarks.gpu --device cpu --quick   # smoke run anywhere

Layer: forward+backward of one sparse FFN (K experts of d x D, every token to
one expert, Zipf token ids through a balanced hash table) against one dense
FFN d x D, the same FLOPs per token, with each GEMM kernel of
``parlai_hash.grouped_gemm`` (``grouped_mm``: torch's grouped GEMM; ``loop``:
one GEMM per expert). Ratio = dense time / sparse time (1.0 = as fast as dense).

Model: training tokens/s of a dense encoder-decoder and of hash 1xK (one
sparse decoder layer) through the real ParlAI agents, on the device, in the
given dtype (ParlAI's ``--fp16`` with ``--fp16-dtype``), as a ratio to dense.

Check: before timing, each sparse variant's warm-up call (the very function
that is timed) must give the output and input gradient of a float32 copy of the
layer, and grouped_mm and loop each other's, within a relative-norm bound fit
for the dtype (bf16 rounding flips ReLU signs near zero, so no elementwise bound).

Timing: CUDA events around each call after warm-up, variants interleaved
round-robin, medians.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from benchmarks.dispatch import rel_err, zipf_probs
from parlai_hash.dispatch import DispatchPlan
from parlai_hash.experts import ExpertFFN
from parlai_hash.grouped_gemm import grouped_mm_available, has_fast_grouped_mm
from parlai_hash.routing.hash_functions import HASH_TYPES, TableInputs


#: Bound on ||got - ref|| / ||ref|| per dtype. Low precision: rounding of inputs,
#: weights and the hidden layer (and ReLU signs flipped by it) gives about 1e-2.
CHECK_RTOL = {torch.bfloat16: 5e-2, torch.float16: 5e-2, torch.float32: 1e-3}



def check_sparse(steps: Dict[str, Callable[[], Optional[torch.Tensor]]], moe: ExpertFFN,
                 x: torch.Tensor, plan: DispatchPlan, grad: torch.Tensor) -> Dict[str, float]:
    """Warm-up call of each sparse step, asserting its output and ``x.grad`` match a
    float32 copy of ``moe`` (loop kernel), and the kernels match each other."""
    ref = copy.deepcopy(moe).float()
    ref.gemm = 'loop'
    x32 = x.detach().float().requires_grad_(True)
    y_ref = ref(x32, plan)
    y_ref.backward(grad.float())
    got = {}
    for name, fn in steps.items():
        x.grad = None
        y = fn()
        got[name] = (None if y is None else y.detach(), x.grad)
    x.grad = None
    errs = {}
    for name, (y, dx) in got.items():
        errs[f'{name} y'] = rel_err(y, y_ref)
        errs[f'{name} dx'] = rel_err(dx, x32.grad)
    if 'grouped_mm' in got and 'loop' in got:
        (y_g, dx_g), (y_l, dx_l) = got['grouped_mm'], got['loop']
        errs['grouped_mm vs loop y'] = rel_err(y_g, y_l) if y_l is not None else float('inf')
        errs['grouped_mm vs loop dx'] = rel_err(dx_g, dx_l) if dx_l is not None else float('inf')
    bound = CHECK_RTOL[x.dtype]
    bad = {k: v for k, v in errs.items() if not v < bound}  # `not <` also catches NaN
    assert not bad, f'sparse kernels disagree (relative error >= {bound} in {x.dtype}): {bad}'
    return errs


def _timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    if device.type == 'cuda':
        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
    else:
        def timed(fn):
            t0 = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - t0)
    return timed


def round_robin(variants: Dict[str, Callable[[], None]], reps: int, device: torch.device,
                warmup: int = 3) -> Dict[str, float]:
    """Median milliseconds per call of each variant, calls interleaved."""
    timed = _timer(device)
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: Dict[str, List[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(reps):
        for k in names[r % len(names):] + names[: r % len(names)]:
            samples[k].append(timed(variants[k]))
    return {k: statistics.median(v) for k, v in samples.items()}


def layer_rows(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> List[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for k in args.ks:
        probs = zipf_probs(args.vocab, gen)
        tokens = torch.multinomial(probs, args.tokens, True, generator=gen)
        inputs = TableInputs(vocab_size=args.vocab, n_positions=1, token_counts=probs)
        table = HASH_TYPES['balanced'](k, 0).build_table(inputs)
        experts = table[tokens].to(device)
        plan = DispatchPlan.from_experts(experts, k)
        x = torch.randn(args.tokens, args.dim, device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn(args.tokens, args.dim, device=device, dtype=dtype)
        dense = nn.Sequential(nn.Linear(args.dim, args.ffn), nn.ReLU(), nn.Linear(args.ffn, args.dim))
        dense = dense.to(device=device, dtype=dtype)
        moe = ExpertFFN(k, args.dim, args.ffn).to(device=device, dtype=dtype)

        # Gradients set to None each call, as training's zero_grad does: accumulating
        # into K experts' gradients would add traffic the dense layer does not have.
        def dense_step():
            x.grad = None
            dense.zero_grad(set_to_none=True)
            dense(x).backward(grad)

        def sparse_step(backend):
            def step():
                x.grad = None
                moe.zero_grad(set_to_none=True)
                moe.gemm = backend
                y = moe(x, plan)
                y.backward(grad)
                return y
            return step

        sparse = {'loop': sparse_step('loop')}
        if grouped_mm_available(device, dtype):  # fused or torch's fallback: see report()
            sparse['grouped_mm'] = sparse_step('grouped_mm')
        errs = check_sparse(sparse, moe, x, plan, grad)
        ms = round_robin({'dense': dense_step, **sparse}, args.reps, device)
        rows.append({'K': k, 'T': args.tokens, 'dense_ms': ms['dense'],
                     'grouped_mm_ms': ms.get('grouped_mm'), 'loop_ms': ms['loop'],
                     'load_max': max(plan.counts) * k / args.tokens, 'check': errs})
    return rows


def model_rows(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> Dict[str, float]:
    """Training tokens/s of dense and hash 1xK through ParlAI's agents."""
    import os
    import tempfile

    from benchmarks import model as whole

    margs = whole.parse_args([
        '--models', 'dense,hash', '--experts', str(args.ks[0]), '--dim', str(args.dim),
        '--ffn', str(args.ffn), '--layers', str(args.layers), '--batch', str(args.batch),
        '--steps', str(args.steps), '--replies', '1'])
    dict_file = os.path.join(tempfile.mkdtemp(prefix='parlai_hash_gpu_'), 'bench.dict')
    probs = whole.build_dictionary(dict_file, args.vocab)
    agents = {}
    for kind in margs.models:
        extra = ['--no-cuda'] if device.type != 'cuda' else []
        if device.type == 'cuda' and dtype != torch.float32:
            extra += ['--fp16', 'true', '--fp16-impl', 'mem_efficient']
        agent = whole.make_agent(kind, dict_file, margs, extra)
        agent.model.to(dtype)  # dense has no --fp16-dtype: the same dtype for both
        agents[kind] = agent
    batches = whole.make_batches(next(iter(agents.values())), probs, margs, args.steps, args.batch)
    for b in batches:
        b.text_vec, b.label_vec = b.text_vec.to(device), b.label_vec.to(device)
    timed = _timer(device)

    def step(agent, batch):
        agent.train_step(batch)
        agent.reset_metrics()
        agent._local_metrics = {}

    tok_s: Dict[str, List[float]] = {k: [] for k in agents}
    for agent in agents.values():
        timed(lambda a=agent: step(a, batches[0]))  # warm-up
    names = list(agents)
    for r, batch in enumerate(batches):
        for k in names[r % len(names):] + names[: r % len(names)]:
            ms = timed(lambda a=agents[k], b=batch: step(a, b))
            tok_s[k].append(whole.real_tokens(batch) / (ms / 1e3))
    return {k: statistics.median(v) for k, v in tok_s.items()}


def report(args, device, dtype, layers: List[dict], model: Optional[Dict[str, float]]) -> str:
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    lines = [f'Device: {name}; dtype {str(dtype).replace("torch.", "")}; torch {torch.__version__}; '
             f'd={args.dim} D={args.ffn}; medians of {args.reps} interleaved fwd+bwd calls.', '',
             '| K | T | dense ms | grouped_mm ms (x dense) | loop ms (x dense) | load max/mean |',
             '|---|---|---|---|---|---|']
    def cell(r, kernel):
        ms = r[f'{kernel}_ms']
        return 'n/a (does not run here)' if ms is None else f"{ms:.2f} ({r['dense_ms'] / ms:.2f}x)"

    for r in layers:
        lines.append(f"| {r['K']} | {r['T']} | {r['dense_ms']:.2f} | {cell(r, 'grouped_mm')} | "
                     f"{cell(r, 'loop')} | {r['load_max']:.2f} |")
    kernel = ("torch's fused kernel (what --expert-gemm auto picks)" if has_fast_grouped_mm(device, dtype) else
              "torch's fallback, a loop over groups (on CUDA after copying the offsets to the host); "
              "auto picks loop here")
    lines += ['', f'grouped_mm here: {kernel}.']
    kernels = ' and '.join(k for k in ('grouped_mm', 'loop') if any(r[f'{k}_ms'] is not None for r in layers))
    worst = max((v for r in layers for v in r['check'].values()), default=float('nan'))
    lines += ['', f'check ok: {kernels} match a float32 copy of the layer and each other, output and '
                  f'input gradient (worst relative norm error {worst:.1e} < {CHECK_RTOL[dtype]:g} '
                  f'for {str(dtype).replace("torch.", "")}).']
    if model:
        lines += ['', f"Whole model (d={args.dim}, {args.layers}+{args.layers} layers, batch {args.batch}, "
                      f"hash 1x{args.ks[0]}): train tok/s dense {model['dense']:.0f}, hash "
                      f"{model['hash']:.0f} ({model['hash'] / model['dense']:.2f}x dense)"]
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='python -m benchmarks.gpu', description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--dtype', default='bfloat16', choices=['bfloat16', 'float16', 'float32'])
    p.add_argument('--ks', default='64,128')
    p.add_argument('--tokens', type=int, default=16384)
    p.add_argument('--dim', type=int, default=1024)
    p.add_argument('--ffn', type=int, default=4096)
    p.add_argument('--reps', type=int, default=20)
    p.add_argument('--vocab', type=int, default=8000)
    p.add_argument('--layers', type=int, default=4, help='model: layers each side')
    p.add_argument('--batch', type=int, default=40, help='model: batch size')
    p.add_argument('--steps', type=int, default=20, help='model: timed train steps per model')
    p.add_argument('--no-model', action='store_true', help='layer table only')
    p.add_argument('--quick', action='store_true', help='tiny sizes (a smoke run)')
    a = p.parse_args(argv)
    a.ks = [int(v) for v in a.ks.split(',') if v]
    if a.quick:
        a.tokens, a.dim, a.ffn, a.reps, a.steps, a.batch, a.layers = 512, 64, 256, 2, 2, 4, 2
        a.ks = [8]
    return a


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu: no CUDA device here (use --device cpu for a smoke run)")
    dtype = getattr(torch, args.dtype)
    import logging

    from parlai.utils import logging as parlai_logging

    parlai_logging.set_log_level(logging.WARNING)
    layers = layer_rows(args, device, dtype)
    model = None if args.no_model else model_rows(args, device, dtype)
    print(report(args, device, dtype, layers, model))


if __name__ == '__main__':
    main()
