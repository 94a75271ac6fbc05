"""What to run: pick points, skip finished ones, write each point's ``point.json``.

Shared by the local runner and the SLURM submitter, so both run the same
points with the same arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from parlai_hash.sweeps.errors import SweepError
from parlai_hash.sweeps.records import read_record
from parlai_hash.sweeps.spec import Point, Sweep, select_points
from parlai_hash.sweeps.worker import write_point_file


@dataclass
class Plan:
    """The points of one ``run``: those to train and those already finished."""

    to_run: List[Point]
    finished: List[Point]


def plan_run(sweep: Sweep, points: Sequence[Point], names: Optional[Sequence[str]] = None) -> Plan:
    """The selected points (all by default) plus any unfinished point they need,
    in file order, split into finished (a record exists) and to run."""
    selected = select_points(points, names, sweep.where())
    by_name = {p.name: p for p in points}
    wanted = {p.name for p in selected}
    stack = [p for p in selected]
    while stack:
        for dep in stack.pop().depends_on:
            if dep not in wanted and read_record(by_name[dep].record_file) is None:
                wanted.add(dep)
                stack.append(by_name[dep])
    ordered = [p for p in points if p.name in wanted]
    finished = [p for p in ordered if read_record(p.record_file) is not None]
    for point in finished:
        _refuse_stale(sweep, point)
    return Plan(to_run=[p for p in ordered if p not in finished], finished=finished)


def _refuse_stale(sweep: Sweep, point: Point) -> None:
    """A record made with other options is not this point's result (and its model would be resumed)."""
    recorded = (read_record(point.record_file) or {}).get('options')
    wanted = json.loads(json.dumps(point.options))  # as the record stores them
    if recorded is None or recorded == wanted:
        return
    changed = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
    key = changed[0]
    raise SweepError(
        sweep.where(), f"{point.name} (seed {point.seed}): the record in {point.run_dir} was made with other "
        f"options ({len(changed)} differ, e.g. {key}: {recorded.get(key)!r} there, {wanted.get(key)!r} now)",
        "move that run folder away (or pass --runs-dir) to train it again, or restore the sweep file",
    )


def check_requirements(sweep: Sweep, scale: str) -> None:
    missing = sweep.missing_requirements(scale)
    if missing:
        raise SweepError(
            sweep.where(f'scales.{scale}.requires'), f"needs {missing[0]}, which is absent",
            "put the data there (e.g. the shared data folder next to the repo) or pick another scale",
        )


def point_payload(sweep: Sweep, point: Point, by_name: Dict[str, Point]) -> Dict[str, object]:
    """Everything the worker needs, and the record keeps, about one point."""
    return {
        'sweep': sweep.name,
        'sweep_file': str(sweep.path.resolve()),
        'repo_root': str(sweep.root),
        'scale': point.scale,
        'name': point.name,
        'model': point.model,
        'configuration': point.configuration,
        'metric': sweep.metric,
        'options': point.options,
        'argv': point.argv(),
        'command': point.command(),
        'seed': point.seed,
        'run_dir': str(point.run_dir),
        'record_file': str(point.record_file),
        'depends_on': list(point.depends_on),
        'dependency_models': {d: str(by_name[d].model_file) for d in point.depends_on},
    }


def write_point(sweep: Sweep, point: Point, by_name: Dict[str, Point]) -> Path:
    """Write ``<run_dir>/point.json`` (atomically) and return its path."""
    path = point.run_dir / 'point.json'
    write_point_file(path, point_payload(sweep, point, by_name))
    return path
