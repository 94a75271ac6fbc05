"""Seeds in the sweeps: seeded points, intervals over seeds, verdicts on orderings (no training)."""

import math
import textwrap

import pytest

from parlai_hash.sweeps import cli
from parlai_hash.sweeps.errors import SweepError
from parlai_hash.sweeps.records import write_record
from parlai_hash.sweeps import plots
from parlai_hash.sweeps.figures import seed_curve, seed_mean
from parlai_hash.sweeps.report import late_change, ordering_table, paper_table, records_frame, write_report
from parlai_hash.sweeps.spec import Point, load_sweep, seeded_points
from parlai_hash.sweeps.stats import (HOLDS, ONE_SEED, REVERSED, UNRESOLVED, compare, mean_interval, t_quantile,
                                      welch_interval)

SWEEP = """
sweep: demo
seed: 0
scales:
  local:
    options: {task: integration_tests, batchsize: 2}
points:
  - name: parent
    options: {model: transformer/generator}
  - name: child
    init_from: parent
    options: {dict_file: {dict_file_of: parent}}
orderings:
  - {better: child, worse: parent, paper: "child < parent"}
"""


def point(tmp_path, name, seed=0):
    return Point(sweep='s', scale='local', name=name, model=name, configuration='', options={},
                 run_dir=tmp_path / name, seed=seed)


def write_seeds(p, values, sweep_seed=0, test=None):
    """Records of ``p`` for each seed: the sweep's seed in its run folder, others in seedK/."""
    for seed, value in values.items():
        folder = p.run_dir if seed == sweep_seed else p.run_dir / f'seed{seed}'
        write_record(folder / 'record.json', {'params': 1000, 'seed': seed, 'valid': {'ppl': value},
                                              'test': {'ppl': value if test is None else test[seed]}})


def test_t_half_width_matches_a_hand_computation():
    interval = mean_interval([10.0, 12.0, 14.0])
    assert interval.mean == 12.0 and interval.sd == pytest.approx(2.0) and interval.n == 3
    assert interval.half_width == pytest.approx(4.303 * 2 / math.sqrt(3), rel=1e-3)
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    single = mean_interval([5.0])
    assert single.mean == 5.0 and single.n == 1 and math.isnan(single.low)


def test_verdicts_follow_the_interval():
    better = {0: 10.0, 1: 10.2, 2: 9.9}
    assert compare(better, {0: 12.0, 1: 12.1, 2: 12.3}).verdict == HOLDS
    assert compare(better, {0: 8.0, 1: 8.1, 2: 7.9}).verdict == REVERSED
    mixed = compare(better, {0: 11.0, 1: 9.0, 2: 10.5})
    assert mixed.verdict == UNRESOLVED and mixed.low < 0 < mixed.high
    one = compare({0: 10.0}, {0: 12.0, 1: 12.0})
    assert one.verdict == ONE_SEED and one.difference == pytest.approx(2.0) and math.isnan(one.low)


def test_points_with_different_seeds_are_compared_on_the_seeds_they_share():
    # Seed 1 is 100 lower for every model: a mean over {0, 1} against seed 0 alone would say -33.
    one = compare({0: 752.4}, {0: 769.2, 1: 638.1})
    assert one.verdict == ONE_SEED and one.difference == pytest.approx(16.8) and one.method == 'one seed (0)'
    some = compare({0: 10.0, 1: 20.0, 2: 30.0}, {0: 11.0, 1: 21.0, 3: -50.0})
    assert some.method == 'paired t (seeds 0, 1)' and some.difference == pytest.approx(1.0)
    assert some.verdict == HOLDS and some.low == some.high == pytest.approx(1.0)  # sd 0: the difference itself


def test_paired_when_same_seeds_else_welch():
    better = {0: 10.0, 1: 20.0, 2: 30.0}
    worse = {0: 11.0, 1: 21.2, 2: 30.8}
    paired = compare(better, worse)
    # Paired: the differences 1, 1.2, 0.8 (mean 1, sd 0.2), though the sides vary by 10 across seeds.
    assert paired.method == 'paired t' and paired.verdict == HOLDS
    assert paired.high - paired.difference == pytest.approx(4.303 * 0.2 / math.sqrt(3), rel=1e-3)
    # The same values under other seeds: unpaired, the spread across seeds hides the difference.
    welch = compare(better, {3: 11.0, 4: 21.2, 5: 30.8})
    assert welch.method == 'Welch t' and welch.verdict == UNRESOLVED
    expected = welch_interval([11.0, 21.2, 30.8], [10.0, 20.0, 30.0])
    assert (welch.low, welch.high) == (expected.low, expected.high)


def test_table_shows_mean_and_half_width_with_n(tmp_path):
    many, one = point(tmp_path, 'many'), point(tmp_path, 'one')
    write_seeds(many, {0: 10.0, 1: 12.0, 2: 14.0})
    write_seeds(one, {0: 23.164})
    frame = records_frame([many, one], 'ppl')
    row = frame.iloc[0]
    assert row['valid_ppl'] == 12.0 and row['valid_ppl_sd'] == pytest.approx(2.0) and row['valid_ppl_n'] == 3
    assert row['valid_ppl_ci_high'] - 12.0 == pytest.approx(4.303 * 2 / math.sqrt(3), rel=1e-3)
    assert row['seeds'] == '0,1,2'
    table = paper_table(frame, 'ppl')
    assert table.iloc[0]['Valid PPL'] == '12.00 ± 4.97 (n=3)'
    assert table.iloc[1]['Valid PPL'] == '23.16'  # one record: as before
    text = write_report(frame, 'ppl', tmp_path / 'out', 'demo', 'Demo')['md'].read_text()
    assert '95% Student t interval' in text
    header = (tmp_path / 'out' / 'demo.csv').read_text().splitlines()[0]
    assert 'valid_ppl_sd' in header and 'valid_ppl_ci_low' in header and 'valid_ppl_ci_high' in header


def test_single_seed_report_has_no_interval_note(tmp_path):
    p = point(tmp_path, 'one')
    write_seeds(p, {0: 20.0})
    text = write_report(records_frame([p], 'ppl'), 'ppl', tmp_path / 'out', 'demo', 'Demo')['md'].read_text()
    assert 'interval' not in text and '| 20.00 | 20.00 |' in text


def test_ordering_table_and_markdown(tmp_path):
    good, bad, lone = point(tmp_path, 'good'), point(tmp_path, 'bad'), point(tmp_path, 'lone')
    write_seeds(good, {0: 10.0, 1: 10.1, 2: 9.9})
    write_seeds(bad, {0: 12.0, 1: 12.2, 2: 11.9})
    write_seeds(lone, {0: 11.0})
    orderings = [{'better': 'good', 'worse': 'bad', 'paper': 'Table X'},
                 {'better': 'bad', 'worse': 'good', 'paper': ''},
                 {'better': 'good', 'worse': 'lone', 'paper': ''}]
    table = ordering_table(orderings, [good, bad, lone], 'ppl')
    assert list(table['Verdict']) == [HOLDS, REVERSED, ONE_SEED]
    assert list(table['Test']) == ['paired t', 'paired t', 'one seed (0)']
    assert table.iloc[0]['Valid PPL worse − better'] == '+2.03'
    assert table.iloc[2]['95% interval'] == '—'
    frame = records_frame([good, bad, lone], 'ppl')
    text = write_report(frame, 'ppl', tmp_path / 'out', 'demo', 'Demo', orderings=table)['md'].read_text()
    assert "## The paper's orderings" in text and '| good | bad | Table X |' in text


def sweep_file(tmp_path, text=SWEEP):
    path = tmp_path / 'demo.yaml'
    path.write_text(textwrap.dedent(text))
    (tmp_path / 'pyproject.toml').write_text('')
    return path


def test_seeded_points_keep_the_sweep_seed_in_place_and_pair_dependencies(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path))
    assert sweep.orderings == [{'better': 'child', 'worse': 'parent', 'paper': 'child < parent'}]
    points = sweep.points('local', runs_dir=tmp_path / 'runs')
    seeded = seeded_points(points, [0, 1])
    assert [p.name for p in seeded] == ['parent', 'parent@seed1', 'child', 'child@seed1']
    assert seeded[0] is points[0]  # the sweep's own seed: same point, same folder
    child1 = seeded[3]
    assert child1.run_dir == tmp_path / 'runs' / 'child' / 'seed1' and child1.seed == 1
    assert child1.point_name == 'child' and child1.depends_on == ('parent@seed1',)
    assert child1.options['init_model'] == str(tmp_path / 'runs' / 'parent' / 'seed1' / 'model')
    assert child1.options['dict_file'] == str(tmp_path / 'runs' / 'parent' / 'seed1' / 'model.dict')
    assert seeded_points(points, []) == points


def test_orderings_must_name_points(tmp_path):
    with pytest.raises(SweepError, match='not a point'):
        load_sweep(sweep_file(tmp_path, SWEEP.replace('better: child', 'better: nobody')))


def test_dry_run_prints_one_command_per_point_and_seed(tmp_path, capsys):
    path = sweep_file(tmp_path)
    runs = tmp_path / 'runs'
    # A finished (point, seed) is skipped; the others are listed with their seed.
    write_record(runs / 'parent' / 'seed1' / 'record.json', {'seed': 1, 'valid': {'ppl': 1.0}})
    assert cli.main(['run', str(path), '--local', '--runs-dir', str(runs), '--seeds', '0,1', '--dry-run']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert '3 to run, 1 finished' in lines[0] and 'seeds 0,1' in lines[0]
    commands = lines[1:]
    assert len(commands) == 3 and all(c.startswith('parlai train_model') for c in commands)
    assert commands[0].endswith(f"{runs / 'parent' / 'model'}  # seed 0")
    assert commands[1].endswith(f"{runs / 'child' / 'model'}  # seed 0")
    assert commands[2].endswith(f"{runs / 'child' / 'seed1' / 'model'}  # seed 1")
    # --points NAME selects all its seeds (and the unfinished parent run they need).
    assert cli.main(['run', str(path), '--local', '--runs-dir', str(runs), '--seeds', '0,1', '--dry-run',
                     '--points', 'child']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert '3 to run' in lines[0] and [line.rsplit('# ', 1)[1] for line in lines[1:]] == ['seed 0'] * 2 + ['seed 1']


def test_sweep_file_seeds_key(tmp_path, capsys):
    path = sweep_file(tmp_path, SWEEP.replace('seed: 0', 'seed: 0\nseeds: [0, 1, 2]'))
    assert load_sweep(path).seeds == (0, 1, 2)
    assert cli.main(['run', str(path), '--local', '--runs-dir', str(tmp_path / 'r'), '--dry-run']) == 0
    assert '6 to run' in capsys.readouterr().out


def test_dry_run_without_seeds_is_unchanged(tmp_path, capsys):
    path = sweep_file(tmp_path)
    assert cli.main(['run', str(path), '--local', '--runs-dir', str(tmp_path / 'r'), '--dry-run']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('sweep demo (local): 2 to run') and '#' not in ''.join(out[1:])


def test_report_prints_verdicts(tmp_path, capsys):
    path = sweep_file(tmp_path)
    runs = tmp_path / 'runs'
    sweep = load_sweep(path)
    parent, child = sweep.points('local', runs_dir=runs)
    write_seeds(parent, {0: 12.0, 1: 12.2, 2: 11.9})
    write_seeds(child, {0: 10.0, 1: 10.1, 2: 9.9})
    assert cli.main(['report', str(path), '--runs-dir', str(runs), '--no-figures']) == 0
    out = capsys.readouterr().out
    assert "The paper's orderings" in out and 'holds' in out and '(n=3)' in out
    assert "## The paper's orderings" in (runs / 'demo.md').read_text()


def test_t_table_without_scipy(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, 'scipy.stats', None)  # import fails: the table is used
    assert t_quantile(2) == 4.303 and t_quantile(2.7) == 4.303 and t_quantile(500) == 1.980


def test_late_change_is_the_move_over_the_last_fifth():
    curve = [{'train_steps': 100, 'ppl': 300.0}, {'train_steps': 400, 'ppl': 120.0},
             {'train_steps': 500, 'ppl': 114.0}]
    assert late_change(curve, 'ppl') == pytest.approx(-0.05)  # 120 at step 400 (80%) -> 114
    rising = [{'train_steps': 300, 'ppl': 100.0}, {'train_steps': 1000, 'ppl': 130.0}]
    assert late_change(rising, 'ppl') == pytest.approx(0.30)  # held-out text after memorising
    assert late_change([{'train_steps': 500, 'ppl': 9.0}], 'ppl') is None
    assert late_change([{'train_steps': 450, 'ppl': 9.0}, {'train_steps': 500, 'ppl': 8.0}], 'ppl') is None


def test_regime_columns_show_train_fit_epochs_and_flattening(tmp_path):
    p, old = point(tmp_path, 'new'), point(tmp_path, 'old')
    for seed, (train, valid) in {0: (50.0, 110.0), 1: (54.0, 112.0)}.items():
        folder = p.run_dir if seed == 0 else p.run_dir / f'seed{seed}'
        write_record(folder / 'record.json', {
            'seed': seed, 'valid': {'ppl': valid}, 'test': {'ppl': valid}, 'train': {'ppl': train}, 'epochs': 3.5,
            'valid_curve': [{'train_steps': 80, 'ppl': valid * 1.1}, {'train_steps': 100, 'ppl': valid}]})
    write_seeds(old, {0: 20.0})  # a record from before: no train split, no epochs
    frame = records_frame([p, old], 'ppl')
    table = paper_table(frame, 'ppl')
    assert list(table['Train PPL']) == ['52.00 ± 25.41 (n=2)', '—']
    assert list(table['Epochs']) == ['3.50', '—']
    assert table.iloc[0]['Valid Δ last 1/5'] == '-9.1%' and table.iloc[1]['Valid Δ last 1/5'] == '—'
    text = write_report(frame, 'ppl', tmp_path / 'out', 'demo', 'Demo')['md'].read_text()
    assert 'first 1,000 training examples' in text and 'flattened' in text
    # Old records alone: the table has no regime columns.
    assert 'Train PPL' not in paper_table(records_frame([old], 'ppl'), 'ppl')


def test_dropped_column_shows_capacity_loss_only_where_a_point_drops(tmp_path):
    switch, hashed = point(tmp_path, 'switch'), point(tmp_path, 'hash')
    for seed, dropped in {0: 0.10, 1: 0.14}.items():
        folder = switch.run_dir if seed == 0 else switch.run_dir / f'seed{seed}'
        write_record(folder / 'record.json', {'seed': seed, 'valid': {'ppl': 9.0}, 'test': {'ppl': 9.0},
                                              'train_dropped': dropped})
    write_record(hashed.run_dir / 'record.json', {'seed': 0, 'valid': {'ppl': 8.0}, 'test': {'ppl': 8.0},
                                                  'train_dropped': None})
    frame = records_frame([switch, hashed], 'ppl')
    assert list(paper_table(frame, 'ppl')['Dropped in training']) == ['12.0%', '—']
    assert 'Dropped in training:' in write_report(frame, 'ppl', tmp_path / 'out', 'demo', 'Demo')['md'].read_text()
    assert 'Dropped in training' not in paper_table(records_frame([hashed], 'ppl'), 'ppl')


def test_figures_average_seeds_with_their_interval(tmp_path):
    records = {s: {'valid': {'ppl': v}, 'valid_curve': [{'train_steps': 10, 'ppl': v + 5}, {'train_steps': 20, 'ppl': v}]}
               for s, v in {0: 10.0, 1: 12.0, 2: 14.0}.items()}
    half = 4.303 * 2 / math.sqrt(3)
    assert seed_mean([10.0, 12.0, 14.0]) == pytest.approx((12.0, half), rel=1e-3)
    assert seed_mean([7.0]) == (7.0,) and seed_mean([]) is None
    curve = seed_curve(records, 'ppl')
    assert [c[0] for c in curve] == [10.0, 20.0] and curve[1] == pytest.approx((20.0, 12.0, half), rel=1e-3)
    assert seed_curve({0: records[0]}, 'ppl') == [(10.0, 15.0), (20.0, 10.0)]
    # Means with bars and single runs in one figure.
    assert plots.plot_versus({'Hash': [(16, 12.0, half), (64, 11.0)]}, tmp_path / 'v.png', 'experts').exists()
    assert plots.plot_valid_curves({'Hash': curve, 'Dense': [(10, 16.0), (20, 13.0)]}, tmp_path / 'c.png').exists()


def test_keep_records_copies_every_seed(tmp_path):
    p = point(tmp_path, 'hash')
    write_seeds(p, {0: 10.0, 1: 11.0, 2: 12.0})
    assert cli.keep_records([p, point(tmp_path, 'unrun')], tmp_path / 'out') == 3
    assert sorted(f.name for f in (tmp_path / 'out' / 'records').iterdir()) == [
        'hash.json', 'hash@seed1.json', 'hash@seed2.json']


def test_a_record_made_with_other_options_is_refused(tmp_path):
    from parlai_hash.sweeps.runner import plan_run

    sweep = load_sweep(sweep_file(tmp_path))
    points = sweep.points('local', runs_dir=tmp_path / 'runs')
    parent = points[0]
    write_record(parent.record_file, {'valid': {'ppl': 5.0}, 'options': dict(parent.options)})
    assert [p.name for p in plan_run(sweep, points, ['parent']).finished] == ['parent']
    write_record(parent.record_file, {'valid': {'ppl': 5.0}, 'options': {**parent.options, 'batchsize': 16}})
    with pytest.raises(SweepError, match=r"parent \(seed 0\): the record .* other options .*batchsize: 16 there, "
                                         r"2 now.*move that run folder away"):
        plan_run(sweep, points, ['parent'])
