"""A sweep's ``figures:`` section: gather the data for each figure and draw it.

* ``curves``: validation perplexity over training steps (Figure 2), from the
  validation history each record keeps;
* ``versus``: final validation perplexity against an option ``x:`` such as
  ``num_experts`` or ``hash_layers`` (Figure 3), one line per ``series:``
  (default: the point's model label);
* ``expert_load``: tokens per expert of the listed points on their own
  validation split (Figure 4), measured from the model files and cached next
  to them as ``expert_load_<datatype>.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, TextIO, Tuple

from parlai_hash.sweeps import plots
from parlai_hash.sweeps.errors import SweepError
from parlai_hash.sweeps.report import metric_label, point_records, seed_values
from parlai_hash.sweeps.spec import Point, Sweep, select_points
from parlai_hash.sweeps.stats import mean_interval


def point_label(point: Point) -> str:
    return f'{point.model} {point.configuration}'.strip()


def _numeric_option(point: Point, key: str, where: str) -> Optional[float]:
    value = point.options.get(key)
    if isinstance(value, (list, tuple)):
        value = value[0] if len(value) == 1 else None
    elif isinstance(value, str) and ',' not in value:
        value = value.strip()
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        raise SweepError(where, f"point {point.name}: {key}={value!r} is not one number",
                         "use an option with one numeric value per point on the x axis") from None


def seed_mean(values: Iterable[float]) -> Optional[Tuple[float, ...]]:
    """(value,) for one seed; (mean, 95% half-width) for several; None for none."""
    interval = mean_interval(list(values))
    if not interval.n:
        return None
    return (interval.mean,) if interval.n < 2 else (interval.mean, interval.half_width)


def seed_curve(records: Mapping[int, Mapping[str, Any]], metric: str) -> List[Tuple[float, ...]]:
    """A point's validation curve: per step, its value or its mean over seeds with the half-width."""
    by_step: Dict[float, List[float]] = {}
    for record in records.values():
        for c in record.get('valid_curve', []):
            if metric in c:
                by_step.setdefault(float(c['train_steps']), []).append(float(c[metric]))
    return [(step, *seed_mean(values)) for step, values in sorted(by_step.items())]  # type: ignore[misc]


def expert_load_of(point: Point, datatype: str = 'valid', max_examples: int = -1) -> Any:
    """The point's expert load on its own task (cached beside its model)."""
    from parlai_hash.sweeps.expert_load import ExpertLoad, measure_expert_load

    cache = point.run_dir / f"expert_load_{datatype.split(':')[0]}.csv"
    if cache.exists():
        return ExpertLoad.read_csv(cache, str(point.model_file), str(point.options.get('task')), datatype)
    from parlai.scripts.train_model import setup_args

    opt = setup_args().parse_args(point.argv())
    opt['datatype'] = datatype
    load = measure_expert_load(opt, max_examples=max_examples)
    load.write_csv(cache)
    return load


def make_figures(sweep: Sweep, points: Sequence[Point], out_dir: Path, out: Optional[TextIO] = None) -> List[Path]:
    """Draw every figure of the sweep that has data; say which could not be drawn."""
    out = out or sys.stdout  # looked up now: callers may have redirected it
    written: List[Path] = []
    label = metric_label(sweep.metric)
    for index, figure in enumerate(sweep.figures):
        where = sweep.where(f'figures[{index}]')
        names = figure.get('points')
        if isinstance(names, dict):  # one list per scale
            names = names.get(points[0].scale) if points else None
        chosen = select_points(points, names, where)
        finished = [(p, r) for p in chosen if (r := point_records(p))]
        path = out_dir / figure['file']
        if not finished:
            print(f"{figure['file']}: skipped (none of its points has a result yet)", file=out)
            continue
        kind = figure['kind']
        if kind == 'curves':
            curves = {point_label(p): seed_curve(r, sweep.metric) for p, r in finished}
            plots.plot_valid_curves(curves, path, label, title=figure.get('title', f'{sweep.title}: valid {label}'))
        elif kind == 'versus':
            x = figure['x'].replace('-', '_')
            series: Dict[str, List[Tuple[float, ...]]] = {}
            for p, r in finished:
                name = getattr(p, figure.get('series', 'model'), None) or p.options.get(figure.get('series'))
                value = seed_mean(seed_values(r, 'valid', sweep.metric).values())
                x_value = _numeric_option(p, x, where)
                if value is not None and x_value is not None:
                    series.setdefault(str(name), []).append((x_value, *value))
            plots.plot_versus(series, path, figure.get('xlabel', x), label,
                              title=figure.get('title', sweep.title), log_x=(x == 'num_experts'))
        elif kind == 'expert_load':
            datatype = figure.get('datatype', 'valid')
            loads: Dict[str, Sequence[int]] = {}
            for point, _ in finished:
                measured = expert_load_of(point, datatype, figure.get('max_examples', -1))
                for layer, counts in measured.layers.items():
                    suffix = f' {layer}' if len(measured.layers) > 1 else ''
                    loads[point_label(point) + suffix] = counts
            plots.plot_expert_load(loads, path, title=figure.get('title', 'Expert load'),
                                   subtitle=f'{sweep.name} ({finished[0][0].scale}), {datatype} split')
        written.append(path)
        missing = len(chosen) - len(finished)
        print(f"wrote {path}{f' ({missing} points without a result left out)' if missing else ''}", file=out)
    return written
