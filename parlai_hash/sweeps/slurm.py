"""``run --slurm``: submit the points to a SLURM cluster through submitit.

Each point is one job running :func:`parlai_hash.sweeps.worker.run_point_file`
(the same code as ``--local``), with the nodes/GPUs of the scale's ``slurm:``
section: one task per GPU, trained data-parallel by ParlAI. On SLURM a point
that needs another (``init_from``) is submitted at once with
``--dependency=afterok:<job>``; other submitit executors (``local``, used by
the tests, and ``debug``) have no dependencies, so they run wave after wave and
always wait. A point already submitted and still pending or running (its
``job.json``) is not submitted twice.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO

from parlai_hash.io_utils import atomic_write
from parlai_hash.sweeps.errors import SweepError
from parlai_hash.sweeps.records import read_record
from parlai_hash.sweeps.runner import write_point
from parlai_hash.sweeps.spec import Point, Scale, Sweep
from parlai_hash.sweeps.worker import run_point_file

#: submitit's names for the scale's ``slurm:`` keys.
_GENERIC = {'nodes', 'gpus_per_node', 'cpus_per_task', 'mem_gb', 'timeout_min'}
_SLURM_ONLY = {'partition', 'constraint', 'account', 'qos', 'comment', 'array_parallelism'}
_ACTIVE_STATES = {'PENDING', 'RUNNING', 'REQUEUED', 'CONFIGURING', 'COMPLETING', 'SUSPENDED', 'RESIZING'}


@dataclass
class SubmitOutcome:
    submitted: Dict[str, str] = field(default_factory=dict)  # point -> job id
    already_queued: Dict[str, str] = field(default_factory=dict)  # point -> job id
    failed: Dict[str, str] = field(default_factory=dict)  # point -> why (waited runs only)
    finished: List[str] = field(default_factory=list)  # waited runs only


def executor_parameters(scale: Scale, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """submitit parameters from the scale's ``slurm:`` section (plus command-line overrides)."""
    config = {**scale.slurm, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    params: Dict[str, Any] = {}
    for key, value in config.items():
        if value is None or value == '':
            continue  # e.g. partition: ${SLURM_PARTITION:-} with the variable unset
        if key in _GENERIC:
            params[key] = value
        elif key in _SLURM_ONLY:
            params[f'slurm_{key}'] = value
        elif key == 'additional':
            params['slurm_additional_parameters'] = dict(value)
    gpus = int(params.get('gpus_per_node', 0) or 0)
    # ParlAI's SLURM training runs one process per GPU.
    params['tasks_per_node'] = max(gpus, 1)
    params.setdefault('timeout_min', 60)
    return params


def make_executor(folder: Path, cluster: Optional[str]) -> Any:
    """submitit's executor; SLURM unless told otherwise (submitit alone would
    quietly fall back to running here when there is no SLURM)."""
    import shutil

    import submitit

    if cluster is None:
        if shutil.which('sbatch') is None:
            raise SweepError('--slurm', "SLURM is not available on this machine (no sbatch)",
                             "run from a SLURM login node, use --local, or --slurm-cluster local to test")
        cluster = 'slurm'
    return submitit.AutoExecutor(folder=folder, cluster=cluster)


def _job_file(point: Point) -> Path:
    return point.run_dir / 'job.json'


def queued_job(point: Point, folder: Path) -> Optional[str]:
    """The SLURM job already submitted for this point, if it is pending or running."""
    try:
        job = json.loads(_job_file(point).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    if job.get('cluster') != 'slurm':
        return None
    import submitit

    try:
        state = submitit.SlurmJob(folder=folder, job_id=job['job_id']).state
    except Exception:  # sacct unavailable: better to resubmit than to hang
        return None
    return job['job_id'] if state.split(' ')[0] in _ACTIVE_STATES else None


def _remember(point: Point, job_id: str, cluster: str) -> None:
    with atomic_write(_job_file(point)) as f:
        json.dump({'job_id': job_id, 'cluster': cluster,
                   'submitted_at': datetime.now(timezone.utc).isoformat(timespec='seconds')}, f)


def submit(
    sweep: Sweep, scale: Scale, points: Sequence[Point], all_points: Sequence[Point], folder: Path,
    cluster: Optional[str] = None, wait: bool = False, overrides: Optional[Dict[str, Any]] = None,
    out: Optional[TextIO] = None,
) -> SubmitOutcome:
    out = out or sys.stdout  # looked up now: callers may have redirected it
    executor = make_executor(folder, cluster)
    params = executor_parameters(scale, overrides)
    by_name = {p.name: p for p in all_points}
    outcome = SubmitOutcome()
    jobs: Dict[str, Any] = {}
    on_slurm = executor.cluster == 'slurm'
    remaining = list(points)
    while remaining:
        # SLURM queues dependants itself; other executors get one wave at a time.
        wave = remaining if on_slurm else [
            p for p in remaining if all(d not in {q.name for q in remaining} for d in p.depends_on)
        ]
        remaining = [p for p in remaining if p not in wave]
        for point in wave:
            broken = [d for d in point.depends_on if d in outcome.failed]
            if broken:
                outcome.failed[point.name] = f'needs {broken[0]}, which failed'
                continue
            job_id = queued_job(point, folder) if on_slurm else None
            if job_id is not None:
                outcome.already_queued[point.name] = job_id
                print(f'{point.name}: already queued as job {job_id}', file=out)
                continue
            point_file = write_point(sweep, point, by_name)
            extra = dict(params.get('slurm_additional_parameters', {}))
            after = [outcome.submitted.get(d) or outcome.already_queued.get(d) for d in point.depends_on]
            after = [j for j in after if j]
            if on_slurm and after:
                extra['dependency'] = 'afterok:' + ':'.join(after)
            job_params = {**params, 'name': f'{sweep.name}-{point.name}'}
            if on_slurm:
                job_params['slurm_additional_parameters'] = extra
            executor.update_parameters(**job_params)
            job = executor.submit(run_point_file, str(point_file))
            jobs[point.name] = job
            outcome.submitted[point.name] = str(job.job_id)
            _remember(point, str(job.job_id), executor.cluster)
            print(f'{point.name}: submitted as job {job.job_id}'
                  f'{" after " + ",".join(after) if on_slurm and after else ""}', file=out, flush=True)
        if wait or not on_slurm:
            _wait(wave, jobs, outcome, out)
    return outcome


def _wait(points: Sequence[Point], jobs: Dict[str, Any], outcome: SubmitOutcome, out: TextIO) -> None:
    for point in points:
        job = jobs.get(point.name)
        if job is None:
            continue
        try:
            job.result()
        except Exception as err:  # submitit re-raises the job's failure here
            lines = str(err).strip().splitlines()
            outcome.failed[point.name] = lines[-1] if lines else type(err).__name__
            print(f'{point.name}: FAILED (job {job.job_id}): {outcome.failed[point.name]}', file=out, flush=True)
            continue
        if read_record(point.record_file) is None:
            outcome.failed[point.name] = 'the job ended without a record'
        else:
            outcome.finished.append(point.name)
            print(f'{point.name}: finished (job {job.job_id})', file=out, flush=True)
