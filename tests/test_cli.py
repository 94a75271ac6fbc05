"""The real ``parlai`` entry point resolves ``-m hash_generator`` and our errors."""

import os
import shutil

import pytest

from conftest import TINY_MODEL_ARGS
from conftest import run_parlai as parlai


def plain_env():
    """The command's environment with Python's default warnings shown, one thread a process
    (tiny models: more threads only contend, the more so with several workers)."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('PYTHONWARNINGS', None)
    return env


def one_error_line(proc) -> str:
    """The one ``parlai-hash: error:`` line of a command that failed without a traceback."""
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith('parlai-hash: error:')]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope='module')
def model_file(tmp_path_factory):
    mf = str(tmp_path_factory.mktemp('cli') / 'model')
    parlai(
        'train_model', '-m', 'hash_generator', '-t', 'integration_tests:nocandidate',
        '-mf', mf, *TINY_MODEL_ARGS, '--hash-layers', '1,2', '--hash-type', 'random',
        '-bs', '8', '--max-train-steps', '20', '-vstep', '20', '--validation-max-exs', '16',
        '-lr', '1e-2', '--optimizer', 'adam', '--short-final-eval', 'true',
    )
    return mf


def test_train_writes_model_with_hash_agent(model_file):
    import json
    with open(model_file + '.opt') as f:
        opt = json.load(f)
    assert opt['model'] == 'hash_generator' and opt['num_experts'] == 4


def test_eval_model_reports_expert_load(model_file):
    out = parlai('eval_model', '-mf', model_file, '-t', 'integration_tests:nocandidate',
                 '--num-examples', '16')
    assert 'dec1_load_max' in out.stdout and 'dec2_load_ent' in out.stdout


def test_display_model_and_interactive(model_file):
    out = parlai('display_model', '-mf', model_file, '-t', 'integration_tests:nocandidate',
                 '--num-examples', '2')
    shown = out.stdout[out.stdout.index('NEW EPISODE'):]
    assert shown.count('\n     model: ') == 2  # a generated reply per example
    chat = parlai('interactive', '-mf', model_file, stdin='1 2 3\n[EXIT]\n')
    assert '[HashGenerator]:' in chat.stdout


def test_display_data_works_in_the_same_environment():
    out = parlai('display_data', '-t', 'integration_tests:nocandidate', '-n', '2')
    assert 'integration_tests' in out.stdout


@pytest.mark.parametrize('args, option', [
    (['--num-experts', '0'], '--num-experts'),
    (['--hash-layers', '3'], '--hash-layers'),
    (['--hash-encoder-layers', '7'], '--hash-encoder-layers'),
    (['--hash-layers', '-1'], '--hash-layers: layer -1 does not exist (the model has 3 layers, '
                              '0..2); use indices from 0 to 2'),
    (['--multihash', '3'], '--multihash: 3 hashes do not divide --embedding-size 16; pick a '
                           'number of hashes that divides both --embedding-size 16 and --ffn-size 32'),
    (['-m', 'switch_generator', '--router-jitter', '1.5'], '--router-jitter: got 1.5'),
    (['-m', 'switch_generator', '--router-jitter', '1'], '--router-jitter: got 1.0'),
    # ParlAI's KeyError: 'accuracy' at the first validation otherwise
    (['--skip-generation', 'true', '-vtim', '30'], "--validation-metric: 'accuracy' is computed "
                                                   "from generated replies"),
])
def test_bad_options_give_one_line_naming_the_option(tmp_path, args, option):
    proc = parlai('train_model', '-m', 'hash_generator', '-t', 'integration_tests:nocandidate',
                  '-mf', str(tmp_path / 'm'), *TINY_MODEL_ARGS, *args, check=False)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith('parlai-hash: error:')]
    assert len(error_lines) == 1 and option in error_lines[0]
    assert not (tmp_path / 'm').exists()


def test_multihash_is_refused_before_the_hash_tables_are_built(tmp_path):
    proc = parlai('train_model', '-m', 'hash_generator', '-t', 'integration_tests:nocandidate',
                  '-mf', str(tmp_path / 'm'), *TINY_MODEL_ARGS, '--multihash', '3', check=False)
    assert proc.returncode != 0 and 'balanced hash into' not in proc.stdout + proc.stderr


def test_switch_trains_with_router_jitter_below_one(tmp_path):
    parlai('train_model', '-m', 'switch_generator', '-t', 'integration_tests:nocandidate',
           '-mf', str(tmp_path / 'm'), *TINY_MODEL_ARGS, '--router-jitter', '0.9',
           '-bs', '4', '--max-train-steps', '2', '--skip-generation', 'true')
    assert (tmp_path / 'm').exists()


def test_expert_parallel_in_one_process_warns_once(tmp_path):
    out = parlai('train_model', '-m', 'hash_generator', '-t', 'integration_tests:nocandidate',
                 '-mf', str(tmp_path / 'm'), *TINY_MODEL_ARGS, '--expert-parallel', 'true',
                 '-bs', '4', '--max-train-steps', '2', '--skip-generation', 'true')
    log = out.stdout + out.stderr
    assert log.count('WARNING  | --expert-parallel true has no effect in a single process') == 1
    evaluation = parlai('eval_model', '-mf', str(tmp_path / 'm'), '-t', 'integration_tests:nocandidate',
                        '--num-examples', '4', '--skip-generation', 'true')
    assert '--expert-parallel true has no effect' not in evaluation.stdout + evaluation.stderr


def test_unknown_hash_type_is_an_argument_error(tmp_path):
    proc = parlai('train_model', '-m', 'hash_generator', '-t', 'integration_tests:nocandidate',
                  '-mf', str(tmp_path / 'm'), '--hash-type', 'nope', check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert "argument --hash-type: invalid choice: 'nope'" in proc.stdout + proc.stderr


def test_multiprocessing_train_builds_the_dictionary_first_and_prints_no_pkg_resources_warning(tmp_path):
    # ParlAI alone: "Dictionaries should be pre-built" from the workers, and the
    # setuptools warning once per process.
    mf = tmp_path / 'm'
    proc = parlai('multiprocessing_train', '--distributed-world-size', '2', '-m', 'hash_generator',
                  '-t', 'integration_tests:nocandidate', '-mf', str(mf), *TINY_MODEL_ARGS,
                  '-bs', '4', '--max-train-steps', '2', '--skip-generation', 'true',
                  '--validation-max-exs', '4', '--short-final-eval', 'true',
                  env=plain_env(), cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert (tmp_path / 'm.dict').exists() and mf.exists() and 'gloo' in log
    assert 'Traceback' not in log and 'pkg_resources' not in log


@pytest.mark.parametrize('command', ['eval_model', 'interactive'])
def test_missing_model_file_is_one_line(tmp_path, command):
    proc = parlai(command, '-mf', str(tmp_path / 'nope' / 'model'), '-t', 'integration_tests:nocandidate',
                  check=False, stdin='[EXIT]\n', env=plain_env())
    assert one_error_line(proc).startswith(
        f"parlai-hash: error: --model-file: {tmp_path / 'nope' / 'model'} does not exist; ")


def test_model_file_that_is_a_folder_is_one_line_naming_the_model_inside(model_file):
    folder = os.path.dirname(model_file)
    proc = parlai('eval_model', '-mf', folder, '-t', 'integration_tests:nocandidate',
                  check=False, env=plain_env())
    line = one_error_line(proc)
    assert line.startswith(f'parlai-hash: error: --model-file: {folder} is a folder, not a model file; ')
    assert line.endswith(f'-mf {model_file}')


def test_truncated_opt_file_is_one_line(tmp_path, model_file):
    for suffix in ('', '.dict'):
        shutil.copy(model_file + suffix, tmp_path / f'm{suffix}')
    text = open(model_file + '.opt').read()
    (tmp_path / 'm.opt').write_text(text[: len(text) // 2])  # a crash mid-write
    proc = parlai('eval_model', '-mf', str(tmp_path / 'm'), '-t', 'integration_tests:nocandidate',
                  check=False, env=plain_env())
    assert one_error_line(proc).startswith(
        f"parlai-hash: error: --model-file: {tmp_path / 'm.opt'} is cut short or damaged (")
