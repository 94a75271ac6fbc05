"""A checkpoint that does not fit the options: one line naming the option, not torch's mismatch list."""

import pytest
import torch

from parlai_hash.agents.checkpoint_fit import check_checkpoint_fits, expert_layers
from parlai_hash.errors import OptionError

from conftest import run_parlai as parlai

TINY = ['--n-layers', '2', '--embedding-size', '16', '--ffn-size', '32', '--n-heads', '2',
        '-t', 'integration_tests:nocandidate', '--max-train-steps', '2', '-bs', '4',
        '--skip-generation', 'true']


def sparse_state(layers=(('decoder', 1),), k=4, router=('table',), vocab=11, multihash=False):
    suffix = '.0' if multihash else ''
    state = {'embeddings.weight': torch.zeros(vocab, 16)}
    for stack, i in layers:
        state[f'{stack}.layers.{i}.ffn.experts.expert_w1{suffix}'] = torch.zeros(k, 16, 32)
        for name in router:
            state[f'{stack}.layers.{i}.ffn.router.{name}'] = torch.zeros(1, vocab, dtype=torch.long)
    for i in range(2):
        if ('decoder', i) not in layers:
            state[f'decoder.layers.{i}.ffn.lin1.weight'] = torch.zeros(32, 16)
    return state


def test_a_fitting_checkpoint_passes():
    check_checkpoint_fits(sparse_state(), sparse_state(), 4)
    check_checkpoint_fits(sparse_state(multihash=True), sparse_state(multihash=True), 4)
    assert expert_layers(sparse_state(layers=(('decoder', 1), ('encoder', 0)))) == {
        'encoder': [0], 'decoder': [1]}


@pytest.mark.parametrize('checkpoint, options, k, message', [
    (sparse_state(k=4), sparse_state(k=8), 8,
     '--num-experts: the checkpoint has 4 experts per sparse layer, these options 8; pass --num-experts 4'),
    (sparse_state(layers=(('decoder', 1),)), sparse_state(layers=(('decoder', 0),)), 4,
     '--hash-layers: the checkpoint has experts in decoder layers 1, these options in decoder layers 0; '
     'pass --hash-layers 1'),
    (sparse_state(layers=(('decoder', 1), ('encoder', 0))), sparse_state(layers=(('decoder', 1),)), 4,
     '--hash-encoder-layers: the checkpoint has experts in encoder layers 0 and decoder layers 1'),
    (sparse_state(layers=()), sparse_state(), 4,
     '--init-model: the checkpoint is a dense model (no expert layers)'),
    (sparse_state(router=('router_weight',)), sparse_state(router=('table',)), 4,
     "--model: the checkpoint's routers hold ['router_weight'], the routers these options build hold ['table']"),
    (sparse_state(vocab=11), sparse_state(vocab=3), 4,
     "--dict-file or --hash-type: the checkpoint's routing table (decoder.layers.1.ffn.router.table) "
     "has shape (1, 11), these options build (1, 3)"),
])
def test_a_checkpoint_that_does_not_fit_names_the_option(checkpoint, options, k, message):
    with pytest.raises(OptionError) as err:
        check_checkpoint_fits(checkpoint, options, k)
    assert str(err.value).startswith(message)
    assert '\n' not in str(err.value)


def test_fine_tuning_with_another_expert_count_is_one_line(tmp_path):
    parlai('train_model', '-m', 'hash_generator', '-mf', str(tmp_path / 'pre'), *TINY,
           '--num-experts', '4', '--hash-layers', '1', cwd=tmp_path)
    proc = parlai('train_model', '-m', 'hash_generator', '-mf', str(tmp_path / 'ft'), *TINY,
                  '--init-model', str(tmp_path / 'pre'), '--num-experts', '8', '--hash-layers', '1',
                  cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert ('parlai-hash: error: --num-experts: the checkpoint has 4 experts per sparse layer, '
            'these options 8; pass --num-experts 4 as it was trained') in proc.stderr


def test_an_init_model_that_does_not_exist_is_an_error_unless_the_model_file_exists(tmp_path):
    pre, ft = str(tmp_path / 'pre'), str(tmp_path / 'ft')
    sparse = ['-m', 'hash_generator', '--num-experts', '4', '--hash-layers', '1']
    parlai('train_model', *sparse, '-mf', pre, *TINY, cwd=tmp_path)
    parlai('train_model', *sparse, '-mf', ft, *TINY, '--init-model', pre, '--freeze', 'experts', cwd=tmp_path)
    for f in tmp_path.glob('pre*'):
        f.unlink()
    # ft's saved options still name the deleted init model: it loads from its own file
    parlai('eval_model', '-mf', ft, '-t', 'integration_tests:nocandidate', '--num-examples', '4', cwd=tmp_path)
    # ParlAI alone would train from scratch here, and the frozen "fine-tuning" would look normal
    proc = parlai('train_model', *sparse, '-mf', str(tmp_path / 'ft2'), *TINY, '--init-model', pre,
                  '--freeze', 'experts', cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert f'parlai-hash: error: --init-model: {pre} does not exist; give the path' in proc.stderr
