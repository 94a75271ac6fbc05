"""``report``: gather a sweep's records with pandas into the paper's table.

Rows come in the sweep file's order; the printed and Markdown tables use the
paper's layout (Model, Configuration, Params, Valid PPL, Test PPL). The CSV
keeps raw numbers and a few more columns (point name, steps, the step of the
kept model, training time).
Points without a record are listed with empty values, so a partial sweep
shows what is missing.

A point trained with several seeds (``run --seeds``; records in
``<run_dir>/record.json`` and ``<run_dir>/seedK/record.json``) shows
mean ± the half-width of a 95% Student t interval, and n; the CSV keeps the
mean, sd, n and interval bounds. The sweep's ``orderings:`` get a verdict
table (:func:`ordering_table`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import pandas as pd

from parlai_hash.io_utils import atomic_write
from parlai_hash.sweeps.records import TRAIN_EVAL_EXAMPLES, read_record
from parlai_hash.sweeps.spec import Point
from parlai_hash.sweeps.stats import compare, finite, mean_interval

INTERVAL_NOTE = ('Cells with n: mean ± half-width of a 95% Student t interval over n seeds '
                 '(t_{0.975, n-1} · sd/√n); others are one run.')


def metric_label(metric: str) -> str:
    return 'PPL' if metric == 'ppl' else metric


def point_records(point: Point) -> Dict[int, Dict[str, Any]]:
    """A point's records by seed: its own run folder's, then each ``seedK/`` folder's."""
    records: Dict[int, Dict[str, Any]] = {}
    own = read_record(point.record_file)
    if own is not None:
        records[int(own.get('seed', point.seed))] = own
    for path in sorted(point.run_dir.glob('seed*/record.json')):
        record = read_record(path)
        if record is not None:
            records.setdefault(int(record.get('seed', path.parent.name[len('seed'):])), record)
    return records


def seed_values(records: Mapping[int, Mapping[str, Any]], split: str, metric: str) -> Dict[int, float]:
    """``{seed: value}`` of one split's metric, for the records that have it."""
    values = {seed: r.get(split, {}).get(metric) for seed, r in records.items()}
    return {seed: float(v) for seed, v in values.items() if v is not None}


def _summary(values: Mapping[int, float], column: str) -> Dict[str, Any]:
    """Mean (the column itself), sd, n and 95% bounds over seeds."""
    interval = mean_interval(list(values.values()))
    return {column: interval.mean if interval.n else None, f'{column}_sd': interval.sd,
            f'{column}_n': interval.n, f'{column}_ci_low': interval.low, f'{column}_ci_high': interval.high}


#: A run whose valid metric moved less than this over its last fifth of steps has flattened.
FLAT_CHANGE = 0.05


def late_change(curve: Sequence[Mapping[str, float]], metric: str) -> Optional[float]:
    """Relative change of the valid metric over the last fifth of training: (end − at 80%) / at 80%.

    "At 80%" is the last validation at or before 80% of the final step; None
    when the curve has no validation that early. Negative: still improving
    (for perplexity); positive: it rose again (held-out text after the model
    memorised its training text).
    """
    points = sorted((c['train_steps'], c[metric]) for c in curve if metric in c)
    if len(points) < 2:
        return None
    end_step, end_value = points[-1]
    early = [value for step, value in points if step <= 0.8 * end_step]
    if not early or not early[-1]:
        return None
    return (end_value - early[-1]) / early[-1]


def _mean_of(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def records_frame(points: Sequence[Point], metric: str) -> pd.DataFrame:
    """One row per point (file order); NaN where a point has no record yet."""
    rows: List[Dict[str, Any]] = []
    for point in points:
        by_seed = point_records(point)
        # Counts, steps and time come from the sweep seed's run when there is one.
        record = by_seed.get(point.seed) or next(iter(by_seed.values()), {})
        row = {
            'point': point.name,
            'model': point.model,
            'configuration': point.configuration,
            'params': record.get('params'),
            f'valid_{metric}': None,  # the mean over seeds, set below
            f'test_{metric}': None,
            'train_steps': record.get('train_steps'),
            'best_valid_step': record.get('best_valid_step'),
            'train_time_s': record.get('train_time_s'),
            'finished': bool(record),
            'paper_row': point.paper_row.get('row'),
            'paper_params': point.paper_row.get('params'),
            f'paper_valid_{metric}': point.paper_row.get('valid'),
            f'paper_test_{metric}': point.paper_row.get('test'),
            'seeds': ','.join(map(str, sorted(by_seed))),
            # The regime: epochs over the training split, and how much valid still moved at the end.
            'epochs': _mean_of([r.get('epochs') for r in by_seed.values()]),
            'valid_late_change': _mean_of([late_change(r.get('valid_curve', []), metric) for r in by_seed.values()]),
            # What capacity cost in training (evaluation is dropless): Switch points only.
            'train_dropped': _mean_of([r.get('train_dropped') for r in by_seed.values()]),
        }
        # update keeps the mean columns in place and appends sd, n and bounds after today's columns.
        row.update(_summary(seed_values(by_seed, 'valid', metric), f'valid_{metric}'))
        row.update(_summary(seed_values(by_seed, 'test', metric), f'test_{metric}'))
        row.update(_summary(seed_values(by_seed, 'train', metric), f'train_{metric}'))
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ('params', 'train_steps', 'best_valid_step'):
        frame[column] = frame[column].astype('Int64')
    return frame


def human_count(n: Any) -> str:
    """222000000 -> '222M', the paper's way of writing parameter counts."""
    if n is None or pd.isna(n):
        return '—'
    n = float(n)
    for size, suffix in ((1e9, 'B'), (1e6, 'M'), (1e3, 'K')):
        if n >= size:
            value = n / size
            return f'{value:.3g}{suffix}' if value < 100 else f'{value:.0f}{suffix}'
    return f'{n:.0f}'


def paper_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The paper's columns, formatted for reading."""
    label = metric_label(metric)

    def shown(spec: str) -> Any:
        """A formatter for a column with gaps: '—' where a point has no value."""
        return lambda x: '—' if x is None or pd.isna(x) else format(x, spec)

    number = shown('.2f')

    def cell(column: str) -> pd.Series:
        if f'{column}_n' not in frame:
            return frame[column].map(number)
        return frame.apply(lambda row: _interval_cell(row, column, number), axis=1)

    table = pd.DataFrame({
        'Model': frame['model'],
        'Configuration': frame['configuration'],
        'Params': frame['params'].map(human_count),
        f'Valid {label}': cell(f'valid_{metric}'),
        f'Test {label}': cell(f'test_{metric}'),
    })
    if frame[f'train_{metric}'].notna().any():
        # The regime beside the result: fit to the training text, epochs, whether valid had flattened.
        table[f'Train {label}'] = cell(f'train_{metric}')
        table['Epochs'] = frame['epochs'].map(number)
        table['Valid Δ last 1/5'] = frame['valid_late_change'].map(shown('+.1%'))
    if frame['train_dropped'].notna().any():
        table['Dropped in training'] = frame['train_dropped'].map(shown('.1%'))
    if 'paper_row' in frame and frame['paper_row'].notna().any():
        # The numbers the paper prints for the row each point reproduces (at its scale).
        table['Paper row'] = frame['paper_row'].fillna('—')
        table['Paper Params'] = frame['paper_params'].fillna('—')
        table[f'Paper Valid {label}'] = frame[f'paper_valid_{metric}'].map(number)
        table[f'Paper Test {label}'] = frame[f'paper_test_{metric}'].map(number)
    return table


def _interval_cell(row: pd.Series, column: str, number: Any) -> str:
    """``12.00 ± 4.97 (n=3)`` with several seeds; one record as a plain number."""
    n = row[f'{column}_n']
    if pd.isna(n) or n < 2:
        return number(row[column])
    half = (row[f'{column}_ci_high'] - row[f'{column}_ci_low']) / 2
    return f'{row[column]:.2f} ± {half:.2f} (n={int(n)})'


REGIME_NOTE = ('Train {label}: the kept model on the first {examples} training examples, in evaluation mode. '
               'Epochs: passes over the training split. Valid Δ last 1/5: change of valid {label} from the last '
               'validation at or before 80% of the steps to the end (mean over seeds); within ±{flat:.0f}%, '
               'the curve has flattened.')


DROPPED_NOTE = ('Dropped in training: share of routed (token, expert) rows over their expert\'s capacity in the '
                'last training log window, mean over sparse layers and seeds; a dropped row adds nothing (with one '
                'expert per token, the token keeps only its residual). Evaluation runs without a capacity. '
                '—: the point never drops.')


def table_notes(frame: pd.DataFrame, metric: str) -> str:
    """The table's footer: how to read intervals and the regime columns ('' when neither is shown)."""
    notes = []
    columns = [f'{split}_{metric}_n' for split in ('valid', 'test') if f'{split}_{metric}_n' in frame]
    if any((frame[c].fillna(0) >= 2).any() for c in columns):
        notes.append(INTERVAL_NOTE)
    if frame[f'train_{metric}'].notna().any():
        notes.append(REGIME_NOTE.format(label=metric_label(metric), examples=f'{TRAIN_EVAL_EXAMPLES:,}',
                                        flat=100 * FLAT_CHANGE))
    if frame['train_dropped'].notna().any():
        notes.append(DROPPED_NOTE)
    return '\n\n'.join(notes)


def ordering_table(orderings: Sequence[Mapping[str, str]], points: Sequence[Point], metric: str) -> pd.DataFrame:
    """One row per ordering "better < worse": worse − better in valid metric, its 95% interval, the verdict."""
    label = metric_label(metric)
    by_name = {p.name: p for p in points}
    rows = []
    for ordering in orderings:
        values = {}
        for side in ('better', 'worse'):
            point = by_name.get(ordering[side])
            values[side] = seed_values(point_records(point), 'valid', metric) if point else {}
        result = compare(values['better'], values['worse'])
        rows.append({
            'Better': ordering['better'],
            'Worse': ordering['worse'],
            'Paper': ordering.get('paper', ''),
            f'Valid {label} worse − better': f'{result.difference:+.2f}' if finite(result.difference) else '—',
            '95% interval': (f'[{result.low:+.2f}, {result.high:+.2f}]'
                             if finite(result.low) and finite(result.high) else '—'),
            'Test': result.method or '—',
            'n (better, worse)': f'{result.n_better}, {result.n_worse}',
            'Verdict': result.verdict,
        })
    return pd.DataFrame(rows, columns=['Better', 'Worse', 'Paper', f'Valid {label} worse − better', '95% interval',
                                       'Test', 'n (better, worse)', 'Verdict'])


ORDERING_NOTE = ('Verdict: holds when the 95% interval of worse − better lies above 0, reversed when below, '
                 'not resolved when it contains 0. Paired t over the seeds both points ran; one shared seed: its '
                 "difference only; no shared seed: Welch's t (one record on a side: the difference of means).")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (no ``tabulate`` dependency)."""
    header = '| ' + ' | '.join(table.columns) + ' |'
    left = {'Model', 'Configuration', 'Paper row', 'Better', 'Worse', 'Paper', 'Test', 'Verdict'}
    align = '|' + '|'.join('---' if c in left else '---:' for c in table.columns) + '|'
    rows = ['| ' + ' | '.join(str(v) for v in row) + ' |' for row in table.itertuples(index=False)]
    return '\n'.join([header, align, *rows]) + '\n'


def to_text(table: pd.DataFrame) -> str:
    return table.to_string(index=False)


def write_report(frame: pd.DataFrame, metric: str, out_dir: Path, stem: str, title: str,
                 footer: Optional[str] = None, orderings: Optional[pd.DataFrame] = None) -> Dict[str, Path]:
    """Write ``<stem>.csv`` (raw numbers) and ``<stem>.md`` (the paper's layout, and the
    orderings' verdicts when given)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {'csv': out_dir / f'{stem}.csv', 'md': out_dir / f'{stem}.md'}
    with atomic_write(paths['csv']) as f:
        frame.to_csv(f, index=False)
    missing = int((~frame['finished']).sum())
    note = f'\n{missing} of {len(frame)} points have no result yet.\n' if missing else ''
    notes = table_notes(frame, metric)
    note += f'\n{notes}\n' if notes else ''
    with atomic_write(paths['md']) as f:
        f.write(f'# {title}\n\n{to_markdown(paper_table(frame, metric))}{note}')
        if orderings is not None and len(orderings):
            f.write(f'\n## The paper\'s orderings\n\n{to_markdown(orderings)}\n{ORDERING_NOTE}\n')
        if footer:
            f.write(f'\n{footer.rstrip()}\n')
    return paths
