"""Result records: one JSON file per finished point, written atomically.

A record holds what a run produced (final valid/test metrics, the validation
curve, parameter counts, steps, time) and what produced it (the sweep, point,
options, the exact command, seed, code version). Its presence means "finished":
the runner skips points that have one, and the report reads only records.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

from parlai_hash.io_utils import atomic_write

RECORD_FORMAT = 1

#: Training examples the kept model is evaluated on after training (the record's ``train``).
TRAIN_EVAL_EXAMPLES = 1000


def numeric_report(report: Mapping[str, Any]) -> Dict[str, float]:
    """A ParlAI report (Metric objects or numbers) as plain finite floats."""
    out: Dict[str, float] = {}
    for key, value in report.items():
        if hasattr(value, 'value'):
            value = value.value()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


def valid_curve(trainstats: Mapping[str, Any], metric: str) -> List[Dict[str, float]]:
    """Validation metric at each validation of the run, from ParlAI's ``.trainstats``."""
    curve = []
    for report in trainstats.get('valid_reports', []):
        value = report.get(metric)
        if isinstance(value, (int, float)) and 'train_steps' in report:
            curve.append({'train_steps': float(report['train_steps']), metric: float(value)})
    return curve


def train_dropped(trainstats: Mapping[str, Any]) -> Optional[float]:
    """Share of routed rows over capacity in the run's last training log window.

    Averaged over sparse layers (the ``<layer>_dropped`` metrics a router
    with a capacity logs); None when no layer drops (hash, BASE, dense,
    dropless Switch). Evaluation is dropless by default, so the record's
    perplexities do not show what capacity cost in training; this does.
    """
    reports = trainstats.get('train_reports') or []
    if not reports:
        return None
    shares = [float(v) for k, v in reports[-1].items()
              if k.endswith('_dropped') and isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(shares) / len(shares) if shares else None


def git_commit(folder: Path) -> Optional[str]:
    """The code version that ran (None outside a git checkout)."""
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=folder,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ('+dirty' if dirty else '')


def environment() -> Dict[str, str]:
    import parlai
    import torch

    return {
        'host': platform.node(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'parlai': getattr(parlai, '__version__', 'unknown'),
        'device': torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu',
    }


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    """Write atomically: a reader never sees half a record, a crash leaves none."""
    record = dict(record)
    record.setdefault('format', RECORD_FORMAT)
    record.setdefault('finished_at', datetime.now(timezone.utc).isoformat(timespec='seconds'))
    with atomic_write(path) as f:
        json.dump(record, f, indent=2, sort_keys=False)
        f.write('\n')


def read_record(path: Path) -> Optional[Dict[str, Any]]:
    """The record at ``path``, or None if the point has not finished."""
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def read_records(paths: Iterable[Path]) -> List[Dict[str, Any]]:
    return [r for r in (read_record(p) for p in paths) if r is not None]
