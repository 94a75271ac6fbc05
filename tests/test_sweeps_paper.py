"""The sweeps run the paper's protocol: its exact parameter counts (appendix B),
every count it prints, and each sweep's settings (sparse layer, load_bal,
sizes, hashes) against a table of the paper's values written here, apart from
the sweep files."""

from pathlib import Path

import pytest

from conftest import REPO
from parlai_hash.sweeps.cli import main as sweeps_main
from parlai_hash.sweeps.sizing import count_point_parameters, sizing_argv
from parlai_hash.sweeps.spec import load_sweep

ENV = {'REDDIT_DUMP_DIR': '/data/reddit', 'REDDIT_BPE_DIR': '/data/bpe', 'WIKITEXT103_DIR': '/data/wt103'}
SWEEPS = REPO / 'sweeps'


def paper_points(name):
    return {p.name: p for p in load_sweep(SWEEPS / f'{name}.yaml').points('paper', runs_dir=Path('/runs'), environ=ENV)}


def test_appendix_b_exact_parameter_counts():
    points = paper_points('table1')
    counts = count_point_parameters([points['switch_1x64'], points['hash_1x64']], 8008)
    assert counts['switch_1x64']['params'] == 751_224_896
    assert counts['hash_1x64']['params'] == 751_159_296


def _printed(text):
    number, suffix = float(text[:-1]), text[-1]
    return number * {'M': 1e6, 'B': 1e9}[suffix]


def test_every_count_the_paper_prints():
    """Within 0.5% of each printed count (the paper's own rounding), except the
    1x128 models: 1,288M parameters by the same arithmetic that gives the two
    exact counts, printed as 1.28B (truncated; 0.65% apart)."""
    seen = {}
    for path in sorted(SWEEPS.glob('*.yaml')):
        sweep = load_sweep(path)
        for point in sweep.points('paper', runs_dir=Path('/runs'), environ=ENV):
            printed = point.paper_row.get('params')
            if printed and 'init_model' not in point.options:
                key = tuple(a for a in sizing_argv(point, Path('d')) if a != 'd')
                seen.setdefault(key, (point, printed, sweep.scale('paper').vocab_size))
    assert len(seen) >= 10
    by_vocab = {}
    for key, (point, printed, vocab) in seen.items():
        by_vocab.setdefault(vocab, []).append((key, point, printed))
    checked = 0
    for vocab, entries in by_vocab.items():
        points = []
        for i, (_, point, _) in enumerate(entries):
            point.name = f'p{i}'  # distinct names across sweeps
            points.append(point)
        counts = count_point_parameters(points, vocab)
        for (_, point, printed) in entries:
            params = counts[point.name]['params']
            bound = 0.0075 if printed == '1.28B' else 0.005
            assert abs(params / _printed(printed) - 1) < bound, (point.options, printed, params)
            checked += 1
    assert checked == len(seen)


def test_table2_counts_with_the_gpt2_dictionary():
    """Table 2 cannot run without its data, but its counts check the same models
    with the 51,200-token GPT-2 dictionary: 266M, 795M, 794M."""
    points = paper_points('table1')
    counts = count_point_parameters([points['baseline'], points['switch_1x64'], points['hash_1x64']], 51200)
    for name, printed in (('baseline', 266e6), ('switch_1x64', 795e6), ('hash_1x64', 794e6)):
        assert abs(counts[name]['params'] / printed - 1) < 0.005, name


# The paper's settings per point: decoder layers, d, D, sparse layers, experts,
# load_bal (Switch), hashes / hash type. Written from the paper, not the files.
S7 = {'hash_layers': 7}
DENSE = {'n_decoder_layers': 11, 'embedding_size': 1024, 'ffn_size': 4096}
SWITCH = lambda k, lb=0.1, **o: {'model': 'switch_generator', 'num_experts': k, 'load_balance_weight': lb, **S7, **o}  # noqa: E731
HASH = lambda k, t='balanced', **o: {'model': 'hash_generator', 'num_experts': k, 'hash_type': t, **S7, **o}  # noqa: E731
FIVE = {'hash_layers': '1,3,5,7,9'}
PAPER = {
    'table1': {
        'baseline': {'model': 'transformer/generator', **DENSE},
        'wider': {'model': 'transformer/generator', 'n_decoder_layers': 11, 'embedding_size': 2048, 'ffn_size': 6144},
        'deeper': {'model': 'transformer/generator', 'n_decoder_layers': 22, 'embedding_size': 1536, 'ffn_size': 4096},
        'switch_1x64': SWITCH(64, **DENSE), 'hash_1x64': HASH(64, **DENSE),
        'switch_1x128': SWITCH(128), 'hash_1x128': HASH(128),
        'switch_5x16_lb0.01': SWITCH(16, 0.01, **FIVE), 'switch_5x16_lb0.1': SWITCH(16, 0.1, **FIVE),
        'hash_5x16': HASH(16, **FIVE, hash_per_layer='different'),
    },
    'table3': {
        **{f'hash_{t}': HASH(64, t) for t in ('balanced', 'random', 'clustered', 'dispersed', 'position',
                                              'bigram', 'previous', 'predicted', 'oracle')},
        'hash_5x16_same': HASH(16, **FIVE, hash_per_layer='same'),
        'hash_5x16_different': HASH(16, **FIVE, hash_per_layer='different'),
    },
    'table4': {
        'baseline': {'model': 'transformer/generator', 'n_decoder_layers': 8, 'embedding_size': 512, 'ffn_size': 512},
        'switch': {**SWITCH(16), 'n_decoder_layers': 8, 'embedding_size': 512, 'ffn_size': 512, 'hash_layers': 5},
        'hash_balanced': {**HASH(16), 'n_decoder_layers': 8, 'embedding_size': 512, 'ffn_size': 512, 'hash_layers': 5},
    },
    'table5': {'switch_1x32': SWITCH(32), 'hash_1x32': HASH(32, multihash=1),
               **{f'multihash_1x32_h{n}': HASH(32, multihash=n) for n in (2, 4, 8)}},
    'table6': {'switch_1x64': SWITCH(64), 'token_switch_1x64': SWITCH(64, switch_input='token'),
               'switch_1x128': SWITCH(128), 'token_switch_1x128': SWITCH(128, switch_input='token')},
    'table7': {**{f'switch_1x{k}': SWITCH(k) for k in (16, 32)}, **{f'hash_1x{k}': HASH(k, multihash=1) for k in (16, 32)},
               **{f'multihash_1x{k}_h{n}': HASH(k, multihash=n) for k in (16, 32) for n in (2, 4, 8)}},
    'table8': {
        'ft_wider': {'embedding_size': 2048, 'ffn_size': 6144},
        'ft_deeper': {'n_decoder_layers': 22, 'embedding_size': 1536},
        'ft_switch_load_bal0': SWITCH(64, 0.0, freeze='none'),
        'ft_switch_none': SWITCH(64, 0.1, freeze='none'),
        'ft_switch_experts': SWITCH(64, freeze='experts'), 'ft_switch_router': SWITCH(64, freeze='router'),
        'ft_switch_all-but-last': SWITCH(64, freeze='all-but-last'),
        'ft_switch_all-but-experts': SWITCH(64, freeze='all-but-experts'),
        'ft_hash_none': HASH(64, freeze='none'), 'ft_hash_experts': HASH(64, freeze='experts'),
        'ft_hash_all-but-last': HASH(64, freeze='all-but-last'),
        'ft_hash_all-but-experts': HASH(64, freeze='all-but-experts'),
    },
    'table9': {f'switch_1x64_lb{lb}': SWITCH(64, float(lb)) for lb in ('0', '0.01', '0.05', '0.1', '0.5')},
    'figure3': {**{f'switch_1x{k}': SWITCH(k) for k in (16, 32, 64, 128)},
                **{f'hash_1x{k}': HASH(k) for k in (16, 32, 64, 128)},
                **{f'hash_1x64_layer{i}': {**HASH(64), 'hash_layers': i} for i in range(11) if i != 7}},
}


def _same(actual, expected):
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return actual is not None and float(actual) == float(expected)
    return str(actual) == str(expected)


@pytest.mark.parametrize('sweep', sorted(PAPER))
def test_each_sweep_runs_the_papers_settings(sweep):
    points = paper_points(sweep)
    expected = PAPER[sweep]
    for name, settings in expected.items():
        assert name in points, f'{sweep}: the paper has a row {name}; the sweep lacks it'
        for key, value in settings.items():
            assert _same(points[name].options.get(key), value), (sweep, name, key, points[name].options.get(key))
    if sweep == 'table8':
        tasks = points['ft_hash_none'].options['task'].split(',')
        assert tasks == ['convai2', 'empathetic_dialogues', 'wizard_of_wikipedia', 'blended_skill_talk']


def test_every_paper_row_is_a_row_the_paper_prints():
    """Each paper_row names a table and row, and its numbers are the paper's
    (checked against the paper's text when the shared folder has it)."""
    text_path = REPO.parent / 'shared' / 'paper' / 'hash-layers-roller-2021.txt'
    text = text_path.read_text(encoding='utf-8') if text_path.exists() else None
    rows = 0
    for path in sorted(SWEEPS.glob('*.yaml')):
        for point in load_sweep(path).points('paper', runs_dir=Path('/runs'), environ=ENV):
            row = point.paper_row
            if not row:
                continue
            rows += 1
            assert row['row'].startswith(('Table ', 'Figure ')), row
            if text is not None:
                for key in ('valid', 'test'):
                    if row.get(key) is not None:
                        assert f"{row[key]:.2f}" in text, (path.stem, point.name, key, row[key])
    assert rows >= 60


def test_dry_run_prints_the_papers_options(capsys):
    assert sweeps_main(['run', str(SWEEPS / 'table1.yaml'), '--slurm', '--dry-run', '--scale', 'paper',
                        '--points', 'switch_1x64', '--runs-dir', '/tmp/unused-runs']) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith('parlai train_model') and 'switch_1x64' in line)
    for flag in ('--hash-layers 7', '--load-balance-weight 0.1', '--num-experts 64', '--n-decoder-layers 11',
                 '--embedding-size 1024', '--ffn-size 4096', '--n-heads 16', '--variant prelayernorm',
                 '--n-positions 2048', '--learn-positional-embeddings true'):
        assert flag in line, flag


def test_check_fails_on_an_option_parlai_rejects(tmp_path, capsys):
    good = tmp_path / 'good.yaml'
    good.write_text(
        "sweep: t\ntitle: t\nscales:\n  local:\n    options: {task: integration_tests, n_layers: 2,"
        " embedding_size: 8, ffn_size: 8, n_heads: 2}\n"
        "points:\n  - name: hash\n    options: {model: hash_generator, num_experts: 4}\n"
    )
    assert sweeps_main(['check', str(good)]) == 0
    bad = tmp_path / 'bad.yaml'
    bad.write_text(good.read_text().replace('num_experts: 4', 'num_expertz: 4'))
    assert sweeps_main(['check', str(bad)]) == 1
    assert '--num-expertz' in capsys.readouterr().out
