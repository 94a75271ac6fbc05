"""Sweep files: loading, grids, scales, dependencies, paths, environment, errors."""

import textwrap
from pathlib import Path

import pytest

from parlai_hash.sweeps.errors import SweepError
from parlai_hash.sweeps.spec import format_value, load_sweep


def write(tmp_path: Path, text: str, name: str = 'sweep.yaml') -> Path:
    (tmp_path / 'pyproject.toml').write_text('')  # marks the "repo" relative paths resolve against
    path = tmp_path / 'sweeps' / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


BASIC = """
sweep: demo
scales:
  paper:
    options: {embedding_size: 1024, n_layers: 11}
  local:
    options: {embedding_size: 64, n_layers: 4, wikitext_dir: ../shared/data/wt}
points:
  - name: dense
    model: Baseline
    options: {model: transformer/generator}
  - name: hash_1x{num_experts}
    model: Hash Layer
    configuration: "1x{num_experts} {hash_type}"
    options: {model: hash_generator, hash_type: balanced}
    grid: {num_experts: [16, 64]}
  - name: wide
    model: Wider
    options: {model: transformer/generator}
    scales: {paper: {ffn_size: 24000}, local: {ffn_size: 2000}}
"""


def test_grid_expands_in_file_order_with_templates(tmp_path):
    sweep = load_sweep(write(tmp_path, BASIC))
    points = sweep.points('paper', runs_dir=tmp_path / 'runs')
    assert [p.name for p in points] == ['dense', 'hash_1x16', 'hash_1x64', 'wide']
    assert points[2].configuration == '1x64 balanced' and points[2].model == 'Hash Layer'
    assert points[2].options['num_experts'] == 64
    assert points[2].run_dir == tmp_path / 'runs' / 'hash_1x64'


def test_scale_options_then_point_then_per_scale_override(tmp_path):
    sweep = load_sweep(write(tmp_path, BASIC))
    paper = {p.name: p for p in sweep.points('paper', runs_dir=tmp_path)}
    local = {p.name: p for p in sweep.points('local', runs_dir=tmp_path)}
    assert paper['wide'].options['ffn_size'] == 24000 and local['wide'].options['ffn_size'] == 2000
    assert paper['dense'].options['embedding_size'] == 1024 and local['dense'].options['embedding_size'] == 64


def test_relative_paths_resolve_against_the_repo_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir('/')
    sweep = load_sweep(write(tmp_path, BASIC))
    dense = sweep.points('local', runs_dir=tmp_path)[0]
    assert dense.options['wikitext_dir'] == str((tmp_path / '../shared/data/wt').resolve())
    assert sweep.default_runs_dir('local') == tmp_path / 'runs' / 'sweeps' / 'demo' / 'local'


def test_argv_is_parlai_long_options_with_model_and_task_first(tmp_path):
    sweep = load_sweep(write(tmp_path, BASIC))
    hash16 = sweep.points('local', runs_dir=tmp_path / 'r')[1]
    argv = hash16.argv()
    assert argv[:2] == ['--model', 'hash_generator']
    assert argv[argv.index('--num-experts') + 1] == '16'
    assert argv[-2:] == ['--model-file', str(tmp_path / 'r' / 'hash_1x16' / 'model')]
    assert hash16.command().startswith('parlai train_model --model hash_generator ')


def test_values_format_as_parlai_reads_them():
    assert format_value(True) == 'true' and format_value(False) == 'false'
    assert format_value([1, 3, 5]) == '1,3,5'
    assert format_value(0.002) == '0.002'


def test_init_from_inherits_the_parent_and_points_at_its_model(tmp_path):
    sweep = load_sweep(write(tmp_path, BASIC + """
  - name: ft
    init_from: hash_1x64
    options: {freeze: experts, task: bst}
"""))
    points = {p.name: p for p in sweep.points('local', runs_dir=tmp_path)}
    ft = points['ft']
    assert ft.depends_on == ('hash_1x64',)
    assert ft.options['init_model'] == str(points['hash_1x64'].model_file)
    assert ft.options['dict_file'] == str(points['hash_1x64'].model_file) + '.dict'
    assert ft.options['num_experts'] == 64 and ft.options['freeze'] == 'experts'
    assert ft.options['task'] == 'bst'


def test_model_file_references_create_dependencies(tmp_path):
    sweep = load_sweep(write(tmp_path, BASIC + """
  - name: predicted
    options:
      model: hash_generator
      hash_type: predicted
      hash_predictor_model_file: {model_file_of: dense}
      dict_file: {dict_file_of: dense}
"""))
    points = {p.name: p for p in sweep.points('local', runs_dir=tmp_path)}
    predicted = points['predicted']
    assert predicted.depends_on == ('dense',)
    assert predicted.options['hash_predictor_model_file'] == str(points['dense'].model_file)
    assert predicted.options['dict_file'] == str(points['dense'].model_file) + '.dict'


def test_a_dependency_must_come_earlier(tmp_path):
    sweep = load_sweep(write(tmp_path, """
        sweep: x
        scales: {local: {}}
        points:
          - {name: ft, init_from: pre}
          - {name: pre, options: {model: hash_generator}}
    """))
    with pytest.raises(SweepError, match=r"points\[0\] \(ft\): init_from names 'pre', which is not a point defined above"):
        sweep.points('local')


def test_environment_variables_with_defaults_and_a_clear_error(tmp_path):
    sweep = load_sweep(write(tmp_path, """
        sweep: x
        scales: {paper: {options: {reddit_dump_dir: "${DUMPS}", bst_datafile: "${BST:-}", port: "${PORT:-61337}"}}}
        points: [{name: a, options: {model: hash_generator}}]
    """))
    point = sweep.points('paper', environ={'DUMPS': '/data/reddit'})[0]
    assert point.options['reddit_dump_dir'] == '/data/reddit'
    assert point.options['bst_datafile'] is None and '--bst-datafile' not in point.argv()
    assert point.options['port'] == '61337'
    with pytest.raises(SweepError, match=r'uses \$\{DUMPS\}, which is not set; export DUMPS='):
        sweep.points('paper', environ={})
    assert sweep.points('paper', environ={}, strict_env=False)[0].options['reddit_dump_dir'] == '${DUMPS}'


def test_per_scale_grid_values_and_only(tmp_path):
    sweep = load_sweep(write(tmp_path, """
        sweep: x
        scales: {paper: {}, local: {}}
        points:
          - name: layer{hash_layers}
            options: {model: hash_generator}
            grid: {hash_layers: {paper: [1, 5, 9], local: [0, 1]}}
          - name: big
            only: paper
            options: {model: hash_generator}
    """))
    assert [p.name for p in sweep.points('paper')] == ['layer1', 'layer5', 'layer9', 'big']
    assert [p.name for p in sweep.points('local')] == ['layer0', 'layer1']


def test_extends_merges_shared_settings_key_by_key(tmp_path):
    (tmp_path / 'sweeps' / 'settings').mkdir(parents=True)
    (tmp_path / 'sweeps' / 'settings' / 'base.yaml').write_text(textwrap.dedent("""
        scales:
          local:
            description: shared.
            vocab_size: 100
            options: {embedding_size: 64, batchsize: 16}
            slurm: {gpus_per_node: 0}
    """))
    sweep = load_sweep(write(tmp_path, """
        sweep: x
        extends: settings/base.yaml
        scales:
          local:
            description: own.
            options: {batchsize: 8, task: wikitext103}
        points: [{name: a, options: {model: hash_generator}}]
    """))
    scale = sweep.scale('local')
    assert scale.options == {'embedding_size': 64, 'batchsize': 8, 'task': 'wikitext103'}
    assert scale.vocab_size == 100 and scale.slurm == {'gpus_per_node': 0}
    assert scale.description == 'shared. own.'



def test_extends_per_scale_takes_each_scale_from_its_own_file(tmp_path):
    settings = tmp_path / 'sweeps' / 'settings'
    settings.mkdir(parents=True)
    (settings / 'reddit.yaml').write_text('scales: {paper: {options: {task: reddit}}, local: {options: {task: r}}}')
    (settings / 'text.yaml').write_text('scales: {local: {vocab_size: 9, options: {task: wikitext103}}}')
    sweep = load_sweep(write(tmp_path, """
        sweep: x
        extends: {paper: settings/reddit.yaml, local: settings/text.yaml}
        scales:
          local: {options: {batchsize: 8}}
        points: [{name: a}]
    """))
    assert sweep.scale('paper').options == {'task': 'reddit'}
    assert sweep.scale('local').options == {'task': 'wikitext103', 'batchsize': 8}
    assert sweep.scale('local').vocab_size == 9
    with pytest.raises(SweepError, match="text.yaml has no scale 'paper'"):
        load_sweep(write(tmp_path, "sweep: x\nextends: {paper: settings/text.yaml}\npoints: [{name: a}]\n"))


@pytest.mark.parametrize('text, message', [
    ("sweep: x\nscales: {local: {}}\npoints: [{name: a, option: {}}]\n", r"points\[0\] \(a\): unknown key 'option'"),
    ("sweep: x\nscales: {local: {}}\npoints: [{name: a, options: {-bs: 4}}]\n", "written as a flag"),
    ("sweep: x\nscales: {local: {}}\npoints: [{name: a, options: {model_file: /x}}]\n", "which the runner chooses"),
    ("sweep: x\nscales: {local: {}}\npoints: [{name: a, grid: {num_experts: 4}}]\n", 'non-empty list'),
    ("sweep: x\nscales: {local: {}}\npoints: [{name: a, scales: {paper: {}}}]\n", "names scale 'paper', which the sweep lacks"),
    ("sweep: x\nscales: {local: {}}\npoints: [{name: 'a b'}]\n", 'unsafe in a folder name'),
    ("sweep: x\nscales: {local: {}}\n", 'has no points:'),
    ("sweep: x\nscales: {local: {}}\npoints: [{name: a}]\nfigures: [{kind: pie, file: a.png}]\n", "kind 'pie' is unknown"),
    ("sweep: [unclosed\n", 'is not valid YAML'),
])
def test_bad_files_fail_with_one_line_naming_the_place_and_fix(tmp_path, text, message):
    with pytest.raises(SweepError, match=message) as err:
        load_sweep(write(tmp_path, text))
    assert '\n' not in str(err.value) and '; ' in str(err.value)


def test_duplicate_names_and_unknown_template_keys_are_errors(tmp_path):
    sweep = load_sweep(write(tmp_path, """
        sweep: x
        scales: {local: {}}
        points:
          - {name: a, grid: {num_experts: [1, 2]}, options: {model: hash_generator}}
    """))
    with pytest.raises(SweepError, match="two points are named 'a'"):
        sweep.points('local')
    sweep = load_sweep(write(tmp_path, """
        sweep: x
        scales: {local: {}}
        points: [{name: "a_{num_expert}", options: {num_experts: 4}}]
    """))
    with pytest.raises(SweepError, match=r'uses \{num_expert\}, which is not an option'):
        sweep.points('local')


def test_unknown_scale_names_the_choices(tmp_path):
    sweep = load_sweep(write(tmp_path, BASIC))
    with pytest.raises(SweepError, match="there is no scale 'huge' .*pick one of paper, local"):
        sweep.points('huge')


def test_requirements_resolve_against_the_repo_and_unset_variables_count_as_missing(tmp_path):
    (tmp_path / 'data').mkdir()
    sweep = load_sweep(write(tmp_path, """
        sweep: x
        scales:
          local: {requires: [./data, ./absent]}
          paper: {requires: ["${NOT_SET_ANYWHERE_42}/x"]}
        points: [{name: a}]
    """))
    assert sweep.missing_requirements('local') == [(tmp_path / 'absent').resolve()]
    assert len(sweep.missing_requirements('paper')) == 1
