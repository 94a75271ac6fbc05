"""Stopping `run --local` at a run boundary: the first Ctrl-C (or SIGTERM) lets
the points in training finish and starts no other, the second stops them (a
stand-in worker: no training)."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from parlai_hash.sweeps import cli, local
from parlai_hash.sweeps.records import write_record
from parlai_hash.sweeps.spec import load_sweep
from parlai_hash.sweeps.worker import RUNNER_STOPS

SWEEP = """
sweep: stop
seed: 0
scales:
  local:
    options: {task: integration_tests, batchsize: 2}
points:
  - name: a
    options: {model: transformer/generator}
  - name: b
    options: {model: transformer/generator}
  - name: c
    options: {model: transformer/generator}
  - name: d
    options: {model: transformer/generator}
"""


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / 'stop.yaml'
    path.write_text(textwrap.dedent(SWEEP))
    return path


def interrupting_worker(trained, signum=signal.SIGINT):
    """A worker that, while training the first point, interrupts the runner as a
    terminal's Ctrl-C (or a `kill`) would, then finishes its point."""

    first = threading.Lock()

    def worker(point_file, log_file, echo, env=None, stops=None):
        name = json.loads(point_file.read_text())['name']
        if first.acquire(blocking=False):
            os.kill(os.getpid(), signum)
        time.sleep(1.5)  # the runner's handler runs meanwhile, in the main thread
        trained.append(name)
        write_record(point_file.parent / 'record.json', {'metric': 'ppl', 'valid': {'ppl': 1.0}, 'test': {'ppl': 1.0}})
        return 0

    return worker


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_one_interrupt_finishes_the_points_in_training_and_starts_no_other(sweep_file, monkeypatch, signum):
    sweep = load_sweep(sweep_file)
    points = sweep.points('local', runs_dir=sweep_file.parent / 'runs')
    trained = []
    monkeypatch.setattr(local, '_run_worker', interrupting_worker(trained, signum))
    before = signal.getsignal(signum)
    out = io.StringIO()
    outcome = local.run_local(sweep, points, points, quiet=True, out=out, jobs=2)
    # Two were training when the stop came; both finished with their records; no third started.
    assert sorted(trained) == ['a', 'b'] and sorted(outcome.ran) == ['a', 'b']
    assert outcome.not_started == ['c', 'd'] and not outcome.failed
    assert all(p.record_file.exists() for p in points[:2])
    assert 'stop requested: the points in training will finish and no other starts' in out.getvalue()
    assert signal.getsignal(signum) is before  # the runner's handler is gone afterwards


def test_the_same_command_goes_on_after_a_stop(sweep_file, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(local, '_run_worker', interrupting_worker(trained))
    args = ['run', str(sweep_file), '--local', '--quiet', '--runs-dir', str(sweep_file.parent / 'runs')]
    assert cli.main(args) == 130
    assert 'stopped before 3 point(s): b, c, d; the same command goes on from here' in capsys.readouterr().out
    assert cli.main(args) == 0
    assert 'stopped' not in capsys.readouterr().out
    assert trained == ['a', 'b', 'c', 'd']


def test_a_second_interrupt_terminates_the_workers():
    stops = local.StopRequests(say=lambda text: None)
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        stops.add(sleeper)
        stops.request()
        assert stops.draining and sleeper.poll() is None  # the first request lets it run
        stops.request()
        assert sleeper.wait(timeout=10) == -signal.SIGTERM
        late = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
        stops.add(late)  # a worker starting after the second request does not run on
        assert late.wait(timeout=10) == -signal.SIGTERM
    finally:
        sleeper.kill()


@pytest.mark.parametrize('under_runner', [True, False])
def test_workers_leave_ctrl_c_to_the_runner(under_runner):
    env = {k: v for k, v in os.environ.items() if k != RUNNER_STOPS}
    if under_runner:
        env[RUNNER_STOPS] = '1'
    code = textwrap.dedent("""
        import os, signal
        from parlai_hash.sweeps.worker import leave_interrupts_to_the_runner
        leave_interrupts_to_the_runner()
        os.kill(os.getpid(), signal.SIGINT)
        print('still training')
    """)
    done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert ('still training' in done.stdout) == under_runner
    assert (done.returncode == 0) == under_runner
