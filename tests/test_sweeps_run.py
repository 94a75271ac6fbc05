"""The runner end to end on a tiny sweep: local runs, records, resuming, failures,
reports and figures, and the SLURM path through submitit's local executor."""

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import fake_srun, free_port

from parlai_hash.sweeps.cli import main as sweeps_main
from parlai_hash.sweeps.records import TRAIN_EVAL_EXAMPLES, read_record
from parlai_hash.sweeps.report import late_change
from parlai_hash.sweeps.runner import plan_run, write_point
from parlai_hash.sweeps.spec import load_sweep

FIXTURE = Path(__file__).parent / 'fixtures' / 'wikitext'
K, D_MODEL, D_FFN = 4, 16, 32

TINY_SWEEP = f"""
sweep: tiny
title: Tiny sweep
seed: 7
scales:
  local:
    requires: [./data/wikitext/wiki.valid.tokens]
    slurm: {{timeout_min: 10}}
    options:
      task: wikitext103
      wikitext_dir: ./data/wikitext
      wikitext_carve_from: valid
      wikitext_chunk_tokens: 16
      dict_tokenizer: space
      datapath: ./parlai_data
      n_layers: 2
      embedding_size: {D_MODEL}
      ffn_size: {D_FFN}
      n_heads: 2
      batchsize: 4
      optimizer: adam
      learningrate: 0.01
      max_train_steps: 4
      validation_every_n_steps: 2
      skip_generation: true
      validation_metric: ppl
      validation_metric_mode: min
points:
  - name: dense
    model: Baseline
    configuration: dense
    options: {{model: transformer/generator}}
  - name: hash
    model: Hash Layer
    configuration: "1x{{num_experts}} {{hash_type}}"
    # invsqrt: its scheduler, not the loop, ends training at the step limit
    options: {{model: hash_generator, num_experts: {K}, hash_layers: 1, hash_type: random,
              lr_scheduler: invsqrt, warmup_updates: 1}}
  - name: ft
    model: Hash Layer
    configuration: fine-tuned, experts frozen
    init_from: hash
    options: {{freeze: experts, max_train_steps: 2}}
  - name: broken
    model: Hash Layer
    configuration: a point that fails
    options: {{model: hash_generator, num_experts: 0}}
  - name: after_broken
    init_from: broken
figures:
  - {{kind: curves, file: curves.png}}
  - {{kind: expert_load, file: load.png, points: [hash, ft]}}
"""


def make_repo(root: Path) -> Path:
    """A stand-in repository: pyproject.toml, the data, and the sweep file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / 'pyproject.toml').write_text('')
    shutil.copytree(FIXTURE, root / 'data' / 'wikitext')
    (root / 'sweeps').mkdir()
    path = root / 'sweeps' / 'tiny.yaml'
    path.write_text(textwrap.dedent(TINY_SWEEP))
    return path


@pytest.fixture(scope='module')
def ran(tmp_path_factory):
    """Run the whole sweep once with the real command line (a subprocess)."""
    sweep_file = make_repo(tmp_path_factory.mktemp('repo'))
    proc = subprocess.run(
        [sys.executable, '-m', 'parlai_hash.sweeps', 'run', str(sweep_file), '--local', '--quiet'],
        capture_output=True, text=True, timeout=300, cwd='/',
    )
    sweep = load_sweep(sweep_file)
    points = {p.name: p for p in sweep.points('local')}
    return sweep_file, sweep, points, proc


def test_every_good_point_finishes_and_the_failure_is_reported(ran):
    _, _, points, proc = ran
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for name in ('dense', 'hash', 'ft'):
        assert read_record(points[name].record_file) is not None, proc.stdout
    assert read_record(points['broken'].record_file) is None
    assert 'broken: FAILED' in proc.stdout and '--num-experts: got 0' in proc.stdout
    assert 'after_broken: skipped (needs broken, which did not finish)' in proc.stdout
    assert 'after_broken: not finished' in proc.stdout


def test_records_hold_metrics_configuration_and_parameter_counts(ran):
    _, _, points, _ = ran
    dense = read_record(points['dense'].record_file)
    hashed = read_record(points['hash'].record_file)
    for record in (dense, hashed):
        assert record['valid']['ppl'] > 1 and record['test']['ppl'] > 1
        assert record['train_steps'] == 4 and record['seed'] == 7
        # Validated every 2 steps and once more at the step limit (ParlAI alone would not).
        assert [c['train_steps'] for c in record['valid_curve']] == [2.0, 4.0]
        best = min(record['valid_curve'], key=lambda c: c['ppl'])
        assert record['best_valid_step'] == best['train_steps']
        assert record['valid']['ppl'] == pytest.approx(best['ppl'], rel=1e-6)  # the kept model is the best
        # The kept model on training text (the regime), and the passes over the training split.
        assert record['train']['ppl'] > 1 and 0 < record['train_eval_examples'] <= TRAIN_EVAL_EXAMPLES
        assert record['train']['ppl'] != pytest.approx(record['valid']['ppl'], rel=1e-6)
        assert 0 < record['epochs'] < 100
        assert record['train_dropped'] is None  # neither has a capacity
    assert hashed['options']['num_experts'] == K and hashed['configuration'] == f'1x{K} random'
    assert hashed['command'].startswith('parlai train_model --model hash_generator')
    # K experts replace one dense FFN (d*D + D + D*d + d each); a hash has no router weights.
    one_ffn = D_MODEL * D_FFN + D_FFN + D_FFN * D_MODEL + D_MODEL
    assert hashed['params'] - dense['params'] == (K - 1) * one_ffn
    assert hashed['expert_params'] == K * one_ffn
    assert hashed['active_params'] == dense['params']  # equal compute per token
    assert dense['expert_params'] == 0


def test_fine_tuning_starts_from_its_parent_and_keeps_frozen_experts(ran):
    _, _, points, _ = ran
    ft = read_record(points['ft'].record_file)
    assert ft['depends_on'] == ['hash']
    assert ft['options']['init_model'] == str(points['hash'].model_file)
    assert ft['params_trainable'] == ft['params'] - ft['expert_params']
    parent = torch.load(points['hash'].model_file, map_location='cpu', weights_only=False)['model']
    child = torch.load(points['ft'].model_file, map_location='cpu', weights_only=False)['model']
    experts = [k for k in parent if '.expert_' in k]
    assert experts and all(torch.equal(parent[k], child[k]) for k in experts)
    others = [k for k in parent if '.expert_' not in k and 'position_embeddings' not in k and parent[k].is_floating_point()]
    assert any(not torch.equal(parent[k], child[k]) for k in others)


def test_a_second_run_skips_finished_points(ran, capsys):
    sweep_file, _, points, _ = ran
    before = {n: points[n].record_file.stat().st_mtime_ns for n in ('dense', 'hash', 'ft')}
    assert sweeps_main(['run', str(sweep_file), '--local', '--points', 'dense,ft']) == 0
    assert '0 to run, 2 finished (skipped)' in capsys.readouterr().out
    assert before == {n: points[n].record_file.stat().st_mtime_ns for n in before}


def test_an_unfinished_dependency_is_added_to_the_plan(ran, tmp_path):
    _, sweep, points, _ = ran
    moved = [dataclasses.replace(p, run_dir=tmp_path / p.name) for p in points.values()]
    # Nothing finished there: asking for ft alone must run hash first.
    assert [p.name for p in plan_run(sweep, moved, ['ft']).to_run] == ['hash', 'ft']
    (tmp_path / 'hash').mkdir()
    shutil.copy(points['hash'].record_file, tmp_path / 'hash' / 'record.json')
    plan = plan_run(sweep, moved, ['ft'])
    assert [p.name for p in plan.to_run] == ['ft'] and plan.finished == []


def test_report_prints_and_writes_the_paper_layout(ran, tmp_path, capsys):
    sweep_file, _, points, _ = ran
    footer = tmp_path / 'footer.md'
    footer.write_text('Produced by: the test.\n')
    assert sweeps_main(['report', str(sweep_file), '--out', str(tmp_path), '--footer', str(footer)]) == 0
    printed = capsys.readouterr().out
    assert 'Model' in printed and 'Valid PPL' in printed
    md = (tmp_path / 'tiny.md').read_text()
    lines = md.splitlines()
    assert '| Model | Configuration | Params | Valid PPL | Test PPL | Train PPL | Epochs | Valid Δ last 1/5 |' in lines
    hashed = read_record(points['hash'].record_file)
    change = 100 * late_change(hashed['valid_curve'], 'ppl')
    assert (f"| Hash Layer | 1x{K} random | 18K | {hashed['valid']['ppl']:.2f} | {hashed['test']['ppl']:.2f} | "
            f"{hashed['train']['ppl']:.2f} | {hashed['epochs']:.2f} | {change:+.1f}% |") in lines
    assert '| Hash Layer | a point that fails | — | — | — | — | — | — |' in lines
    assert '2 of 5 points have no result yet.' in md and md.rstrip().endswith('Produced by: the test.')
    import pandas as pd

    frame = pd.read_csv(tmp_path / 'tiny.csv')
    assert list(frame['point']) == ['dense', 'hash', 'ft', 'broken', 'after_broken']
    assert frame.loc[1, 'valid_ppl'] == pytest.approx(hashed['valid']['ppl'])
    for png in ('curves.png', 'load.png'):
        assert (tmp_path / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # The expert load was measured once and cached beside each model.
    cached = pd.read_csv(points['hash'].run_dir / 'expert_load_valid.csv')
    assert len(cached) == K and cached['tokens'].sum() > 0


def test_slurm_path_runs_the_same_points_through_submitit(ran, tmp_path, capsys):
    sweep_file, _, points, _ = ran
    runs = tmp_path / 'runs'
    shutil.copytree(points['dense'].run_dir.parent, runs,
                    ignore=shutil.ignore_patterns('broken', 'after_broken'))
    (runs / 'hash' / 'record.json').unlink()
    (runs / 'ft' / 'record.json').unlink()
    args = ['run', str(sweep_file), '--slurm', '--scale', 'local', '--slurm-cluster', 'local',
            '--runs-dir', str(runs), '--points', 'ft',
            '--no-reuse']  # train again, not take the first run's points
    assert sweeps_main(args) == 0
    out = capsys.readouterr().out
    # hash (unfinished) is needed by ft: it runs first, in its own wave.
    assert out.index('hash: submitted') < out.index('hash: finished') < out.index('ft: submitted')
    for name in ('hash', 'ft'):
        record = read_record(runs / name / 'record.json')
        assert record is not None and record['valid']['ppl'] > 1
        assert json.loads((runs / name / 'job.json').read_text())['cluster'] == 'local'
    assert read_record(runs / 'ft' / 'record.json')['options']['init_model'] == str(runs / 'hash' / 'model')
    assert sweeps_main(args) == 0
    assert '0 to run, 1 finished' in capsys.readouterr().out


def test_run_stops_before_training_when_required_data_is_absent(tmp_path, capsys):
    sweep_file = make_repo(tmp_path / 'repo')
    shutil.rmtree(tmp_path / 'repo' / 'data')
    assert sweeps_main(['run', str(sweep_file), '--local']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'needs' in err and 'wiki.valid.tokens, which is absent' in err


def test_slurm_without_slurm_says_so(ran, capsys, monkeypatch):
    import shutil as shell

    monkeypatch.setattr(shell, 'which', lambda name: None)
    sweep_file, _, _, _ = ran
    assert sweeps_main(['run', str(sweep_file), '--slurm', '--scale', 'local', '--points', 'broken']) == 2
    assert 'SLURM is not available on this machine (no sbatch)' in capsys.readouterr().err


def test_slurm_resources_and_dependencies_reach_the_scheduler(ran, tmp_path, monkeypatch):
    """With a stand-in for submitit's SLURM executor: what would be sent to sbatch."""
    from parlai_hash.sweeps import slurm

    sweep_file, sweep, _, _ = ran
    submitted = []

    class FakeJob:
        def __init__(self, job_id):
            self.job_id = job_id

    class FakeSlurmExecutor:
        cluster = 'slurm'

        def update_parameters(self, **params):
            self.params = params

        def submit(self, fn, point_file):
            submitted.append((Path(point_file).parent.name, dict(self.params)))
            return FakeJob(str(1000 + len(submitted)))

    monkeypatch.setattr(slurm, 'make_executor', lambda folder, cluster: FakeSlurmExecutor())
    monkeypatch.setenv('PART', 'gpu')
    scale = dataclasses.replace(sweep.scale('local'), slurm={
        'nodes': 2, 'gpus_per_node': 8, 'timeout_min': 600, 'partition': '${PART}', 'constraint': '',
        'additional': {'exclusive': True}})
    scale.slurm['partition'] = 'gpu'
    points = [dataclasses.replace(p, run_dir=tmp_path / p.name) for p in sweep.points('local')]
    by_name = {p.name: p for p in points}
    outcome = slurm.submit(sweep, scale, [by_name['hash'], by_name['ft']], points, tmp_path / 'slurm')
    assert outcome.submitted == {'hash': '1001', 'ft': '1002'}
    (first, hash_params), (second, ft_params) = submitted
    assert (first, second) == ('hash', 'ft')
    assert hash_params['nodes'] == 2 and hash_params['gpus_per_node'] == 8 and hash_params['tasks_per_node'] == 8
    assert hash_params['slurm_partition'] == 'gpu' and 'slurm_constraint' not in hash_params
    assert hash_params['slurm_additional_parameters'] == {'exclusive': True}
    assert ft_params['slurm_additional_parameters'] == {'exclusive': True, 'dependency': 'afterok:1001'}
    assert hash_params['name'] == 'tiny-hash'


def test_a_point_on_two_slurm_tasks_trains_expert_parallel_and_rank_0_writes_the_record(ran, tmp_path):
    """A multi-GPU SLURM job runs one worker per task (here 2 local processes, as srun would)."""
    sweep_file, sweep, points, _ = ran
    single = read_record(points['hash'].record_file)
    point = dataclasses.replace(points['hash'], run_dir=tmp_path / 'hash',
                                options={**points['hash'].options, 'expert_parallel': True})
    point_file = write_point(sweep, point, points)
    outputs = fake_srun(2, [sys.executable, '-m', 'parlai_hash.sweeps.worker', str(point_file)], tmp_path,
                        env={'MASTER_PORT': str(free_port())})
    assert 'Distributed group initialized' in outputs[0]
    record = read_record(point.record_file)
    assert record is not None and record['train_steps'] == 4 and record['valid']['ppl'] > 1
    # counted over all K experts, though each worker held K/2
    for key in ('params', 'params_trainable', 'expert_params', 'active_params'):
        assert record[key] == single[key], key
    model = torch.load(point.model_file, weights_only=False)['model']
    assert model['decoder.layers.1.ffn.experts.expert_w1'].shape[0] == K  # gathered
