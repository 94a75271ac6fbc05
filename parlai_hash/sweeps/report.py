"""``report``: gather a sweep's records with pandas into the paper's table.

Rows come in the sweep file's order; the printed and Markdown tables use the
paper's layout (Model, Configuration, Params, Valid PPL, Test PPL). The CSV
keeps raw numbers and a few more columns (point name, steps, the step of the
kept model, training time).
Points without a record are listed with empty values, so a partial sweep
shows what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from parlai_hash.io_utils import atomic_write
from parlai_hash.sweeps.records import read_record
from parlai_hash.sweeps.spec import Point


def metric_label(metric: str) -> str:
    return 'PPL' if metric == 'ppl' else metric


def records_frame(points: Sequence[Point], metric: str) -> pd.DataFrame:
    """One row per point (file order); NaN where a point has no record yet."""
    rows: List[Dict[str, Any]] = []
    for point in points:
        record = read_record(point.record_file) or {}
        rows.append({
            'point': point.name,
            'model': point.model,
            'configuration': point.configuration,
            'params': record.get('params'),
            f'valid_{metric}': record.get('valid', {}).get(metric),
            f'test_{metric}': record.get('test', {}).get(metric),
            'train_steps': record.get('train_steps'),
            'best_valid_step': record.get('best_valid_step'),
            'train_time_s': record.get('train_time_s'),
            'finished': bool(record),
            'paper_row': point.paper_row.get('row'),
            'paper_params': point.paper_row.get('params'),
            f'paper_valid_{metric}': point.paper_row.get('valid'),
            f'paper_test_{metric}': point.paper_row.get('test'),
        })
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

    def number(x: Any) -> str:
        return '—' if x is None or pd.isna(x) else f'{x:.2f}'

    table = pd.DataFrame({
        'Model': frame['model'],
        'Configuration': frame['configuration'],
        'Params': frame['params'].map(human_count),
        f'Valid {label}': frame[f'valid_{metric}'].map(number),
        f'Test {label}': frame[f'test_{metric}'].map(number),
    })
    if 'paper_row' in frame and frame['paper_row'].notna().any():
        # The numbers the paper prints for the row each point reproduces (at its scale).
        table['Paper row'] = frame['paper_row'].fillna('—')
        table['Paper Params'] = frame['paper_params'].fillna('—')
        table[f'Paper Valid {label}'] = frame[f'paper_valid_{metric}'].map(number)
        table[f'Paper Test {label}'] = frame[f'paper_test_{metric}'].map(number)
    return table


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (no ``tabulate`` dependency)."""
    header = '| ' + ' | '.join(table.columns) + ' |'
    left = {'Model', 'Configuration', 'Paper row'}
    align = '|' + '|'.join('---' if c in left else '---:' for c in table.columns) + '|'
    rows = ['| ' + ' | '.join(str(v) for v in row) + ' |' for row in table.itertuples(index=False)]
    return '\n'.join([header, align, *rows]) + '\n'


def to_text(table: pd.DataFrame) -> str:
    return table.to_string(index=False)


def write_report(frame: pd.DataFrame, metric: str, out_dir: Path, stem: str, title: str,
                 footer: Optional[str] = None) -> Dict[str, Path]:
    """Write ``<stem>.csv`` (raw numbers) and ``<stem>.md`` (the paper's layout)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {'csv': out_dir / f'{stem}.csv', 'md': out_dir / f'{stem}.md'}
    with atomic_write(paths['csv']) as f:
        frame.to_csv(f, index=False)
    missing = int((~frame['finished']).sum())
    note = f'\n{missing} of {len(frame)} points have no result yet.\n' if missing else ''
    with atomic_write(paths['md']) as f:
        f.write(f'# {title}\n\n{to_markdown(paper_table(frame, metric))}{note}')
        if footer:
            f.write(f'\n{footer.rstrip()}\n')
    return paths
