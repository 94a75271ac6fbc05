"""The committed sweep files: they load at every scale, ParlAI accepts every
point's options, the paper scale has the appendix-B settings, the local twins
read shared data through repo-relative paths, and the wider/deeper baselines
match the sparse models' parameter counts."""

from pathlib import Path

import os

import pytest

from conftest import REPO
from parlai_hash.sweeps.cli import check_point_options
from parlai_hash.sweeps.sizing import count_point_parameters
from parlai_hash.sweeps.spec import load_sweep

SWEEP_FILES = sorted((REPO / 'sweeps').glob('*.yaml'))
# Appendix B.1's schedule for every pretraining point; the architecture of
# each point is checked against the paper's tables in test_sweeps_paper.py.
PAPER_SETTINGS = {
    'n_encoder_layers': 2, 'text_truncate': 128, 'label_truncate': 128, 'batchsize': 40,
    'learningrate': 0.002, 'lr_scheduler': 'invsqrt', 'warmup_updates': 10000, 'max_train_steps': 100000,
    'optimizer': 'adam', 'gradient_clip': 1.0,
}
ENV = {'REDDIT_DUMP_DIR': '/data/reddit', 'REDDIT_BPE_DIR': '/data/bpe', 'WIKITEXT103_DIR': '/data/wt103'}


def test_the_paper_tables_have_sweep_files():
    names = {p.stem for p in SWEEP_FILES}
    assert {'table1', 'table3', 'table4', 'table5', 'table7', 'table8', 'table9', 'figure3'} <= names


@pytest.mark.parametrize('path', SWEEP_FILES, ids=lambda p: p.stem)
def test_every_point_is_accepted_by_parlai_at_both_scales(path):
    sweep = load_sweep(path)
    assert set(sweep.scales) == {'paper', 'local'}
    for scale in ('paper', 'local'):
        points = sweep.points(scale, runs_dir=Path('/runs'), environ=ENV)
        assert points
        for point in points:
            assert check_point_options(point) is None, (scale, point.name)


@pytest.mark.parametrize('path', SWEEP_FILES, ids=lambda p: p.stem)
def test_paper_scale_uses_appendix_b_and_local_twins_use_repo_relative_data(path):
    sweep = load_sweep(path)
    for point in sweep.points('paper', environ=ENV):
        if 'init_model' in point.options:
            continue  # fine-tuning keeps the architecture, not the pretraining schedule
        for key, value in PAPER_SETTINGS.items():
            assert point.options[key] == value, (point.name, key)
    shared = Path(os.path.normpath(REPO.parent / 'shared' / 'data'))  # as written, even if a symlink
    for required in sweep.scale('local').requires:
        assert required.startswith('../shared/data/'), required
        assert sweep.resolve_path(required).is_relative_to(shared)


def test_fine_tuning_points_depend_on_pretraining_points():
    sweep = load_sweep(REPO / 'sweeps' / 'table8.yaml')
    points = {p.name: p for p in sweep.points('paper', runs_dir=Path('/runs'), environ=ENV)}
    assert points['ft_hash_experts'].depends_on == ('pretrain_hash',)
    assert points['ft_hash_experts'].options['init_model'] == '/runs/pretrain_hash/model'
    assert points['ft_hash_experts'].options['task'].endswith('blended_skill_talk')
    assert 'reddit_dump_dir' not in points['ft_hash_experts'].argv()
    assert points['ft_switch_load_bal0'].options['load_balance_weight'] == 0.0


@pytest.mark.parametrize('scale', ['local', 'paper'])
def test_wider_and_deeper_baselines_match_the_sparse_parameter_count(scale):
    sweep = load_sweep(REPO / 'sweeps' / 'table1.yaml')
    points = sweep.points(scale, environ=ENV)
    counts = count_point_parameters(points, sweep.scale(scale).vocab_size)
    params = {name: c['params'] for name, c in counts.items()}
    target = params['hash_1x64']
    for dense in ('wider', 'deeper'):  # the paper's 755M against Hash 1x64's 751M
        assert abs(params[dense] / target - 1) < 0.015, (dense, params[dense], target)
    for size in ('1x64', '1x128'):
        assert abs(params[f'switch_{size}'] / params[f'hash_{size}'] - 1) < 0.005  # + the router's K x d + K
    # Sparse models run one expert per token: the baseline's compute.
    assert counts['hash_1x64']['active_params'] == counts['baseline']['params']
    assert params['hash_1x64'] > 3 * params['baseline']
