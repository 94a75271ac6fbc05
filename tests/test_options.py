"""Placement options: parsing and one-line errors naming the option."""

import pytest

from parlai_hash.errors import OptionError
from parlai_hash import options
from parlai_hash.options import SparseConfig, check_multihash, parse_layer_list


def opt(**kw):
    base = {'n_layers': 4, 'n_decoder_layers': -1, 'n_encoder_layers': -1,
            'num_experts': 8, 'hash_layers': None, 'hash_encoder_layers': ''}
    base.update(kw)
    return base


def test_parse_lists():
    assert parse_layer_list('--x', '7', 8) == (7,)
    assert parse_layer_list('--x', '5, 1,3', 8) == (1, 3, 5)
    assert parse_layer_list('--x', '', 8) == ()
    assert parse_layer_list('--x', 2, 8) == (2,)


def test_default_is_one_late_layer():
    p = SparseConfig.from_opt(opt())
    assert p.decoder_layers == (2,) and p.encoder_layers == () and p.num_experts == 8
    assert SparseConfig.from_opt(opt(n_layers=1)).decoder_layers == (0,)


def test_decoder_layer_count_comes_from_n_decoder_layers():
    p = SparseConfig.from_opt(opt(n_decoder_layers=12, hash_layers='11'))
    assert p.decoder_layers == (11,)


@pytest.mark.parametrize('kw, option', [
    (dict(num_experts=0), '--num-experts'),
    (dict(num_experts=-3), '--num-experts'),
    (dict(hash_layers='4'), '--hash-layers'),
    (dict(hash_layers='1,x'), '--hash-layers'),
    (dict(hash_layers='1,1'), '--hash-layers'),
    (dict(hash_encoder_layers='9'), '--hash-encoder-layers'),
    (dict(hash_layers=''), '--hash-layers'),
])
def test_bad_values_name_the_option(kw, option):
    with pytest.raises(OptionError) as err:
        SparseConfig.from_opt(opt(**kw))
    assert str(err.value).startswith(option)
    assert '\n' not in str(err.value)


@pytest.mark.parametrize('value', ['-1', '4'])
def test_a_missing_layer_names_the_valid_range(value):
    with pytest.raises(OptionError) as err:
        SparseConfig.from_opt(opt(hash_layers=value))
    assert str(err.value) == (
        f'--hash-layers: layer {value} does not exist (the model has 4 layers, 0..3); '
        'use indices from 0 to 3 or add layers'
    )


def test_multihash_must_divide_both_sizes_and_the_error_names_both():
    with pytest.raises(OptionError) as err:
        SparseConfig.from_opt(opt(multihash=3, embedding_size=16, ffn_size=32))
    assert str(err.value) == (
        '--multihash: 3 hashes do not divide --embedding-size 16; pick a number of hashes '
        'that divides both --embedding-size 16 and --ffn-size 32, such as 2, 4, 8, 16'
    )
    with pytest.raises(OptionError, match=r'do not divide --ffn-size 30; .*--embedding-size 16 '
                                          r'and --ffn-size 30, such as 2$'):
        check_multihash(4, 16, 30)
    with pytest.raises(OptionError, match=r'no number of hashes above 1 divides both '
                                          r'--embedding-size 9 and --ffn-size 16: use --multihash 1$'):
        check_multihash(3, 9, 16)
    check_multihash(4, 16, 32)
    check_multihash(1, 9, 16)
    assert SparseConfig.from_opt(opt(multihash=4, embedding_size=16, ffn_size=32)).num_experts == 8


@pytest.fixture
def warnings_logged(monkeypatch):
    from parlai.utils import logging

    logged = []
    monkeypatch.setattr(logging, 'warning', logged.append)
    monkeypatch.setattr(options, '_warned_expert_parallel', False)
    return logged


def test_expert_parallel_in_one_process_warns_once(warnings_logged):
    asked = opt(expert_parallel=True, override={'expert_parallel': True})
    SparseConfig.from_opt(asked)
    SparseConfig.from_opt(asked)  # train_model builds the agent again for its final eval
    assert len(warnings_logged) == 1
    assert warnings_logged[0].startswith('--expert-parallel true has no effect in a single process')
    assert 'multiprocessing_train/distributed_train' in warnings_logged[0]


@pytest.mark.parametrize('kw', [
    dict(expert_parallel=False, override={}),
    # A model trained expert-parallel, evaluated in one process: its saved opt says true.
    dict(expert_parallel=True, override={'model_file': 'm'}),
])
def test_no_expert_parallel_warning_unless_asked(warnings_logged, kw):
    SparseConfig.from_opt(opt(**kw))
    assert warnings_logged == []
