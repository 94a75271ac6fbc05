"""``run --local``: train the points on this machine, one after another.

Each point runs in its own process (``python -m parlai_hash.sweeps.worker``):
memory and GPU state are released between points, and a point that fails does
not stop the others (its dependants are skipped). Its output goes to
``<run_dir>/train.log`` and, unless quiet, to the terminal.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, TextIO

from parlai_hash.sweeps.records import read_record
from parlai_hash.sweeps.runner import write_point
from parlai_hash.sweeps.spec import Point, Sweep


@dataclass
class LocalOutcome:
    ran: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)  # point -> why
    skipped: Dict[str, str] = field(default_factory=dict)  # point -> why


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return '\n'.join(path.read_text(encoding='utf-8', errors='replace').splitlines()[-lines:])
    except OSError:
        return ''


def _run_worker(point_file: Path, log_file: Path, echo: Callable[[str], None] | None) -> int:
    """Run the worker, copying its output to the log (and the terminal)."""
    with open(log_file, 'a', encoding='utf-8') as log:
        proc = subprocess.Popen(
            [sys.executable, '-u', '-m', 'parlai_hash.sweeps.worker', str(point_file)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if echo is not None:
                echo(line.rstrip('\n'))
        return proc.wait()


def run_local(
    sweep: Sweep, points: Sequence[Point], all_points: Sequence[Point],
    quiet: bool = False, out: Optional[TextIO] = None,
) -> LocalOutcome:
    """Train ``points`` in order; dependants of a failed point are skipped."""
    out = out or sys.stdout  # looked up now: callers may have redirected it
    by_name = {p.name: p for p in all_points}
    outcome = LocalOutcome()
    echo = None if quiet else (lambda line: print(line, file=out, flush=True))
    for i, point in enumerate(points, 1):
        broken = [d for d in point.depends_on if d in outcome.failed or d in outcome.skipped]
        if broken:
            outcome.skipped[point.name] = f'needs {broken[0]}, which did not finish'
            print(f'[{i}/{len(points)}] {point.name}: skipped ({outcome.skipped[point.name]})', file=out, flush=True)
            continue
        point.run_dir.mkdir(parents=True, exist_ok=True)
        point_file = write_point(sweep, point, by_name)
        log_file = point.run_dir / 'train.log'
        print(f'[{i}/{len(points)}] {point.name}: training ({point.command()})', file=out, flush=True)
        start = time.monotonic()
        code = _run_worker(point_file, log_file, echo)
        record = read_record(point.record_file)
        if code != 0 or record is None:
            outcome.failed[point.name] = f'exit code {code}; see {log_file}'
            print(f'[{i}/{len(points)}] {point.name}: FAILED ({outcome.failed[point.name]})\n{_tail(log_file)}',
                  file=out, flush=True)
            continue
        outcome.ran.append(point.name)
        metric = record['metric']
        print(f"[{i}/{len(points)}] {point.name}: done in {time.monotonic() - start:.0f}s, "
              f"valid {metric} {record['valid'].get(metric, float('nan')):.4g}, "
              f"test {metric} {record['test'].get(metric, float('nan')):.4g}", file=out, flush=True)
    return outcome
