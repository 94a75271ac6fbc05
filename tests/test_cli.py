"""The real ``parlai`` entry point resolves ``-m hash_generator`` and our errors."""

import pytest

from conftest import TINY_MODEL_ARGS
from conftest import run_parlai as parlai




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
])
def test_bad_options_give_one_line_naming_the_option(tmp_path, args, option):
    proc = parlai('train_model', '-m', 'hash_generator', '-t', 'integration_tests:nocandidate',
                  '-mf', str(tmp_path / 'm'), *TINY_MODEL_ARGS, *args, check=False)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith('parlai-hash: error:')]
    assert len(error_lines) == 1 and option in error_lines[0]


def test_unknown_hash_type_is_an_argument_error(tmp_path):
    proc = parlai('train_model', '-m', 'hash_generator', '-t', 'integration_tests:nocandidate',
                  '-mf', str(tmp_path / 'm'), '--hash-type', 'nope', check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert "argument --hash-type: invalid choice: 'nope'" in proc.stdout + proc.stderr
