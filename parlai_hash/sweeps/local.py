"""``run --local``: train the points on this machine, ``--jobs`` at a time.

Each point runs in its own process (``python -m parlai_hash.sweeps.worker``):
memory and GPU state are released between points, and a point that fails does
not stop the others (its dependants are skipped). A point starts once the
points it needs have finished; with ``--jobs N`` up to N train side by side,
each with the machine's cores shared out (``OMP_NUM_THREADS``) unless the
caller set that. A point another ``run`` is training (its run folder is
locked, see ``claim``) is left to it. Output goes to ``<run_dir>/train.log``
and, unless quiet, to the terminal (prefixed with the point's name when
several run at once).

Stopping: Ctrl-C (or SIGTERM) once lets the points in training finish and
starts no more, so a sweep can be paused at a run boundary and taken up again
by the same command; a second Ctrl-C stops the points in training too. The
workers ignore Ctrl-C themselves (the runner decides), so a terminal's
interrupt does not cut every training short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, TextIO

from parlai_hash.sweeps.claim import claim, release
from parlai_hash.sweeps.records import read_record
from parlai_hash.sweeps.runner import write_point
from parlai_hash.sweeps.spec import Point, Sweep
from parlai_hash.sweeps.worker import RUNNER_STOPS

THREAD_VARIABLES = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')


@dataclass
class LocalOutcome:
    ran: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)  # point -> why
    skipped: Dict[str, str] = field(default_factory=dict)  # point -> why
    not_started: List[str] = field(default_factory=list)  # left by a stop request


class StopRequests:
    """Counts stop requests (Ctrl-C, SIGTERM): the first starts no more points,
    the second terminates the workers in training."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.count = 0
        self.say = say
        self.lock = threading.Lock()
        self.workers: set = set()  # Popen of the points in training

    @property
    def draining(self) -> bool:
        return self.count > 0

    def request(self, signum: int = signal.SIGINT, frame: object = None) -> None:
        self.count += 1
        with self.lock:
            workers = list(self.workers)
        if self.count == 1:
            self.say('stop requested: the points in training will finish and no other starts '
                     '(the same command takes the sweep up again); interrupt again to stop them now')
            return
        self.say('stopping the points in training now; the next run takes each up from what ParlAI saved of it')
        for proc in workers:
            proc.terminate()

    def add(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.workers.add(proc)
        if self.count > 1:  # stopped while this one was starting
            proc.terminate()

    def remove(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.workers.discard(proc)

    def install(self) -> Callable[[], None]:
        """Route SIGINT and SIGTERM here (main thread only); returns the undo."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.signal(sig, self.request) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return '\n'.join(path.read_text(encoding='utf-8', errors='replace').splitlines()[-lines:])
    except OSError:
        return ''


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_env(jobs: int) -> Dict[str, str]:
    """The environment of each worker: the cores shared out among ``jobs``
    (a thread count the caller exported is kept)."""
    env = dict(os.environ)
    env[RUNNER_STOPS] = '1'
    if jobs > 1:
        for name in THREAD_VARIABLES:
            env.setdefault(name, str(max(1, _cores() // jobs)))
    return env


def _run_worker(point_file: Path, log_file: Path, echo: Callable[[str], None] | None,
                env: Optional[Dict[str, str]] = None, stops: Optional[StopRequests] = None) -> int:
    """Run the worker, copying its output to the log (and the terminal)."""
    with open(log_file, 'a', encoding='utf-8') as log:
        proc = subprocess.Popen(
            [sys.executable, '-u', '-m', 'parlai_hash.sweeps.worker', str(point_file)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
        )
        if stops is not None:
            stops.add(proc)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if echo is not None:
                    echo(line.rstrip('\n'))
            return proc.wait()
        finally:
            if stops is not None:
                stops.remove(proc)


def run_local(
    sweep: Sweep, points: Sequence[Point], all_points: Sequence[Point],
    quiet: bool = False, out: Optional[TextIO] = None, jobs: int = 1,
    stops: Optional[StopRequests] = None,
) -> LocalOutcome:
    """Train ``points``, in order as far as their dependencies and ``jobs`` allow;
    dependants of a failed (or elsewhere-trained) point are skipped. After a
    stop request (``stops``; by default Ctrl-C and SIGTERM) no point starts."""
    if jobs < 1:
        raise ValueError(f'jobs must be at least 1, got {jobs}')
    out = out or sys.stdout  # looked up now: callers may have redirected it
    by_name = {p.name: p for p in all_points}
    outcome = LocalOutcome()
    lock = threading.RLock()  # one line at a time on `out` (re-entered by a stop request's message)
    env = worker_env(jobs)
    total = len(points)  # for the [i/total] tags

    def say(text: str) -> None:
        with lock:
            print(text, file=out, flush=True)

    own_stops = stops is None
    stops = stops or StopRequests(say)

    def train(i: int, point: Point) -> None:
        tag = f'[{i}/{total}] {point.name}'
        held_by = claim(point.run_dir)
        if held_by is not None:
            outcome.skipped[point.name] = f'another run is training it ({held_by})'
            say(f'{tag}: skipped ({outcome.skipped[point.name]})')
            return
        try:
            if read_record(point.record_file) is not None:  # another run finished it meanwhile
                outcome.ran.append(point.name)
                say(f'{tag}: finished meanwhile by another run')
                return
            point_file = write_point(sweep, point, by_name)
            log_file = point.run_dir / 'train.log'
            say(f'{tag}: training ({point.command()})')
            echo = None if quiet else (say if jobs == 1 else (lambda line: say(f'[{point.name}] {line}')))
            start = time.monotonic()
            code = _run_worker(point_file, log_file, echo, env, stops)
        finally:
            release(point.run_dir)
        record = read_record(point.record_file)
        if record is None and stops.count > 1:
            outcome.failed[point.name] = 'stopped mid-training'
            say(f'{tag}: stopped mid-training')
            return
        if code != 0 or record is None:
            outcome.failed[point.name] = f'exit code {code}; see {log_file}'
            say(f'{tag}: FAILED ({outcome.failed[point.name]})\n{_tail(log_file)}')
            return
        outcome.ran.append(point.name)
        metric = record['metric']
        say(f"{tag}: done in {time.monotonic() - start:.0f}s, "
            f"valid {metric} {record['valid'].get(metric, float('nan')):.4g}, "
            f"test {metric} {record['test'].get(metric, float('nan')):.4g}")

    restore = stops.install() if own_stops else (lambda: None)
    try:
        _schedule(list(points), jobs, outcome, stops, train, say)
    finally:
        restore()
    return outcome


def _schedule(waiting: List[Point], jobs: int, outcome: LocalOutcome, stops: StopRequests,
              train: Callable[[int, Point], None], say: Callable[[str], None]) -> None:
    """Start each point once its parents have finished, up to ``jobs`` at once."""
    running: Dict[Future, Point] = {}
    started, total = 0, len(waiting)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while waiting or running:
            if stops.draining and waiting:
                outcome.not_started.extend(p.name for p in waiting)
                waiting.clear()
            unfinished = {p.name for p in waiting} | {p.name for p in running.values()}
            for point in list(waiting):
                if len(running) >= jobs:
                    break
                broken = [d for d in point.depends_on if d in outcome.failed or d in outcome.skipped]
                if broken:
                    waiting.remove(point)
                    started += 1
                    outcome.skipped[point.name] = f'needs {broken[0]}, which did not finish'
                    say(f'[{started}/{total}] {point.name}: skipped ({outcome.skipped[point.name]})')
                    continue
                if unfinished.intersection(point.depends_on):
                    continue  # its parent has not finished yet
                waiting.remove(point)
                started += 1
                running[pool.submit(train, started, point)] = point
            if running:
                # a timeout, so a stop request is seen while every point trains
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    future.result()  # a bug in the runner itself should not pass silently
