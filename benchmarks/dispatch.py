"""Hash-layer dispatch throughput on CPU: the project's sorted path vs ParlAI's loop.

Times forward+backward of one hash-routed expert FFN (d=512, D=2048, float32,
2 threads) and prints one Markdown table of throughput ratios, each taken
against a dense FFN of the same compute measured in the same configuration:

    ratio = DENSE median / variant median      (1.0 = the compute floor)

Variants, timed round-robin within each (K, T) with the order rotated each round:

- DENSE: ``Linear(d, D) -> relu -> Linear(D, d)`` on all T tokens.
- HASH:  ``DispatchPlan.from_experts`` + ``ExpertFFN`` (plan building is timed).
- LOOP:  ParlAI ``projects/params_vs_compute/hash_ladder`` ``HashLayerFFN``
  dispatch: per expert ``(e == i).nonzero()``, gather, run, index-assign.
- SWITCH / BASE: the project's ``SparseFFN`` with the learned routers, in
  training mode, on the same expert weights and dispatch as HASH (only routing
  differs): the router's forward and backward, the gates, Switch's
  load-balancing loss, BASE's balanced assignment (auction) are all timed.
  Dropless (capacity factor 0), so every row computes every token once;
  ``switch-cf1.25`` is Switch at its default capacity factor, which skips the
  tokens over an expert's capacity (the table gives the share it drops).

Top-2 rows (a second table, by default at K=64, T=8192): each token runs k=2
experts of hidden D, so they are timed against DENSE-2D, a dense FFN of hidden
2·D (the same active compute), in their own round-robin with:

- hash-k1:           the k=1 path of the rows above (``DispatchPlan`` + ``ExpertFFN``);
- hash-k1-layer:     ``SparseFFN`` + ``HashRouter`` with k=1 (the layer a model runs),
  also paired round by round against hash-k1;
- hash-top2-uniform: ``SparseFFN`` + ``HashRouter``, a balanced top-2 table,
  ``--hash-gates uniform``;
- hash-top2-learned: the same with ``--hash-gates learned`` (scorer timed, fwd+bwd);
- switch-top2:       ``SparseFFN`` + ``SwitchRouter`` top-2, dropless.

All share the experts above. Each layer row gets a fresh ``RoutingContext``
per call, as in a model's forward pass, so its dispatch plan is built (and
timed) every call. Before timing, every top-2 and k=1 layer row is checked
against LOOP run once per choice and weighted by the router's own gates:
output, input gradient, expert and router gradients.

Run from the repository root:

    .venv/bin/python -m benchmarks.dispatch              # full grid, then top-2 (a few minutes)
    .venv/bin/python -m benchmarks.dispatch --quick      # T=2048, K=16,64, 3 reps; top-2 at T=2048
    .venv/bin/python -m benchmarks.dispatch --top2-only  # the top-2 table alone (K=64, T=8192)

Method and reference numbers: ../shared/DISPATCH_BENCH_NOTES.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from benchmarks.malloc import MALLOC_ENV, maybe_reexec
from benchmarks.model import median_ci
from parlai_hash.dispatch import DispatchPlan
from parlai_hash.experts import ExpertFFN
from parlai_hash.layers import SparseFFN
from parlai_hash.options import SparseConfig
from parlai_hash.routing import BalancedAssignmentRouter, HashRouter, RoutingContext, SwitchRouter
from parlai_hash.routing.hash_functions import HASH_TYPES, TableInputs

D_MODEL = 512
D_HIDDEN = 2048
VOCAB = 8008
THREADS = 2
SEED = 0
# 'even' is no token table: every expert gets exactly T/K tokens, the best case
# for any router, which separates dispatch cost from load imbalance.
TABLES = ('random', 'balanced', 'even')
# Learned routing, on the same experts: rows after the hash tables.
LEARNED = ('switch', 'switch-cf1.25', 'base')
CAPACITY = {'switch': 0.0, 'switch-cf1.25': 1.25}
ROW_ORDER = TABLES + LEARNED
DEFAULT_KS = (16, 64, 128)
DEFAULT_TS = (2048, 8192)
DEFAULT_REPS = 7
TARGET_K, TARGET_T, TARGET_RATIO = 64, 8192, 0.85
CHECK_RTOL = 1e-4

# Top-2 rows: k=2 experts of hidden D per token, against a dense FFN of hidden 2·D.
TOP2_KS, TOP2_TS = (64,), (8192,)
TOP2_TARGET = 0.8
TOP2_TABLE = 'balanced'  # --hash-type's default; the hash-k1 rows use its k=1 table
TOP2_ROWS = ('hash-k1', 'hash-k1-layer', 'hash-top2-uniform', 'hash-top2-learned', 'switch-top2')
#: the k=1 layer path is "no slower" than hash-k1 when its per-round speed ratio is at least this
K1_NO_SLOWER = 0.97
#: no token id, so every position is real (RoutingContext.mask is all True)
NO_PAD = -1

# /proc/stat counts in clock ticks; below a few ticks "foreign load" is rounding.
BG_NOISE_FLOOR_TICKS = 3
QUIET_WINDOW_S = 0.25
MAX_QUIET_WAIT_S = 10.0


# --------------------------------------------------------------------- setup


def zipf_probs(vocab: int, gen: torch.Generator) -> torch.Tensor:
    """Zipf(s=1) frequencies over shuffled token ids, so rank != id."""
    by_rank = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    by_rank /= by_rank.sum()
    ids = torch.randperm(vocab, generator=gen)
    probs = torch.empty_like(by_rank)
    probs[ids] = by_rank
    return probs


def build_tables(num_experts: int, counts: torch.Tensor) -> Dict[str, torch.Tensor]:
    """token id -> expert tables from the project's own hash registry."""
    inputs = TableInputs(vocab_size=VOCAB, n_positions=1, token_counts=counts)
    return {
        'random': HASH_TYPES['random'](num_experts, SEED).build_table(inputs),
        'balanced': HASH_TYPES['balanced'](num_experts, SEED).build_table(inputs),
    }


def even_experts(num_tokens: int, num_experts: int) -> torch.Tensor:
    """Exactly T/K tokens per expert, in a shuffled order."""
    gen = torch.Generator().manual_seed(SEED + num_experts)
    return (torch.arange(num_tokens) % num_experts)[torch.randperm(num_tokens, generator=gen)]


@dataclass
class Batch:
    """Inputs for one T, shared by every variant and every K."""

    tokens: torch.Tensor  # [T] token ids
    x: torch.Tensor  # [T, d] leaf that requires grad
    grad: torch.Tensor  # [T, d] incoming gradient


def make_batch(num_tokens: int, probs: torch.Tensor) -> Batch:
    gen = torch.Generator().manual_seed(SEED + num_tokens)
    tokens = torch.multinomial(probs, num_tokens, replacement=True, generator=gen)
    x = torch.randn(num_tokens, D_MODEL, generator=gen).requires_grad_(True)
    grad = torch.randn(num_tokens, D_MODEL, generator=gen)
    return Batch(tokens=tokens, x=x, grad=grad)


# ------------------------------------------------------------------ variants


def dense_ffn(hidden: Optional[int] = None) -> nn.Module:
    hidden = hidden or D_HIDDEN
    return nn.Sequential(nn.Linear(D_MODEL, hidden), nn.ReLU(), nn.Linear(hidden, D_MODEL))


class LoopFFN(nn.Module):
    """ParlAI hash_ladder ``HashLayerFFN`` dispatch (no residual, no LayerNorm)."""

    def __init__(self, num_experts: int, dim: int, dim_hidden: int):
        super().__init__()
        # skip_init: the HASH weights are copied in before any call.
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.utils.skip_init(nn.Linear, dim, dim_hidden),
                nn.ReLU(),
                nn.utils.skip_init(nn.Linear, dim_hidden, dim),
            )
            for _ in range(num_experts)
        )

    def forward(self, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0], x.shape[1])
        for i, expert in enumerate(self.experts):
            idx = (experts == i).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            out[idx] = expert(x[idx])
        return out


def dense_step(dense: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    y = dense(x)
    y.backward(grad)
    return y


def hash_step(
    moe: ExpertFFN, x: torch.Tensor, experts: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    plan = DispatchPlan.from_experts(experts, moe.num_experts)
    y = moe(x, plan)
    y.backward(grad)
    return y


def learned_ffn(kind: str, moe: ExpertFFN, num_tokens: int) -> SparseFFN:
    """A training-mode SparseFFN whose experts are ``moe`` (shared weights)."""
    K = moe.num_experts
    router = (SwitchRouter(D_MODEL, K, VOCAB, capacity_factor=CAPACITY[kind]) if kind in CAPACITY
              else BalancedAssignmentRouter(D_MODEL, K))
    ffn = SparseFFN(SparseConfig(K), kind, router, D_MODEL, D_HIDDEN)
    ffn.experts = moe
    ffn.routing = RoutingContext.full(torch.ones(1, num_tokens, dtype=torch.long), pad_idx=0)
    return ffn.train()


def learned_step(ffn: SparseFFN, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    y = ffn(x.unsqueeze(0))
    loss = (y * grad.unsqueeze(0)).sum()
    if ffn.last_route.aux_loss is not None:
        loss = loss + ffn.last_route.aux_loss
    loss.backward()
    return y


def loop_step(
    loop: LoopFFN, x: torch.Tensor, experts: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    y = loop(x, experts)
    y.backward(grad)
    return y


@dataclass
class Variant:
    name: str  # 'DENSE', 'HASH/random', 'LOOP/balanced', ...
    step: Callable[[], torch.Tensor]  # one fwd+bwd call
    modules: Sequence[nn.Module]  # whose grads are cleared before each call


# --------------------------------------------------------------- correctness


def copy_hash_into_loop(moe: ExpertFFN, loop: LoopFFN) -> None:
    """Give LOOP the same function as HASH (nn.Linear stores weight as [out, in])."""
    with torch.no_grad():
        for i, expert in enumerate(loop.experts):
            lin1, lin2 = expert[0], expert[2]
            lin1.weight.copy_(moe.expert_w1[i].t())
            lin1.bias.copy_(moe.expert_b1[i])
            lin2.weight.copy_(moe.expert_w2[i].t())
            lin2.bias.copy_(moe.expert_b2[i])


def rel_err(got: Optional[torch.Tensor], ref: torch.Tensor) -> float:
    """||got - ref|| / ||ref|| in float32; a missing tensor (no output, no gradient) is inf."""
    if got is None:
        return float('inf')
    got, ref = got.float(), ref.float()
    return ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def stacked_grad_err(
    stacked: torch.Tensor, per_expert: Sequence[nn.Parameter], transpose: bool
) -> float:
    """Frobenius relative error over all experts; an unused expert's grad is None = 0."""
    assert stacked.grad is not None
    num = den = 0.0
    for i, param in enumerate(per_expert):
        ref = param.grad if param.grad is not None else torch.zeros_like(param)
        ref = ref.t() if transpose else ref
        num += (stacked.grad[i] - ref).pow(2).sum().item()
        den += ref.pow(2).sum().item()
    return math.sqrt(num / max(den, 1e-60))


def clear_grads(modules: Sequence[nn.Module], x: torch.Tensor) -> None:
    for module in modules:
        module.zero_grad(set_to_none=True)
    x.grad = None


def check_hash_vs_loop(
    moe: ExpertFFN, loop: LoopFFN, batch: Batch, experts: torch.Tensor
) -> Dict[str, float]:
    """Warm-up call of HASH and LOOP, asserting both compute the same fwd and grads."""
    clear_grads([moe], batch.x)
    y_hash = hash_step(moe, batch.x, experts, batch.grad).detach()
    gx_hash = batch.x.grad
    clear_grads([loop], batch.x)
    y_loop = loop_step(loop, batch.x, experts, batch.grad).detach()
    gx_loop = batch.x.grad
    lin1 = [e[0] for e in loop.experts]
    lin2 = [e[2] for e in loop.experts]
    errs = {
        'y': rel_err(y_hash, y_loop),
        'dx': rel_err(gx_hash, gx_loop),
        'dw1': stacked_grad_err(moe.expert_w1, [m.weight for m in lin1], transpose=True),
        'db1': stacked_grad_err(moe.expert_b1, [m.bias for m in lin1], transpose=False),
        'dw2': stacked_grad_err(moe.expert_w2, [m.weight for m in lin2], transpose=True),
        'db2': stacked_grad_err(moe.expert_b2, [m.bias for m in lin2], transpose=False),
    }
    bad = {k: v for k, v in errs.items() if not v < CHECK_RTOL}  # `not <` also catches NaN
    assert not bad, f"HASH and LOOP disagree (relative error > {CHECK_RTOL}): {bad}"
    return errs


# -------------------------------------------------------------------- timing


@dataclass
class CpuSnapshot:
    busy_s: float  # all CPUs' non-idle time, seconds
    own_s: float  # this process's CPU time, seconds


class LoadMonitor:
    """Foreign CPU load during a call: machine busy time minus our own CPU time."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and os.path.exists('/proc/stat')
        self.tick_s = 1.0 / os.sysconf('SC_CLK_TCK') if self.enabled else 0.01

    def snapshot(self) -> CpuSnapshot:
        if not self.enabled:
            return CpuSnapshot(0.0, 0.0)
        with open('/proc/stat') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: idle/iowait/steal are not load
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
        return CpuSnapshot(busy * self.tick_s, time.process_time())

    def foreign_s(self, before: CpuSnapshot, after: CpuSnapshot) -> float:
        return max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s))

    def wait_quiet(self, max_s: float, threshold: float) -> float:
        """Sleep until one window shows less than ``threshold`` foreign cores."""
        start = time.perf_counter()
        while time.perf_counter() - start < max_s:
            before = self.snapshot()
            time.sleep(QUIET_WINDOW_S)
            if self.foreign_s(before, self.snapshot()) / QUIET_WINDOW_S < threshold:
                break
        return time.perf_counter() - start


@dataclass
class RetryPolicy:
    """Bounded re-runs of calls that overlapped foreign load; a total time budget."""

    threshold: float  # foreign load, in cores, above which a call is re-run
    max_retries: int  # per call
    budget_s: float  # total seconds for discarded calls plus waiting
    spent_s: float = 0.0
    rerun_calls: int = 0

    def allows(self, attempts: int) -> bool:
        return attempts < self.max_retries and self.spent_s < self.budget_s


@dataclass
class Sample:
    seconds: float
    bg: float  # foreign load during the kept call, in cores
    reruns: int
    noisy: bool  # kept although over the threshold (retries or budget ran out)


def timed_call(
    variant: Variant, x: torch.Tensor, monitor: LoadMonitor, policy: RetryPolicy
) -> Sample:
    attempts = 0
    while True:
        clear_grads(variant.modules, x)  # set_to_none: outside the timed region
        before = monitor.snapshot()
        t0 = time.perf_counter()
        out = variant.step()
        seconds = time.perf_counter() - t0
        after = monitor.snapshot()
        del out
        foreign = monitor.foreign_s(before, after)
        bg = foreign / seconds
        noisy = (
            monitor.enabled
            and bg > policy.threshold
            and foreign > BG_NOISE_FLOOR_TICKS * monitor.tick_s
        )
        if not (noisy and policy.allows(attempts)):
            return Sample(seconds, bg, attempts, noisy)
        attempts += 1
        policy.rerun_calls += 1
        wait_s = min(MAX_QUIET_WAIT_S, max(0.0, policy.budget_s - policy.spent_s))
        policy.spent_s += seconds + monitor.wait_quiet(wait_s, policy.threshold)
        if policy.spent_s >= policy.budget_s:
            log(f'bg re-run budget ({policy.budget_s:.0f} s) spent: later calls are kept as measured')


def round_robin(
    variants: Sequence[Variant],
    reps: int,
    x: torch.Tensor,
    monitor: LoadMonitor,
    policy: RetryPolicy,
) -> Dict[str, List[Sample]]:
    """Interleave so host speed drift hits every variant alike; rotate the order."""
    samples: Dict[str, List[Sample]] = {v.name: [] for v in variants}
    n = len(variants)
    for r in range(reps):
        for v in [*variants[r % n :], *variants[: r % n]]:
            samples[v.name].append(timed_call(v, x, monitor, policy))
    return samples


# ------------------------------------------------------------------- results


@dataclass
class Row:
    table: str
    K: int
    T: int
    dense_ms: float
    hash_ms: float
    loop_ms: Optional[float]
    load_max: int
    load_mean: float
    bg_max: float  # worst foreign load (cores) over this row's kept calls
    noisy_calls: int  # kept calls that were over the re-run threshold
    check: Dict[str, float]
    samples_ms: Dict[str, List[float]] = field(default_factory=dict)
    dropped: float = 0.0  # share of tokens no expert computed (Switch over capacity)

    @property
    def hash_ratio(self) -> float:
        return self.dense_ms / self.hash_ms

    @property
    def loop_ratio(self) -> Optional[float]:
        return None if self.loop_ms is None else self.dense_ms / self.loop_ms

    @property
    def speedup(self) -> Optional[float]:
        return None if self.loop_ms is None else self.loop_ms / self.hash_ms


def median_ms(samples: Sequence[Sample]) -> float:
    return 1e3 * statistics.median(s.seconds for s in samples)


def make_rows(
    K: int,
    T: int,
    samples: Dict[str, List[Sample]],
    experts: Dict[str, torch.Tensor],
    checks: Dict[str, Dict[str, float]],
    dropped: Optional[Dict[str, float]] = None,
) -> List[Row]:
    rows = []
    for table, e in experts.items():
        names = ['DENSE', f'HASH/{table}', f'LOOP/{table}']
        kept = [s for n in names for s in samples.get(n, [])]
        counts = torch.bincount(e, minlength=K)
        rows.append(
            Row(
                table=table,
                K=K,
                T=T,
                dense_ms=median_ms(samples['DENSE']),
                hash_ms=median_ms(samples[f'HASH/{table}']),
                loop_ms=median_ms(samples[names[2]]) if names[2] in samples else None,
                load_max=int(counts.max()),
                load_mean=T / K,
                bg_max=max(s.bg for s in kept),
                noisy_calls=sum(s.noisy for s in kept),
                check=checks.get(table, {}),
                samples_ms={n: [1e3 * s.seconds for s in samples[n]] for n in names if n in samples},
                dropped=(dropped or {}).get(table, 0.0),
            )
        )
    return rows


def fmt_ratio(ms: Optional[float], ratio: Optional[float]) -> str:
    return '—' if ms is None or ratio is None else f'{ms:.0f} ({ratio:.2f}x)'


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        '| routing | K | T | dense ms (tok/s) | sparse ms (ratio) | LOOP ms (ratio) '
        '| sparse/LOOP speed-up | load max/mean | bg % |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for r in sorted(rows, key=lambda r: (ROW_ORDER.index(r.table), r.K, r.T)):
        speedup = '—' if r.speedup is None else f'{r.speedup:.2f}x'
        lines.append(
            f'| {r.table} | {r.K} | {r.T} | {r.dense_ms:.0f} ({r.T / r.dense_ms * 1e3:.0f}) '
            f'| {fmt_ratio(r.hash_ms, r.hash_ratio)} | {fmt_ratio(r.loop_ms, r.loop_ratio)} '
            f'| {speedup} | {r.load_max}/{r.load_mean:.0f} = {r.load_max / r.load_mean:.2f}'
            f"{f' ({100 * r.dropped:.0f}% dropped)' if r.dropped else ''} | {100 * r.bg_max:.0f} |"
        )
    return '\n'.join(lines)


def target_line(rows: Sequence[Row]) -> str:
    head = f'target: HASH >= {TARGET_RATIO}x dense at K={TARGET_K}, T={TARGET_T}'
    hits = [r for r in rows if r.K == TARGET_K and r.T == TARGET_T and r.table in ('random', 'balanced')]
    if not hits:
        return f'{head}: not measured in this run (it is in the default grid).'
    verdicts = [
        f"{r.table} {r.hash_ratio:.2f}x: {'met' if r.hash_ratio >= TARGET_RATIO else 'NOT met'}"
        for r in hits
    ]
    overall = 'met' if all(r.hash_ratio >= TARGET_RATIO for r in hits) else 'NOT met'
    line = f"{head}: {overall} ({'; '.join(verdicts)})"
    switch = [r for r in rows if r.K == TARGET_K and r.T == TARGET_T and r.table == 'switch-cf1.25']
    balanced = [r for r in hits if r.table == 'balanced']
    if switch and balanced:
        h, sw = balanced[0].hash_ratio, switch[0].hash_ratio
        line += (f"\nHASH/balanced >= switch at capacity 1.25 (K={TARGET_K}, T={TARGET_T}): "
                 f"{'met' if h >= sw else 'NOT met'} ({h:.2f}x against {sw:.2f}x dense; "
                 f"switch skipped {100 * switch[0].dropped:.0f}% of the tokens)")
    return line


# ---------------------------------------------------------------------- main


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def int_list(text: str) -> List[int]:
    return [int(v) for v in text.split(',') if v]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog='python -m benchmarks.dispatch', description=__doc__.split('\n\n')[0]
    )
    p.add_argument('--quick', action='store_true', help='T=2048, K=16,64, 3 reps')
    p.add_argument('--reps', type=int, help=f'timed calls per variant (default {DEFAULT_REPS})')
    p.add_argument('--ks', type=int_list, help='experts, comma separated (default 16,64,128)')
    p.add_argument('--ts', type=int_list, help='tokens per batch, comma separated (default 2048,8192)')
    p.add_argument('--no-loop-balanced', action='store_true', help='time LOOP on the random table only')
    p.add_argument('--json', metavar='PATH', help='also write the results as JSON')
    p.add_argument('--malloc-default', action='store_true', help='keep glibc malloc defaults (no re-exec)')
    p.add_argument('--no-bg-check', action='store_true', help='do not re-run calls that overlapped other load')
    p.add_argument('--bg-threshold', type=float, default=0.10, help='foreign load (cores) that triggers a re-run')
    p.add_argument('--bg-retries', type=int, default=2, help='re-runs per call at most')
    p.add_argument('--bg-budget', type=float, help='seconds for re-runs and waiting in all (default 120, quick 30)')
    top2 = p.add_mutually_exclusive_group()
    top2.add_argument('--no-top2', action='store_true', help='skip the top-2 table')
    top2.add_argument('--top2-only', action='store_true', help='only the top-2 table (no --ks/--ts grid)')
    p.add_argument('--top2-ks', type=int_list, help='experts for the top-2 table (default 64)')
    p.add_argument('--top2-ts', type=int_list, help='tokens for the top-2 table (default 8192, quick 2048)')
    args = p.parse_args(argv)
    args.ks = args.ks or ([16, 64] if args.quick else list(DEFAULT_KS))
    args.ts = args.ts or ([2048] if args.quick else list(DEFAULT_TS))
    args.top2_ks = args.top2_ks or list(TOP2_KS)
    args.top2_ts = args.top2_ts or ([2048] if args.quick else list(TOP2_TS))
    if any(K < 2 for K in args.top2_ks):
        p.error('--top2-ks: top-2 routing needs at least 2 experts')
    args.reps = args.reps or (3 if args.quick else DEFAULT_REPS)
    args.bg_budget = args.bg_budget if args.bg_budget is not None else (30.0 if args.quick else 120.0)
    return args


def make_variants(
    batch: Batch,
    experts: Dict[str, torch.Tensor],
    dense: nn.Module,
    moe: ExpertFFN,
    loop: LoopFFN,
    loop_balanced: bool,
) -> List[Variant]:
    x, grad = batch.x, batch.grad
    variants = [Variant('DENSE', partial(dense_step, dense, x, grad), [dense])]
    for table, e in experts.items():
        if table in LEARNED:
            ffn = e  # for learned rows, the SparseFFN itself
            variants.append(Variant(f'HASH/{table}', partial(learned_step, ffn, x, grad), [ffn]))
            continue
        variants.append(Variant(f'HASH/{table}', partial(hash_step, moe, x, e, grad), [moe]))
        if table == 'random' or (table == 'balanced' and loop_balanced):
            variants.append(Variant(f'LOOP/{table}', partial(loop_step, loop, x, e, grad), [loop]))
    return variants


def run_config(
    K: int,
    batch: Batch,
    tables: Dict[str, torch.Tensor],
    modules: Tuple[nn.Module, ExpertFFN, LoopFFN],
    args: argparse.Namespace,
    monitor: LoadMonitor,
    policy: RetryPolicy,
) -> List[Row]:
    dense, moe, loop = modules
    T = batch.tokens.numel()
    experts = {name: table[batch.tokens] for name, table in tables.items()}
    experts['even'] = even_experts(T, K)
    learned = {kind: learned_ffn(kind, moe, T) for kind in LEARNED}
    t0 = time.perf_counter()
    # Warm-up: one untimed call per variant; HASH and LOOP double as the check.
    clear_grads([dense], batch.x)
    dense_step(dense, batch.x, batch.grad)
    copy_hash_into_loop(moe, loop)
    checks = {name: check_hash_vs_loop(moe, loop, batch, e) for name, e in experts.items()}
    worst = max(v for c in checks.values() for v in c.values())
    for kind, ffn in learned.items():  # warm-up, and the routes for the load column
        clear_grads([ffn], batch.x)
        learned_step(ffn, batch.x, batch.grad)
    variants = make_variants(batch, {**experts, **learned}, dense, moe, loop,
                             not args.no_loop_balanced)
    samples = round_robin(variants, args.reps, batch.x, monitor, policy)
    log(
        f'K={K:<4} T={T:<5} check ok (worst rel err {worst:.1e}); '
        f'{len(variants)} variants x {args.reps} reps in {time.perf_counter() - t0:.0f} s'
    )
    routes = {**experts, **{k: f.last_route.experts.reshape(-1) for k, f in learned.items()}}
    dropped = {k: f.last_route.stats.get('dropped', 0.0) for k, f in learned.items()}
    return make_rows(K, T, samples, routes, checks, dropped)


def run(args: argparse.Namespace, monitor: LoadMonitor, policy: RetryPolicy) -> List[Row]:
    gen = torch.Generator().manual_seed(SEED)
    probs = zipf_probs(VOCAB, gen)
    batches = {T: make_batch(T, probs) for T in args.ts}
    dense = dense_ffn()
    rows: List[Row] = []
    for K in args.ks:
        # Built once per K and reused across T: K=128 weights are 1 GiB each.
        tables = build_tables(K, probs.float())
        modules = (dense, ExpertFFN(K, D_MODEL, D_HIDDEN), LoopFFN(K, D_MODEL, D_HIDDEN))
        for T in args.ts:
            rows += run_config(K, batches[T], tables, modules, args, monitor, policy)
        del modules
        gc.collect()
    return rows


# --------------------------------------------------------------- top-2 rows


@dataclass
class TopKRow:
    """One top-2 table row: a variant against its dense FFN of the same active compute."""

    name: str  # one of TOP2_ROWS
    k: int
    K: int
    T: int
    dense_hidden: int  # D for k=1 rows, 2·D for top-2 rows
    dense_ms: float
    sparse_ms: float
    #: per-round dense time / variant time: (95% CI low, median, high)
    per_round: Tuple[float, float, float]
    #: k=1 layer only: per-round hash-k1 time / its time (>= 1: no slower)
    vs_k1: Optional[Tuple[float, float, float]]
    load_max: int
    load_mean: float  # T·k / K
    bg_max: float
    noisy_calls: int
    check: Dict[str, float]
    samples_ms: Dict[str, List[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.dense_ms / self.sparse_ms


def hash_layer(K: int, k: int, gates: str, table: torch.Tensor, moe: ExpertFFN) -> SparseFFN:
    """A training-mode hash SparseFFN (``--experts-per-token k --hash-gates gates``) on ``moe``."""
    router = HashRouter(TOP2_TABLE, K, SEED, table, experts_per_token=k, gates=gates, dim=D_MODEL)
    ffn = SparseFFN(SparseConfig(K, experts_per_token=k), 'dec0', router, D_MODEL, D_HIDDEN)
    ffn.experts = moe
    return ffn.train()


def switch_layer(K: int, k: int, moe: ExpertFFN) -> SparseFFN:
    """A training-mode dropless Switch SparseFFN routing each token to its k most probable experts."""
    router = SwitchRouter(D_MODEL, K, VOCAB, capacity_factor=0.0, experts_per_token=k)
    ffn = SparseFFN(SparseConfig(K, experts_per_token=k), 'dec0', router, D_MODEL, D_HIDDEN)
    ffn.experts = moe
    return ffn.train()


def layer_step(ffn: SparseFFN, tokens: torch.Tensor, x: torch.Tensor,
               grad: torch.Tensor) -> torch.Tensor:
    """One fwd+bwd of a SparseFFN with a fresh routing context, as in a model's forward:
    a hash route's plan is cached in the context, so a reused one would skip building it."""
    ffn.routing = RoutingContext.full(tokens, NO_PAD)
    return learned_step(ffn, x, grad)


def check_layer_vs_loop(ffn: SparseFFN, loop: LoopFFN, tokens: torch.Tensor,
                        batch: Batch) -> Dict[str, float]:
    """Warm-up call of a layer row, asserting it computes what LOOP computes when run once
    per choice and weighted by the router's own gates (loss = that output · grad, plus the
    router's auxiliary loss): output, input, expert and router gradients."""
    x, grad = batch.x, batch.grad
    clear_grads([ffn, loop], x)
    ffn.routing = RoutingContext.full(tokens, NO_PAD)
    route = ffn.router(ffn.routing, x.unsqueeze(0))
    assert route.keep is None, 'the timed layers are dropless'
    experts = route.experts[0]  # [T, k]
    y_ref = 0
    for j in range(experts.shape[-1]):
        y_j = loop(x, experts[:, j])
        y_ref = y_ref + (y_j if route.gates is None else route.gates[0, :, j:j + 1] * y_j)
    loss = (y_ref * grad).sum()
    if route.aux_loss is not None:
        loss = loss + route.aux_loss
    loss.backward()
    y_ref, dx_ref = y_ref.detach(), x.grad
    router_ref = {n: p.grad for n, p in ffn.router.named_parameters() if p.requires_grad}
    clear_grads([ffn], x)  # LOOP's gradients stay: the experts' reference
    y = layer_step(ffn, tokens, x, grad).detach()
    lin1 = [e[0] for e in loop.experts]
    lin2 = [e[2] for e in loop.experts]
    moe = ffn.experts
    errs = {
        'y': rel_err(y.reshape(y_ref.shape), y_ref),
        'dx': rel_err(x.grad, dx_ref),
        'dw1': stacked_grad_err(moe.expert_w1, [m.weight for m in lin1], transpose=True),
        'db1': stacked_grad_err(moe.expert_b1, [m.bias for m in lin1], transpose=False),
        'dw2': stacked_grad_err(moe.expert_w2, [m.weight for m in lin2], transpose=True),
        'db2': stacked_grad_err(moe.expert_b2, [m.bias for m in lin2], transpose=False),
    }
    for name, param in ffn.router.named_parameters():
        if param.requires_grad:
            errs[f'router.{name}'] = rel_err(param.grad, router_ref[name])
    bad = {k: v for k, v in errs.items() if not v < CHECK_RTOL}  # `not <` also catches NaN
    assert not bad, f"{ffn.router.__class__.__name__} layer and LOOP disagree (relative error > {CHECK_RTOL}): {bad}"
    return errs


def per_round(base: Sequence[Sample], variant: Sequence[Sample]) -> Tuple[float, float, float]:
    """``median_ci`` of base time / variant time, round by round (one call each per round)."""
    return median_ci([b.seconds / v.seconds for b, v in zip(base, variant)])


def run_top2_config(
    K: int,
    batch: Batch,
    counts: torch.Tensor,
    modules: Tuple[nn.Module, nn.Module, ExpertFFN, LoopFFN],
    args: argparse.Namespace,
    monitor: LoadMonitor,
    policy: RetryPolicy,
) -> List[TopKRow]:
    dense, dense2, moe, loop = modules
    T = batch.tokens.numel()
    inputs = TableInputs(vocab_size=VOCAB, n_positions=1, token_counts=counts)
    table1 = HashRouter.build_tables(TOP2_TABLE, K, SEED, inputs)  # [1, V]
    table2 = HashRouter.build_tables(TOP2_TABLE, K, SEED, inputs, experts_per_token=2)  # [1, V, 2]
    tokens = batch.tokens.unsqueeze(0)
    layers = {
        'hash-k1-layer': hash_layer(K, 1, 'none', table1, moe),
        'hash-top2-uniform': hash_layer(K, 2, 'uniform', table2, moe),
        'hash-top2-learned': hash_layer(K, 2, 'learned', table2, moe),
        'switch-top2': switch_layer(K, 2, moe),
    }
    k1_experts = table1[0][batch.tokens]
    t0 = time.perf_counter()
    for d in (dense, dense2):  # warm-up
        clear_grads([d], batch.x)
        dense_step(d, batch.x, batch.grad)
    copy_hash_into_loop(moe, loop)
    checks = {'hash-k1': check_hash_vs_loop(moe, loop, batch, k1_experts)}
    checks.update({name: check_layer_vs_loop(ffn, loop, tokens, batch) for name, ffn in layers.items()})
    worst = max(v for c in checks.values() for v in c.values())
    x, grad = batch.x, batch.grad
    variants = [
        Variant('DENSE', partial(dense_step, dense, x, grad), [dense]),
        Variant('DENSE-2D', partial(dense_step, dense2, x, grad), [dense2]),
        Variant('hash-k1', partial(hash_step, moe, x, k1_experts, grad), [moe]),
        *[Variant(name, partial(layer_step, ffn, tokens, x, grad), [ffn]) for name, ffn in layers.items()],
    ]
    samples = round_robin(variants, args.reps, x, monitor, policy)
    log(
        f'K={K:<4} T={T:<5} top-2 check ok (worst rel err {worst:.1e}); '
        f'{len(variants)} variants x {args.reps} reps in {time.perf_counter() - t0:.0f} s'
    )
    routes = {'hash-k1': k1_experts.unsqueeze(-1),
              **{name: ffn.last_route.experts[0] for name, ffn in layers.items()}}
    rows = []
    for name in TOP2_ROWS:
        experts = routes[name]
        k = experts.shape[-1]
        base = 'DENSE' if k == 1 else 'DENSE-2D'
        kept = samples[base] + samples[name]
        counts = torch.bincount(experts.reshape(-1), minlength=K)
        rows.append(TopKRow(
            name=name, k=k, K=K, T=T,
            dense_hidden=k * D_HIDDEN,
            dense_ms=median_ms(samples[base]),
            sparse_ms=median_ms(samples[name]),
            per_round=per_round(samples[base], samples[name]),
            vs_k1=per_round(samples['hash-k1'], samples[name]) if name == 'hash-k1-layer' else None,
            load_max=int(counts.max()),
            load_mean=T * k / K,
            bg_max=max(s.bg for s in kept),
            noisy_calls=sum(s.noisy for s in kept),
            check=checks[name],
            samples_ms={n: [1e3 * s.seconds for s in samples[n]] for n in (base, name)},
        ))
    return rows


def run_top2(args: argparse.Namespace, monitor: LoadMonitor, policy: RetryPolicy) -> List[TopKRow]:
    gen = torch.Generator().manual_seed(SEED)
    probs = zipf_probs(VOCAB, gen)  # the same tokens and tables as the rows above
    dense, dense2 = dense_ffn(), dense_ffn(2 * D_HIDDEN)
    rows: List[TopKRow] = []
    for K in args.top2_ks:
        modules = (dense, dense2, ExpertFFN(K, D_MODEL, D_HIDDEN), LoopFFN(K, D_MODEL, D_HIDDEN))
        for T in args.top2_ts:
            rows += run_top2_config(K, make_batch(T, probs), probs.float(), modules, args, monitor, policy)
        del modules
        gc.collect()
    return rows


def fmt_ci(q: Tuple[float, float, float]) -> str:
    return f'{q[1]:.2f}x [{q[0]:.2f}-{q[2]:.2f}]'


def top2_table(rows: Sequence[TopKRow]) -> str:
    lines = [
        '| routing | k | K | T | dense ms (hidden; tok/s) | sparse ms (ratio) '
        '| per round [95% CI] | x k=1 path per round [95% CI] | load max/mean | bg % |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in sorted(rows, key=lambda r: (r.K, r.T, TOP2_ROWS.index(r.name))):
        lines.append(
            f'| {r.name} | {r.k} | {r.K} | {r.T} '
            f'| {r.dense_ms:.0f} ({r.dense_hidden}; {r.T / r.dense_ms * 1e3:.0f}) '
            f'| {r.sparse_ms:.0f} ({r.ratio:.2f}x) | {fmt_ci(r.per_round)} '
            f"| {'—' if r.vs_k1 is None else fmt_ci(r.vs_k1)} "
            f'| {r.load_max}/{r.load_mean:.0f} = {r.load_max / r.load_mean:.2f} | {100 * r.bg_max:.0f} |'
        )
    return '\n'.join(lines)


def judged(q: Tuple[float, float, float], threshold: float) -> str:
    """'met' when the whole 95% CI is at or above ``threshold``, 'NOT met' when it is below."""
    if q[0] >= threshold:
        return 'met'
    if q[2] < threshold:
        return 'NOT met'
    return f"not settled by this run (median {'met' if q[1] >= threshold else 'NOT met'}; its 95% CI spans it)"


def top2_lines(rows: Sequence[TopKRow]) -> List[str]:
    out = []
    for K, T in sorted({(r.K, r.T) for r in rows}):
        here = {r.name: r for r in rows if (r.K, r.T) == (K, T)}
        top2 = [here[n] for n in TOP2_ROWS if n in here and here[n].k == 2]
        verdicts = '; '.join(f'{r.name} {r.ratio:.2f}x, per round {fmt_ci(r.per_round)}: '
                             f'{judged(r.per_round, TOP2_TARGET)}' for r in top2)
        out.append(f'target: top-2 >= {TOP2_TARGET}x dense (hidden 2·D = {2 * D_HIDDEN}) '
                   f'at K={K}, T={T}: {verdicts}')
        layer = here.get('hash-k1-layer')
        if layer is not None and layer.vs_k1 is not None:
            out.append(f'k=1: the layer path (SparseFFN + HashRouter) no slower than hash-k1 '
                       f'(DispatchPlan + ExpertFFN; >= {K1_NO_SLOWER}x per round) at K={K}, T={T}: '
                       f'{fmt_ci(layer.vs_k1)}: {judged(layer.vs_k1, K1_NO_SLOWER)}')
    return out


def top2_header(args: argparse.Namespace) -> str:
    return (
        f'Top-2 routing, fwd+bwd, d={D_MODEL}, experts of hidden D={D_HIDDEN}, {TOP2_TABLE} hash '
        f'tables; k=1 rows against DENSE (hidden D), top-2 rows against DENSE-2D (hidden '
        f'2·D={2 * D_HIDDEN}, the same active compute); median of {args.reps} interleaved calls'
    )


def top2_footer(args: argparse.Namespace, rows: Sequence[TopKRow], elapsed_s: Optional[float]) -> str:
    """``elapsed_s``: None when the k=1 table's footer already gave the run's totals."""
    text = (
        'Ratio: dense median / variant median in the same (K, T), as above; per round: the '
        'median of dense time / variant time within each round, with a 95% CI of that median '
        '(order statistics; with few rounds, the range). x k=1 path: hash-k1 time / '
        'hash-k1-layer time per round (>= 1: the layer is no slower). Tokens are Zipf (s=1) '
        f'over {VOCAB} ids, as above. Switch is dropless; router and gate time is included; '
        'the load column counts all k choices.'
    )
    if elapsed_s is not None:
        text += f' {bg_note(args)}. Total {elapsed_s:.0f} s.'
    return text + noisy_warning(args, rows)


def header(args: argparse.Namespace) -> str:
    malloc = 'glibc defaults' if args.malloc_default else 'retained (' + ' '.join(
        f'{k}={os.environ.get(k)}' for k in MALLOC_ENV) + ')'
    return (
        f'Hash-layer dispatch, fwd+bwd, d={D_MODEL} D={D_HIDDEN}, float32, '
        f'{torch.get_num_threads()} threads, torch {torch.__version__}, '
        f'median of {args.reps} interleaved calls; malloc {malloc}'
    )


def bg_note(args: argparse.Namespace) -> str:
    if args.no_bg_check:
        return 'bg check off'
    return (f'bg %: worst foreign CPU load during kept calls (% of a core); '
            f'{args.rerun_calls} calls re-run, {args.rerun_spent_s:.0f} s spent on re-runs and waits')


def noisy_warning(args: argparse.Namespace, rows: Sequence) -> str:
    noisy = [r for r in rows if r.noisy_calls]
    if not noisy:
        return ''
    return (
        f'\nWARNING: {len(noisy)} of {len(rows)} rows kept calls that overlapped foreign CPU '
        f'load above {100 * args.bg_threshold:.0f}% of a core; their times and ratios are not '
        'trustworthy. Re-run on a quiet machine.'
    )


def footer(args: argparse.Namespace, rows: Sequence[Row], elapsed_s: float) -> str:
    text = (
        'Ratios are DENSE median / variant median in the same (K, T); all table rows of a '
        f'(K, T) share one DENSE measurement. Tokens are Zipf (s=1) over {VOCAB} ids; '
        "'even' gives every expert exactly T/K tokens (no table: the best case for any "
        "router); 'switch' and 'base' are the learned routers on the same experts, training "
        "mode, dropless, router time included; 'switch-cf1.25' is Switch at capacity factor "
        f'1.25 (tokens over capacity skipped). {bg_note(args)}. Total {elapsed_s:.0f} s.'
    )
    return text + noisy_warning(args, rows)


def write_json(path: str, args: argparse.Namespace, rows: Sequence[Row], top2_rows: Sequence[TopKRow],
               elapsed_s: float) -> None:
    record = {
        'config': {
            'd': D_MODEL, 'D': D_HIDDEN, 'vocab': VOCAB, 'threads': torch.get_num_threads(),
            'reps': args.reps, 'ks': args.ks, 'ts': args.ts, 'dtype': 'float32',
            'top2_ks': [] if args.no_top2 else args.top2_ks, 'top2_ts': [] if args.no_top2 else args.top2_ts,
            'torch': torch.__version__, 'platform': platform.platform(),
            'malloc': {k: os.environ.get(k) for k in MALLOC_ENV},
            'bg_check': not args.no_bg_check, 'bg_threshold_cores': args.bg_threshold,
        },
        'rows': [
            {**asdict(r), 'hash_ratio': r.hash_ratio, 'loop_ratio': r.loop_ratio,
             'hash_over_loop_speedup': r.speedup}
            for r in rows
        ],
        'target': {'K': TARGET_K, 'T': TARGET_T, 'ratio': TARGET_RATIO, 'line': target_line(rows)},
        'top2_rows': [{**asdict(r), 'ratio': r.ratio} for r in top2_rows],
        'top2_target': {'ratio': TOP2_TARGET, 'lines': top2_lines(top2_rows)},
        'rerun_calls': args.rerun_calls,
        'rerun_spent_s': args.rerun_spent_s,
        'elapsed_s': elapsed_s,
        'max_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    with open(path, 'w') as f:
        json.dump(record, f, indent=1)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    maybe_reexec(args.malloc_default)
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    start = time.perf_counter()
    monitor = LoadMonitor(enabled=not args.no_bg_check)
    policy = RetryPolicy(args.bg_threshold, args.bg_retries, args.bg_budget)
    rows = [] if args.top2_only else run(args, monitor, policy)
    top2_rows = [] if args.no_top2 else run_top2(args, monitor, policy)
    args.rerun_calls, args.rerun_spent_s = policy.rerun_calls, policy.spent_s
    elapsed = time.perf_counter() - start
    if rows:
        print(header(args))
        print()
        print(markdown_table(rows))
        print()
        print(footer(args, rows, elapsed))
        print(target_line(rows))
    if top2_rows:
        if rows:
            print()
        print(top2_header(args))
        print()
        print(top2_table(top2_rows))
        print()
        print(top2_footer(args, top2_rows, None if rows else elapsed))
        print('\n'.join(top2_lines(top2_rows)))
    if args.json:
        write_json(args.json, args, rows, top2_rows, elapsed)


if __name__ == '__main__':
    main()
