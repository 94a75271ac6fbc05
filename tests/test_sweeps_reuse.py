"""A point identical to a finished run of any sweep (options, scale, seed) takes
that run instead of training again (a stand-in worker: no training)."""

import json
import textwrap

import pytest

from parlai_hash.sweeps import cli, local
from parlai_hash.sweeps.records import read_record, write_record
from parlai_hash.sweeps.reuse import finished_runs, identity
from parlai_hash.sweeps.spec import load_sweep

SHARED = "{model: transformer/generator, n_layers: 2}"
FIRST = f"""
sweep: first
seed: 0
scales:
  local:
    options: {{task: integration_tests, batchsize: 2}}
points:
  - name: dense
    model: Baseline
    configuration: dense, as trained first
    options: {SHARED}
"""
SECOND = f"""
sweep: second
seed: 0
scales:
  local:
    options: {{task: integration_tests, batchsize: 2}}
points:
  - name: reference
    model: Baseline Transformer
    configuration: the same model under another name
    options: {SHARED}
  - name: wider
    options: {{model: transformer/generator, n_layers: 2, embedding_size: 32}}
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """Two sweeps sharing one point; the first has trained it (seed 0)."""
    (tmp_path / 'pyproject.toml').write_text('')
    (tmp_path / 'sweeps').mkdir()
    for name, text in (('first', FIRST), ('second', SECOND)):
        (tmp_path / 'sweeps' / f'{name}.yaml').write_text(textwrap.dedent(text))
    first = load_sweep(tmp_path / 'sweeps' / 'first.yaml')
    dense = first.points('local')[0]
    dense.run_dir.mkdir(parents=True)
    (dense.run_dir / 'model').write_bytes(b'weights')
    write_record(dense.record_file, {'sweep': 'first', 'scale': 'local', 'point': 'dense', 'model': 'Baseline',
                                     'metric': 'ppl', 'valid': {'ppl': 42.0}, 'test': {'ppl': 43.0},
                                     'options': dense.options, 'seed': 0, 'train_time_s': 9.0})
    trained = []

    def fake_worker(point_file, log_file, echo, env=None, stops=None):
        payload = json.loads(point_file.read_text())
        trained.append(payload['name'])
        write_record(point_file.parent / 'record.json', {'metric': 'ppl', 'valid': {'ppl': 1.0},
                                                         'test': {'ppl': 1.0}, 'options': payload['options'],
                                                         'seed': payload['seed']})
        return 0

    monkeypatch.setattr(local, '_run_worker', fake_worker)
    return tmp_path, dense, trained


def test_an_identical_point_takes_the_finished_run_under_its_own_name(repo, capsys):
    root, dense, trained = repo
    second = root / 'sweeps' / 'second.yaml'
    assert cli.main(['run', str(second), '--local', '--quiet']) == 0
    out = capsys.readouterr().out
    assert '1 to run, 1 reused from identical finished runs' in out
    assert f'reference: reused {dense.run_dir} (same options and seed)' in out
    assert trained == ['wider']  # only the point no run had trained
    reference = {p.name: p for p in load_sweep(second).points('local')}['reference']
    record = read_record(reference.record_file)
    assert record['valid']['ppl'] == 42.0 and record['train_time_s'] == 9.0  # what was measured
    assert (record['sweep'], record['point'], record['model']) == ('second', 'reference', 'Baseline Transformer')
    assert record['configuration'] == 'the same model under another name'
    assert record['reused_from'] == str(dense.run_dir)
    # The model is the same file, linked, so dependants and expert-load reads find it.
    assert (reference.run_dir / 'model').read_bytes() == b'weights'
    assert (reference.run_dir / 'model').stat().st_ino == (dense.run_dir / 'model').stat().st_ino
    # A second run finds nothing to do; a reused record is traced to the run that trained.
    assert cli.main(['run', str(second), '--local', '--quiet']) == 0
    assert '0 to run, 2 finished' in capsys.readouterr().out
    index = finished_runs(root / 'runs' / 'sweeps', 'local')
    assert index[identity('local', dense.options, 0)] == dense.run_dir


def test_dry_run_says_what_it_would_reuse_and_touches_nothing(repo, capsys):
    root, dense, trained = repo
    assert cli.main(['run', str(root / 'sweeps' / 'second.yaml'), '--local', '--dry-run']) == 0
    out = capsys.readouterr().out
    assert f'reference: would reuse {dense.run_dir}' in out
    assert 'parlai train_model' in out and out.count('parlai train_model') == 1  # only `wider` would train
    assert not (root / 'runs' / 'sweeps' / 'second').exists()
    assert trained == []


def test_no_reuse_and_another_seed_train_anyway(repo, capsys):
    root, dense, trained = repo
    second = str(root / 'sweeps' / 'second.yaml')
    assert cli.main(['run', second, '--local', '--quiet', '--seeds', '1']) == 0
    assert 'reused' not in capsys.readouterr().out
    assert sorted(trained) == ['reference@seed1', 'wider@seed1']
    assert cli.main(['run', second, '--local', '--quiet', '--no-reuse']) == 0
    assert 'reused' not in capsys.readouterr().out
    assert sorted(trained[2:]) == ['reference', 'wider']
