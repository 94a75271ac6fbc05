"""`run --local --jobs N`: points side by side, parents before children, one trainer
per run folder (a stand-in worker: no training)."""

import io
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from parlai_hash.sweeps import cli, local
from parlai_hash.sweeps.claim import claim, release
from parlai_hash.sweeps.errors import SweepError
from parlai_hash.sweeps.records import read_record, write_record
from parlai_hash.sweeps.spec import load_sweep

SWEEP = """
sweep: jobs
seed: 0
scales:
  local:
    options: {task: integration_tests, batchsize: 2}
points:
  - name: parent
    options: {model: transformer/generator}
  - name: child
    init_from: parent
  - name: a
    options: {model: transformer/generator}
  - name: b
    options: {model: transformer/generator}
  - name: c
    options: {model: transformer/generator}
"""


@pytest.fixture
def sweep_points(tmp_path):
    path = tmp_path / 'jobs.yaml'
    path.write_text(textwrap.dedent(SWEEP))
    sweep = load_sweep(path)
    return sweep, sweep.points('local', runs_dir=tmp_path / 'runs')


class FakeWorker:
    """Stands in for the training process: notes what runs at once, writes a record."""

    def __init__(self, fail=()):
        self.fail = set(fail)
        self.lock = threading.Lock()
        self.running, self.most, self.order = 0, 0, []
        self.seen_parent_record = {}

    def __call__(self, point_file, log_file, echo, env=None, stops=None):
        import json
        payload = json.loads(point_file.read_text())
        name = payload['name']
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.order.append(name)
            self.env = env
        if echo is not None:
            echo(f'training {name}')
        for parent in payload['depends_on']:
            self.seen_parent_record[name] = read_record(point_file.parent.parent / parent / 'record.json')
        time.sleep(0.2)
        with self.lock:
            self.running -= 1
        if name in self.fail:
            return 1
        write_record(point_file.parent / 'record.json', {'metric': 'ppl', 'valid': {'ppl': 1.0}, 'test': {'ppl': 1.0}})
        return 0


def test_two_jobs_train_two_points_at_once_and_children_wait_for_parents(sweep_points, monkeypatch, capsys):
    sweep, points = sweep_points
    fake = FakeWorker()
    monkeypatch.setattr(local, '_run_worker', fake)
    out = io.StringIO()
    outcome = local.run_local(sweep, points, points, quiet=False, out=out, jobs=2)
    assert sorted(outcome.ran) == ['a', 'b', 'c', 'child', 'parent']
    assert not outcome.failed and not outcome.skipped
    assert fake.most == 2
    assert fake.seen_parent_record['child'] is not None  # the parent had finished when the child started
    assert fake.order.index('child') > fake.order.index('parent')
    # Points start in file order as far as dependencies allow: `a` takes the slot `child` cannot.
    assert set(fake.order[:2]) == {'parent', 'a'}
    # Several at once: each output line says whose it is.
    assert '[a] training a' in out.getvalue() and '[2/5] a: training' in out.getvalue()


def test_one_job_keeps_the_old_order(sweep_points, monkeypatch):
    sweep, points = sweep_points
    fake = FakeWorker()
    monkeypatch.setattr(local, '_run_worker', fake)
    local.run_local(sweep, points, points, quiet=True, jobs=1)
    assert fake.most == 1
    assert fake.order == ['parent', 'child', 'a', 'b', 'c']


def test_a_failed_parent_skips_its_child_and_the_rest_go_on(sweep_points, monkeypatch, capsys):
    sweep, points = sweep_points
    monkeypatch.setattr(local, '_run_worker', FakeWorker(fail={'parent'}))
    outcome = local.run_local(sweep, points, points, quiet=True, jobs=2)
    assert 'parent' in outcome.failed
    assert outcome.skipped == {'child': 'needs parent, which did not finish'}
    assert sorted(outcome.ran) == ['a', 'b', 'c']


def test_a_point_another_run_is_training_is_left_to_it(sweep_points, monkeypatch, tmp_path):
    sweep, points = sweep_points
    by_name = {p.name: p for p in points}
    holder = subprocess.Popen(
        [sys.executable, '-c', textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from parlai_hash.sweeps.claim import claim
            assert claim(Path({str(by_name['parent'].run_dir)!r})) is None
            print('held', flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        assert claim(by_name['parent'].run_dir) == f'pid {holder.pid}'
        fake = FakeWorker()
        monkeypatch.setattr(local, '_run_worker', fake)
        outcome = local.run_local(sweep, points, points, quiet=True, jobs=2)
        assert outcome.skipped['parent'] == f'another run is training it (pid {holder.pid})'
        assert outcome.skipped['child'] == 'needs parent, which did not finish'
        assert 'parent' not in fake.order and sorted(outcome.ran) == ['a', 'b', 'c']
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: nothing stale to clean up.
    assert claim(by_name['parent'].run_dir) is None
    release(by_name['parent'].run_dir)


def test_a_point_finished_by_another_run_meanwhile_is_not_trained_again(sweep_points, monkeypatch):
    sweep, points = sweep_points
    by_name = {p.name: p for p in points}
    write_record(by_name['b'].record_file, {'metric': 'ppl', 'valid': {'ppl': 2.0}, 'test': {'ppl': 2.0}})
    fake = FakeWorker()
    monkeypatch.setattr(local, '_run_worker', fake)
    outcome = local.run_local(sweep, points, points, quiet=True, jobs=1)
    assert 'b' in outcome.ran and 'b' not in fake.order
    assert read_record(by_name['b'].record_file)['valid']['ppl'] == 2.0


def test_the_cores_are_shared_out_unless_the_caller_chose(monkeypatch):
    monkeypatch.setattr(local, '_cores', lambda: 8)
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.delenv('MKL_NUM_THREADS', raising=False)
    assert local.worker_env(2)['OMP_NUM_THREADS'] == '4'
    assert local.worker_env(16)['MKL_NUM_THREADS'] == '1'
    assert 'OMP_NUM_THREADS' not in local.worker_env(1)
    monkeypatch.setenv('OMP_NUM_THREADS', '3')
    assert local.worker_env(2)['OMP_NUM_THREADS'] == '3'


def test_bad_jobs_values_are_refused_with_the_option_named(sweep_points, capsys):
    sweep, _ = sweep_points
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(['run', str(sweep.path), '--local', '--jobs', '0'])
    assert "--jobs: '0' is not a number of points to train at once" in capsys.readouterr().err
    code = cli.main(['run', str(sweep.path), '--slurm', '--jobs', '2', '--dry-run'])
    assert code != 0
    assert '--jobs is for --local runs' in capsys.readouterr().err
