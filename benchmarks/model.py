"""End-to-end speed: training tokens/s and generation latency of whole small models.

Trains a fixed small encoder-decoder for N steps and generates M replies, for
a dense baseline and the sparse agents with one sparse layer of K experts
(hash 1xK, switch 1xK, BASE 1xK) at the same compute per token, and prints
both as ratios to dense, measured in one run, interleaved round-robin:

    .venv/bin/python -m benchmarks.model            # full (a few minutes)
    .venv/bin/python -m benchmarks.model --quick

Batches are synthetic but shaped like the paper's training data (its
appendix B: batch 40, context and label truncated at 128): Zipf-distributed
token ids (so hash routing sees a realistic skew), contexts and labels of
varied lengths up to 128 with padding. Every generated reply has exactly the
same length (min = max length), so latency compares equal work. Switch runs
twice: at its default capacity factor 1.25 (it drops tokens over capacity) and
dropless. The table says how much of the expert work each sparse model really
did: in these first steps of training Switch's router sends most tokens to a
few experts (ParlAI's hidden states share a large common direction at
initialisation), so at capacity 1.25 its experts compute a small share of the
tokens, and dropless it runs nearly one large GEMM.

Ratios to dense are paired: each round runs every model on the same batch (or
prompt) back to back, and the table gives the median per-round ratio with a
95% confidence interval of that median, so a noisy machine shows as a wide
interval instead of a false verdict.

All models are measured in one process under the retained-malloc settings of
``benchmarks/malloc.py`` (``--malloc-default`` keeps glibc's).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.malloc import maybe_reexec

THREADS = 2
MODELS = {
    'dense': ['-m', 'transformer/generator'],
    'hash': ['-m', 'hash_generator', '--hash-type', 'balanced'],
    'switch': ['-m', 'switch_generator', '--capacity-factor', '1.25'],
    'switch-dropless': ['-m', 'switch_generator', '--capacity-factor', '0'],
    'base': ['-m', 'base_generator'],
}


def build_dictionary(path: str, vocab: int) -> torch.Tensor:
    """A dictionary of ``vocab`` words with Zipf counts; returns sampling probs."""
    from parlai.core.dict import DictionaryAgent
    from parlai.core.params import ParlaiParser

    parser = ParlaiParser(True, False)
    DictionaryAgent.add_cmdline_args(parser, partial_opt=None)
    d = DictionaryAgent(parser.parse_args(['--dict-file', path]))
    probs = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    for i, p in enumerate(probs.tolist()):
        d.add_token(f'w{i}')
        d.freq[f'w{i}'] = int(1e6 * p) + 1
    d.save(path, sort=False)
    full = torch.zeros(len(d), dtype=torch.float64)
    for i, p in enumerate(probs.tolist()):
        full[d[f'w{i}']] = p
    return full / full.sum()


def make_agent(kind: str, dict_file: str, args: argparse.Namespace, extra: Sequence[str] = ()):
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    argv = [
        *MODELS[kind], '-t', 'integration_tests', '--dict-file', dict_file,
        '--n-layers', str(args.layers), '--embedding-size', str(args.dim),
        '--ffn-size', str(args.ffn), '--n-heads', '4', '--optimizer', 'adam', '-lr', '1e-4',
        '-bs', str(args.batch), '--skip-generation', 'false', '--inference', 'greedy',
        '--beam-min-length', str(args.reply_len), '--n-positions', '512',
    ]
    if kind != 'dense':
        argv += ['--num-experts', str(args.experts), '--sparse-layers', str(args.layers // 2)]
    argv += list(extra)
    return create_agent(ParlaiParser(True, True).parse_args(argv))


def make_batches(agent, probs: torch.Tensor, args: argparse.Namespace, n: int, bsz: int):
    from parlai.core.torch_agent import Batch

    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(n):
        ctx_len = torch.randint(args.context // 2, args.context + 1, (bsz,), generator=gen)
        lab_len = torch.randint(args.label // 2, args.label + 1, (bsz,), generator=gen)
        text = torch.zeros(bsz, int(ctx_len.max()), dtype=torch.long)
        label = torch.zeros(bsz, int(lab_len.max()), dtype=torch.long)
        for i in range(bsz):
            text[i, : ctx_len[i]] = torch.multinomial(probs, int(ctx_len[i]), True, generator=gen)
            label[i, : lab_len[i]] = torch.multinomial(probs, int(lab_len[i]), True, generator=gen)
            label[i, lab_len[i] - 1] = agent.END_IDX
        batches.append(Batch(batchsize=bsz, text_vec=text, label_vec=label,
                             valid_indices=torch.arange(bsz), observations=[{}] * bsz))
    return batches


def real_tokens(batch) -> int:
    return int((batch.text_vec != 0).sum() + (batch.label_vec != 0).sum())


def train_seconds(agent, batch) -> float:
    agent.model.train()
    t0 = time.perf_counter()
    agent.train_step(batch)
    seconds = time.perf_counter() - t0
    agent.reset_metrics()
    agent._local_metrics = {}
    return seconds


def expert_work(agent) -> Optional[Tuple[float, float]]:
    """Of the last training step's sparse layers: the share of real tokens an
    expert computed (Switch drops tokens over capacity), and the load max/mean."""
    layers = getattr(agent.model, 'sparse_ffns', lambda: {})()
    if not layers:
        return None
    computed, imbalance = [], []
    for layer in layers.values():
        stats = layer.last_route.stats if layer.last_route is not None else {}
        computed.append(1.0 - stats.get('dropped', 0.0))
        # the step's own tokens, from its route (the agent's metrics took the layer's counts)
        load = torch.bincount(layer.last_route.experts[layer.routing.mask].flatten(),
                              minlength=layer.num_experts).float()
        imbalance.append(float(load.max() / load.mean().clamp_min(1e-9)))
    return statistics.mean(computed), statistics.mean(imbalance)


def reply_seconds(agent, batch, reply_len: int) -> float:
    agent.model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        hyps, _ = agent._generate(batch, beam_size=1, max_ts=reply_len)
    seconds = time.perf_counter() - t0
    return seconds


def paired_ratio(results: Dict[str, Dict[str, object]], metric: str, base: str,
                 k: str) -> Tuple[float, float, float]:
    """``median_ci`` of the per-round ratios ``k / base`` of ``metric``'s samples:
    each round runs every model on the same batch back to back, so machine-wide
    slow spells cancel out of the ratio."""
    return median_ci([a / b for a, b in zip(results[k][metric], results[base][metric])])


def median_ci(values: List[float], level: float = 0.95) -> Tuple[float, float, float]:
    """``(low, median, high)``: the median and a distribution-free confidence
    interval for it (order statistics, binomial tails); with too few values
    for ``level`` the interval is the whole range."""
    x = sorted(values)
    n = len(x)
    tail = (1.0 - level) / 2
    # Largest j with P(Binomial(n, 1/2) <= j - 1) <= tail: [x_(j), x_(n+1-j)] covers the median.
    j, below = 0, 0.0
    while j < n:
        below_next = below + math.comb(n, j) / 2**n
        if below_next > tail:
            break
        below, j = below_next, j + 1
    j = max(j, 1)
    return x[j - 1], statistics.median(x), x[n - j]


def run(args: argparse.Namespace) -> Dict[str, Dict[str, object]]:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix='parlai_hash_bench_')
    dict_file = os.path.join(tmp, 'bench.dict')
    probs = build_dictionary(dict_file, args.vocab)
    agents = {k: make_agent(k, dict_file, args) for k in args.models}
    any_agent = next(iter(agents.values()))
    train_batches = make_batches(any_agent, probs, args, args.steps, args.batch)
    prompts = make_batches(any_agent, probs, args, args.replies, 1)
    for agent in agents.values():  # warm-up: one step and one reply each
        train_seconds(agent, train_batches[0])
        reply_seconds(agent, prompts[0], args.reply_len)
    train = {k: [] for k in agents}  # tokens/s per round
    reply = {k: [] for k in agents}  # seconds per reply
    work = {k: [] for k in agents}
    names = list(agents)
    for r, batch in enumerate(train_batches):
        for k in names[r % len(names):] + names[: r % len(names)]:
            train[k].append(real_tokens(batch) / train_seconds(agents[k], batch))
            work[k].append(expert_work(agents[k]))
    for r, prompt in enumerate(prompts):
        for k in names[r % len(names):] + names[: r % len(names)]:
            reply[k].append(reply_seconds(agents[k], prompt, args.reply_len))
    results: Dict[str, Dict[str, object]] = {}
    for k, agent in agents.items():
        r: Dict[str, object] = {
            'train_tok_s': statistics.median(train[k]),
            'reply_ms': 1e3 * statistics.median(reply[k]),
            'params': sum(p.numel() for p in agent.model.parameters() if p.requires_grad),
            'train_samples': train[k],
            'reply_samples': reply[k],
        }
        if work[k][0] is not None:
            r['computed'] = statistics.mean(w[0] for w in work[k])
            r['load_max_mean'] = statistics.mean(w[1] for w in work[k])
        results[k] = r
    return results


def _ratio(results, metric: str, base: str, k: str) -> str:
    low, median, high = paired_ratio(results, metric, base, k)
    return f'{median:.2f}x [{low:.2f}-{high:.2f}]'


def table(results: Dict[str, Dict[str, object]], args: argparse.Namespace) -> str:
    has_dense = 'dense' in results
    lines = [
        f'Whole model, d={args.dim} D={args.ffn} {args.layers}+{args.layers} layers, sparse layer '
        f'{args.layers // 2} with K={args.experts}, batch {args.batch}, context <={args.context}, '
        f'label <={args.label}, replies of {args.reply_len} tokens, {THREADS} threads, torch '
        f'{torch.__version__}; {args.steps} train steps and {args.replies} greedy replies per model, '
        f'interleaved; malloc ' + ('glibc defaults' if args.malloc_default else 'retained') + '.',
        '',
        '| model | trainable params | train tok/s | x dense [95% CI] | ms per reply | '
        'x dense [95% CI] | tokens computed by experts | expert load max/mean |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for k, r in results.items():
        tr = _ratio(results, 'train_samples', 'dense', k) if has_dense else '-'
        # latency: the ratio of seconds, k over dense
        lat = _ratio(results, 'reply_samples', 'dense', k) if has_dense else '-'
        computed = f"{100 * r['computed']:.0f}%" if 'computed' in r else '-'
        load = f"{r['load_max_mean']:.1f}" if 'load_max_mean' in r else '-'
        lines.append(f"| {k} | {r['params']:,} | {r['train_tok_s']:.0f} | {tr} | "
                     f"{r['reply_ms']:.0f} | {lat} | {computed} | {load} |")
    lines += ['', 'x dense: median of per-round ratios (every model trains on the same batch, or '
                  'answers the same prompt, back to back in each round) and a 95% confidence '
                  'interval of that median (order statistics). '
                  'Tokens computed and load: mean over the timed training steps.']
    if has_dense and 'hash' in results:
        lines += [''] + verdict(results)
    return '\n'.join(lines)


def verdict(results: Dict[str, Dict[str, object]]) -> List[str]:
    """The issue's CPU targets, each with the run's evidence."""
    def ratio(metric: str, base: str, k: str) -> Tuple[float, float, float]:
        return paired_ratio(results, metric, base, k)

    def judged(q: Tuple[float, float, float], ok) -> str:
        if ok(q[0]) and ok(q[2]):
            return 'met'
        if not ok(q[0]) and not ok(q[2]):
            return 'NOT met'
        return f"not settled by this run (median {'met' if ok(q[1]) else 'NOT met'}; its 95% CI spans the target)"

    out = []
    q = ratio('train_samples', 'dense', 'hash')
    out.append(f'target: hash training >= 0.9x dense tokens/s: {judged(q, lambda v: v >= 0.9)}')
    s = results.get('switch')
    if s is not None:
        q = ratio('train_samples', 'switch', 'hash')
        line = f'target: hash training >= switch tokens/s (hash/switch {q[1]:.2f}x): {judged(q, lambda v: v >= 1.0)}'
        if s.get('computed', 1.0) < 0.9:
            line += (f"; note: switch's experts computed only {100 * s['computed']:.0f}% of the tokens "
                     "(its router sent most tokens to a few experts, whose capacity dropped the rest)")
        out.append(line)
    q = ratio('reply_samples', 'dense', 'hash')
    out.append(f'target: hash generation <= 1.1x dense latency: {judged(q, lambda v: v <= 1.1)}')
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='python -m benchmarks.model', description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true', help='few steps and replies')
    p.add_argument('--models', default=','.join(MODELS), help='comma separated, from ' + ','.join(MODELS))
    p.add_argument('--steps', type=int, default=None)
    p.add_argument('--replies', type=int, default=None)
    p.add_argument('--experts', type=int, default=64)
    p.add_argument('--dim', type=int, default=256)
    p.add_argument('--ffn', type=int, default=1024)
    p.add_argument('--layers', type=int, default=4)
    p.add_argument('--batch', type=int, default=40)
    p.add_argument('--context', type=int, default=128)
    p.add_argument('--label', type=int, default=128, help='training label length (at most)')
    p.add_argument('--malloc-default', action='store_true', help='keep glibc malloc defaults')
    p.add_argument('--reply-len', type=int, default=20)
    p.add_argument('--vocab', type=int, default=8000)
    a = p.parse_args(argv)
    a.models = [m for m in a.models.split(',') if m]
    unknown = set(a.models) - set(MODELS)
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)}; choose from {','.join(MODELS)}")
    a.steps = a.steps or (4 if a.quick else 16)
    a.replies = a.replies or (3 if a.quick else 20)
    return a


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    maybe_reexec(args.malloc_default)
    import logging

    from parlai.utils import logging as parlai_logging

    parlai_logging.set_log_level(logging.WARNING)  # keep the table readable
    results = run(args)
    print(table(results, args))


if __name__ == '__main__':
    main()
