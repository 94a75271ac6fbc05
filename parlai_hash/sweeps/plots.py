"""The paper's figures as PNG files, drawn with matplotlib from plain data.

* :func:`plot_valid_curves` — validation perplexity over training steps, one
  line per model (the paper's Figure 2);
* :func:`plot_versus` — final perplexity against an option such as the number
  of experts or the sparse layer's position, one line per model (Figure 3);
* :func:`plot_expert_load` — each expert's share of tokens relative to a
  perfectly even split, experts sorted from busiest, one line per model, e.g.
  random vs balanced hashing (Figure 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use('Agg')  # files only; no display on a server or a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from parlai_hash.io_utils import atomic_write  # noqa: E402


def _save(fig: 'plt.Figure', path: Path) -> Path:
    path = Path(path)
    with atomic_write(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=120, bbox_inches='tight')
    plt.close(fig)
    return path


def _columns(points: Sequence[Sequence[float]]) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Sorted x, y and half-widths (None when no point has one; 0 where one point lacks it)."""
    rows = sorted(points, key=lambda p: p[0])
    xs = np.array([r[0] for r in rows], dtype=float)
    ys = np.array([r[1] for r in rows], dtype=float)
    if not any(len(r) > 2 for r in rows):
        return xs, ys, None
    halves = np.array([r[2] if len(r) > 2 and np.isfinite(r[2]) else 0.0 for r in rows], dtype=float)
    return xs, ys, halves


def _log_if_wide(ax: 'plt.Axes') -> None:
    # Early perplexities dwarf late ones; a log axis keeps the end readable.
    values = [y for line in ax.get_lines() for y in line.get_ydata()]
    if values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale('log')


def plot_valid_curves(
    curves: Mapping[str, Sequence[Tuple[float, float]]], path: Path, metric_label: str = 'PPL',
    title: str = 'Validation perplexity during training',
) -> Path:
    """``curves``: label -> [(train step, valid metric), ...], or (step, mean, half-width) for a
    mean over seeds, drawn with its 95% band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, points in curves.items():
        if points:
            steps, values, halves = _columns(points)
            line, = ax.plot(steps, values, marker='o', markersize=3, label=label)
            if halves is not None:
                ax.fill_between(steps, values - halves, values + halves, color=line.get_color(), alpha=0.2,
                                linewidth=0)
    _log_if_wide(ax)
    ax.set_xlabel('training steps')
    ax.set_ylabel(f'valid {metric_label}')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_versus(
    series: Mapping[str, Sequence[Tuple[float, float]]], path: Path, xlabel: str,
    metric_label: str = 'PPL', title: str = '', log_x: bool = False,
) -> Path:
    """``series``: label -> [(x, final valid metric), ...], or (x, mean, half-width) for a mean
    over seeds, drawn with its 95% error bar."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, points in series.items():
        if points:
            xs, ys, halves = _columns(points)
            ax.errorbar(xs, ys, yerr=halves, marker='o', capsize=3, label=label)
    if log_x:
        ax.set_xscale('log', base=2)
        ticks = sorted({p[0] for pts in series.values() for p in pts})
        ax.set_xticks(ticks, [f'{t:g}' for t in ticks])
    _log_if_wide(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f'valid {metric_label}')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def load_vs_mean(counts: Sequence[float]) -> np.ndarray:
    """Each expert's tokens over the mean tokens per expert, busiest first (1.0 = even)."""
    counts = np.asarray(counts, dtype=np.float64)
    mean = counts.mean() if counts.size and counts.sum() > 0 else 1.0
    return np.sort(counts / mean)[::-1]


def plot_expert_load(
    loads: Mapping[str, Sequence[float]], path: Path, title: str = 'Expert load',
    subtitle: Optional[str] = None,
) -> Path:
    """``loads``: label -> tokens per expert."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, counts in loads.items():
        ratio = load_vs_mean(counts)
        ax.plot(np.arange(1, ratio.size + 1), ratio, marker='o', markersize=3,
                label=f'{label} (max {ratio.max():.2f}x)')
    ax.axhline(1.0, color='grey', linestyle='--', linewidth=1, label='perfect balance')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('expert, busiest first')
    ax.set_ylabel('tokens / mean tokens per expert')
    ax.set_title(title if subtitle is None else f'{title}\n{subtitle}', fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if len(loads) > 6 or max(map(len, loads), default=0) > 60:
        # Many or long labels would cover the curves: list them under the axes.
        fig.set_size_inches(6.4, 4.2 + 0.25 * (len(loads) + 1))
        ax.legend(loc='upper left', bbox_to_anchor=(0.0, -0.15), fontsize='x-small', frameon=False)
    else:
        ax.legend()
    return _save(fig, path)

