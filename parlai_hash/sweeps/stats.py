"""Intervals over seeds and verdicts on the paper's orderings.

A point trained with several seeds is summarised by its mean and a 95%
Student t interval (mean ± t_{0.975, n-1} · sd/√n). An ordering "better <
worse" is judged on the difference worse − better: paired over seeds when
both sides ran the same seeds (the seed fixes the data order, so the pairs
share it), else Welch's interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

LEVEL = 0.95
HOLDS, REVERSED, UNRESOLVED = 'holds', 'reversed', 'not resolved'
ONE_SEED = 'not resolved (one seed)'
NO_RESULT = 'no result'

# t_{0.975, df}, for when scipy is absent.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile(df: float) -> float:
    """The two-sided 95% quantile t_{0.975, df} (scipy when installed, else a table)."""
    try:
        from scipy.stats import t
    except ImportError:
        # Table lookup at the largest tabulated df not above df: slightly wide, never narrow.
        below = [d for d in _T975 if d <= df]
        return _T975[max(below)] if below else _T975[1]
    return float(t.ppf(0.5 + LEVEL / 2, df))


@dataclass(frozen=True)
class Interval:
    """A mean (or a difference) with its 95% interval; NaN bounds with one value."""

    mean: float
    sd: float
    n: int
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean ± t_{0.975, n-1} · sd/√n (sd with n − 1); NaN sd and bounds when n < 2."""
    n = len(values)
    if n == 0:
        nan = float('nan')
        return Interval(nan, nan, 0, nan, nan)
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, float('nan'), n, float('nan'), float('nan'))
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return Interval(mean, sd, n, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """worse − better with its interval, how it was computed, and the verdict."""

    difference: float
    low: float
    high: float
    method: str  # 'paired t', 'Welch t', 'one seed' or ''
    n_better: int
    n_worse: int
    verdict: str


def verdict(low: float, high: float) -> str:
    """holds when the whole interval is above 0, reversed when below, else not resolved."""
    if low > 0:
        return HOLDS
    if high < 0:
        return REVERSED
    return UNRESOLVED


def welch_interval(worse: Sequence[float], better: Sequence[float]) -> Interval:
    """Welch's interval for mean(worse) − mean(better), Welch–Satterthwaite df."""
    a, b = mean_interval(worse), mean_interval(better)
    va, vb = a.sd ** 2 / a.n, b.sd ** 2 / b.n
    diff = a.mean - b.mean
    se = math.sqrt(va + vb)
    if se == 0:  # no spread on either side: the difference is exact
        return Interval(diff, 0.0, a.n + b.n, diff, diff)
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    half = t_quantile(df) * se
    return Interval(diff, se, a.n + b.n, diff - half, diff + half)


def compare(better: Mapping[int, float], worse: Mapping[int, float]) -> Comparison:
    """Judge "better < worse" from each side's value per seed."""
    nb, nw = len(better), len(worse)
    if nb == 0 or nw == 0:
        nan = float('nan')
        return Comparison(nan, nan, nan, '', nb, nw, NO_RESULT)
    # A seed moves every model together (same initialisation and data order),
    # so the seeds both sides ran are compared seed by seed; extra seeds on one
    # side would only mix that shift into the difference.
    shared = sorted(set(better) & set(worse))
    if len(shared) == 1:
        seed = shared[0]
        return Comparison(worse[seed] - better[seed], float('nan'), float('nan'), f'one seed ({seed})', nb, nw,
                          ONE_SEED)
    if len(shared) >= 2:
        paired = mean_interval([worse[s] - better[s] for s in shared])
        if paired.sd == 0:
            low = high = paired.mean
        else:
            low, high = paired.low, paired.high
        method = 'paired t' if nb == nw == len(shared) else f"paired t (seeds {', '.join(map(str, shared))})"
        return Comparison(paired.mean, low, high, method, nb, nw, verdict(low, high))
    diff = sum(worse.values()) / nw - sum(better.values()) / nb
    if nb < 2 or nw < 2:
        return Comparison(diff, float('nan'), float('nan'), 'one seed', nb, nw, ONE_SEED)
    welch = welch_interval(list(worse.values()), list(better.values()))
    return Comparison(welch.mean, welch.low, welch.high, 'Welch t', nb, nw, verdict(welch.low, welch.high))


def finite(x: Optional[float]) -> bool:
    return x is not None and not math.isnan(x)
