"""Placement options: parsing and one-line errors naming the option."""

import pytest

from parlai_hash.errors import OptionError
from parlai_hash.options import SparsePlacement, parse_layer_list


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
    p = SparsePlacement.from_opt(opt())
    assert p.decoder_layers == (2,) and p.encoder_layers == () and p.num_experts == 8
    assert SparsePlacement.from_opt(opt(n_layers=1)).decoder_layers == (0,)


def test_decoder_layer_count_comes_from_n_decoder_layers():
    p = SparsePlacement.from_opt(opt(n_decoder_layers=12, hash_layers='11'))
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
        SparsePlacement.from_opt(opt(**kw))
    assert str(err.value).startswith(option)
    assert '\n' not in str(err.value)
