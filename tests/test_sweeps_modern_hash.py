"""sweeps/modern_hash.yaml: the paper's rows it repeats have Table 1's settings,
the mixed stack routes the 5x16 layers (hash early, Switch late), the top-2
points split the 1x64 layer into 2 routed experts of D/4 and a shared one of
D/2, and every point runs the dense baseline's compute per token."""

from pathlib import Path

import pytest

from conftest import REPO
from parlai_hash.agents.mixed_generator.mixed_generator import parse_layer_routing
from parlai_hash.sweeps.sizing import count_point_parameters
from parlai_hash.sweeps.spec import load_sweep

ENV = {'REDDIT_DUMP_DIR': '/data/reddit', 'REDDIT_BPE_DIR': '/data/bpe', 'WIKITEXT103_DIR': '/data/wt103'}
SWEEP = REPO / 'sweeps' / 'modern_hash.yaml'
FIVE = {'paper': '1,3,5,7,9', 'local': '1,2,3,4,5'}
ONE = {'paper': 7, 'local': 4}
N_DECODER = {'paper': 11, 'local': 6}


def points(scale):
    return {p.name: p for p in load_sweep(SWEEP).points(scale, runs_dir=Path('/runs'), environ=ENV)}


@pytest.mark.parametrize('scale', ['paper', 'local'])
def test_the_papers_rows_have_table_1_settings(scale):
    p = {name: point.options for name, point in points(scale).items()}
    assert p['baseline']['model'] == 'transformer/generator' and p['baseline'].get('hash_layers') is None
    for name, model, experts, layers in (('switch_1x64', 'switch_generator', 64, ONE[scale]),
                                         ('hash_1x64', 'hash_generator', 64, ONE[scale]),
                                         ('switch_5x16', 'switch_generator', 16, FIVE[scale]),
                                         ('hash_5x16', 'hash_generator', 16, FIVE[scale])):
        assert p[name]['model'] == model, name
        assert p[name]['num_experts'] == experts, name
        assert str(p[name]['hash_layers']) == str(layers), name
        assert p[name].get('experts_per_token', 1) == 1, name
        if model == 'switch_generator':
            assert p[name]['load_balance_weight'] == 0.1
        else:
            assert p[name]['hash_type'] == 'balanced'
    assert p['hash_5x16']['hash_per_layer'] == 'different'  # the paper's Hash 5x16 (Table 3 row 12)
    for point in p.values():
        assert point['n_decoder_layers'] == N_DECODER[scale]
    rows = {name: point.paper_row['row'] for name, point in points(scale).items() if point.paper_row}
    assert rows == {'baseline': 'Table 1 row 1', 'switch_1x64': 'Table 1 row 4', 'hash_1x64': 'Table 1 row 5',
                    'switch_5x16': 'Table 1 row 9', 'hash_5x16': 'Table 1 row 10'}


@pytest.mark.parametrize('scale', ['paper', 'local'])
def test_the_mixed_stack_routes_the_5x16_layers_hash_first(scale):
    p = points(scale)
    mixed = p['mixed_5x16'].options
    assert mixed['model'] == 'mixed_generator' and mixed.get('hash_layers') is None
    routing = parse_layer_routing(mixed['layer_routing'], mixed['n_decoder_layers'])
    assert ','.join(map(str, sorted(routing))) == FIVE[scale]
    hashed = [layer for layer, kind in routing.items() if kind == 'hash']
    learned = [layer for layer, kind in routing.items() if kind == 'switch']
    assert len(hashed) == 3 and len(learned) == 2 and max(hashed) < min(learned)
    # Each router as in its all-hash / all-Switch reference.
    for key in ('hash_type', 'hash_per_layer'):
        assert mixed[key] == p['hash_5x16'].options[key]
    assert mixed['load_balance_weight'] == p['switch_5x16'].options['load_balance_weight']
    assert mixed['num_experts'] == 16 and mixed.get('experts_per_token', 1) == 1


TOP_2 = ('hash_top2_shared', 'switch_top2_shared')


@pytest.mark.parametrize('scale', ['paper', 'local'])
def test_the_top_2_points_split_the_1x64_layer_into_two_routed_quarters_and_a_shared_half(scale):
    p = {name: point.options for name, point in points(scale).items()}
    dense = p['baseline']['ffn_size']
    for name, reference in zip(TOP_2, ('hash_1x64', 'switch_1x64')):
        top2 = p[name]
        assert top2['model'] == p[reference]['model'], name
        assert str(top2['hash_layers']) == str(p[reference]['hash_layers']) == str(ONE[scale]), name
        assert top2['experts_per_token'] == 2 and top2['shared_experts'] == 1, name
        assert top2['expert_ffn_size'] == dense // 4 and top2['shared_expert_size'] == dense // 2, name
        assert 2 * top2['expert_ffn_size'] + top2['shared_expert_size'] == dense == top2['ffn_size'], name
        # 4x the experts of a quarter size: the routed hidden units of 1x64
        assert top2['num_experts'] * top2['expert_ffn_size'] == p[reference]['num_experts'] * dense, name
    assert p['hash_top2_shared']['hash_type'] == 'balanced' and p['hash_top2_shared']['hash_gates'] == 'learned'
    assert p['switch_top2_shared']['load_balance_weight'] == p['switch_1x64']['load_balance_weight']
    sweep = load_sweep(SWEEP)
    compared = {(o['better'], o['worse']): o['paper'] for o in sweep.orderings}
    for pair in (('hash_top2_shared', 'hash_1x64'), ('switch_top2_shared', 'switch_1x64')):
        assert compared[pair].startswith('ours, not in the paper'), pair
    assert set(TOP_2) <= set(sweep.figures[0]['points'])


@pytest.mark.parametrize('scale', ['paper', 'local'])
def test_every_point_runs_the_baselines_compute_per_token(scale):
    sweep = load_sweep(SWEEP)
    p = points(scale)
    counts = count_point_parameters(list(p.values()), sweep.scale(scale).vocab_size)
    dense = counts['baseline']['params']
    d = p['baseline'].options['embedding_size']
    switch_layers = {'switch_1x64': 1, 'hash_1x64': 0, 'switch_5x16': 5, 'hash_5x16': 0, 'mixed_5x16': 2}
    for name, n_switch in switch_layers.items():
        experts = p[name].options['num_experts']
        router = n_switch * (experts * d + experts)  # a Switch router: K x d weights + K biases
        assert counts[name]['active_params'] == dense + router, name
        assert counts[name]['params'] > 3 * dense, name
    # Top-2 + shared: 2 routed experts of D/4 and a shared one of D/2 are the
    # dense FFN's weights and first biases; each adds its output bias (2d more
    # than the dense FFN's one), and the learned gate K x d (Switch: + K).
    for name, router_bias in (('hash_top2_shared', 0), ('switch_top2_shared', 1)):
        experts = p[name].options['num_experts']
        assert counts[name]['active_params'] == dense + 2 * d + experts * (d + router_bias), name
        # total parameters about 1x64's: the same routed hidden units, 192·d more
        # output biases, the shared expert and the gate
        assert 1 < counts[name]['params'] / counts['hash_1x64']['params'] < 1.011, name
    if scale == 'paper':  # appendix B.1's exact counts
        assert counts['hash_1x64']['params'] == 751_159_296
        assert counts['switch_1x64']['params'] == 751_224_896
        # the header's arithmetic: + 196,608 expert biases + 4,197,376 shared + the gate
        assert counts['hash_top2_shared']['params'] == 751_159_296 + 196_608 + 4_197_376 + 256 * 1024
