"""``-m mixed_generator --layer-routing``: hash, Switch and BASE layers in one model."""

import pytest
from parlai.core.agents import create_agent
from parlai.core.params import ParlaiParser

from parlai_hash.agents.mixed_generator.mixed_generator import parse_layer_routing
from parlai_hash.errors import OptionError
from parlai_hash.routing import BalancedAssignmentRouter, HashRouter, SwitchRouter

TASK = 'integration_tests:nocandidate'


def test_the_spec_names_a_router_per_decoder_layer():
    assert parse_layer_routing('hash:0,1;switch:3; base:2', 4) == {0: 'hash', 1: 'hash', 3: 'switch', 2: 'base'}


@pytest.mark.parametrize('spec, message', [
    ('hash:0;moe:1', "'moe:1' is not ROUTER:LAYERS"),
    ('hash', "'hash' is not ROUTER:LAYERS"),
    ('hash:0,1;switch:1', 'decoder layer 1 is routed twice (hash and switch)'),
    ('hash:0,9', 'layer 9 does not exist'),
    ('', 'no layer is routed'),
])
def test_bad_specs_name_the_option(spec, message):
    with pytest.raises(OptionError, match='--layer-routing') as err:
        parse_layer_routing(spec, 4)
    assert message in str(err.value) and '\n' not in str(err.value)



def build(tmp_path, dict_file, *extra):
    args = ['-m', 'mixed_generator', '-t', TASK, '-mf', str(tmp_path / 'model'), '--dict-file', dict_file,
            '--n-layers', '4', '--embedding-size', '16', '--ffn-size', '32', '--n-heads', '2',
            '--num-experts', '4', *extra]
    return create_agent(ParlaiParser(True, True).parse_args(args))


def test_each_layer_gets_its_router(tmp_path, dict_file):
    agent = build(tmp_path, dict_file, '--layer-routing', 'hash:0;base:1;switch:3')
    ffns = agent.model.sparse_ffns()
    assert sorted(ffns) == ['dec0', 'dec1', 'dec3'] and agent.opt['hash_layers'] == '0,1,3'
    assert isinstance(ffns['dec0'].router, HashRouter)
    assert isinstance(ffns['dec1'].router, BalancedAssignmentRouter)
    assert isinstance(ffns['dec3'].router, SwitchRouter)


@pytest.mark.parametrize('extra, option', [
    (['--layer-routing', 'hash:0;switch:3', '--hash-layers', '1'], '--hash-layers'),
    (['--layer-routing', 'hash:0', '--hash-encoder-layers', '0'], '--hash-encoder-layers'),
    (['--layer-routing', 'hash:0', '--multihash', '2'], '--multihash'),
    (['--layer-routing', 'base:0', '--experts-per-token', '2'], '--experts-per-token'),
])
def test_mixed_options_that_do_not_fit_are_one_line_errors(tmp_path, dict_file, extra, option):
    with pytest.raises(OptionError) as err:
        build(tmp_path, dict_file, *extra)
    assert str(err.value).startswith(option) and '\n' not in str(err.value)
