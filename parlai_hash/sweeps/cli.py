"""``python -m parlai_hash.sweeps run|report|check|params|cards ...``."""

from __future__ import annotations

import argparse
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from parlai_hash.sweeps.errors import SweepError
from parlai_hash.sweeps.spec import Point, Sweep, load_sweep, seeded_points


def _points_arg(value: Optional[str]) -> Optional[List[str]]:
    return [v.strip() for v in value.split(',') if v.strip()] if value else None


def _seeds_arg(value: str) -> List[int]:
    try:
        return [int(v) for v in value.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'{value!r} is not a comma-separated list of integers') from None


def _jobs_arg(value: str) -> int:
    try:
        jobs = int(value)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f'{value!r} is not a number of points to train at once (1 or more)')
    return jobs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m parlai_hash.sweeps',
        description="Run the paper's sweeps and turn their records into its tables and figures.",
    )
    sub = parser.add_subparsers(dest='command', required=True)

    def common(p: argparse.ArgumentParser, default_scale: Optional[str] = 'local') -> None:
        p.add_argument('sweep', type=Path, help='a sweep file, e.g. sweeps/table1.yaml')
        p.add_argument('--scale', default=default_scale,
                       help='which size to use: paper, or its scaled-down twin local (default: %(default)s)')
        p.add_argument('--runs-dir', type=Path, default=None,
                       help='where runs go (default: <repo>/runs/sweeps/<sweep>/<scale>)')

    run = sub.add_parser('run', help='train every point, skipping finished ones')
    common(run, default_scale=None)
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument('--local', action='store_true', help='train the points on this machine (see --jobs)')
    where.add_argument('--slurm', action='store_true', help='submit one SLURM job per point (submitit)')
    run.add_argument('--points', type=_points_arg, default=None,
                     help='comma-separated point names (default: all); unfinished points they need are added')
    run.add_argument('--seeds', type=_seeds_arg, default=None,
                     help="comma-separated seeds: train each point once per seed (default: the sweep's seeds:, "
                     "else its seed:)")
    run.add_argument('--dry-run', action='store_true', help='print the commands, run nothing')
    run.add_argument('--no-reuse', action='store_true',
                     help='train every point, even one whose options and seed match a finished run in '
                     'runs/sweeps (by default that run is linked in and its record taken)')
    run.add_argument('--quiet', action='store_true', help='--local: training output only to each train.log')
    run.add_argument('--jobs', type=_jobs_arg, default=1,
                     help='--local: points trained side by side, the cores shared among them (default: 1). '
                     'Another run on the same sweep is safe: a point being trained is left to its run')
    run.add_argument('--wait', action='store_true', help='--slurm: wait for the jobs and report how they ended')
    run.add_argument('--slurm-cluster', default=None, choices=['slurm', 'local', 'debug'],
                     help="--slurm: submitit's executor (default: SLURM when available; "
                     "'local' runs the same jobs on this machine, for testing)")
    run.add_argument('--partition', default=None, help='--slurm: override the scale\'s partition')
    run.add_argument('--timeout-min', type=int, default=None, help='--slurm: override the time limit')

    report = sub.add_parser('report', help="print the paper's table; write CSV, Markdown and the figures")
    common(report)
    report.add_argument('--out', type=Path, default=None,
                        help='folder for the CSV/Markdown/PNG (default: the runs folder)')
    report.add_argument('--no-figures', action='store_true', help='only the table')
    report.add_argument('--footer', type=Path, default=None,
                        help='Markdown appended under the table (e.g. the command)')
    report.add_argument('--keep-records', action='store_true',
                        help='also copy each record (and measured expert load) into --out, to commit the result')

    check = sub.add_parser(
        'check', help="check sweep files: structure, and every point's options against ParlAI's parser")
    check.add_argument('sweeps', type=Path, nargs='+')
    check.add_argument('--scale', default=None, help='only this scale (default: every scale)')

    params = sub.add_parser('params', help='parameter counts of every point, without training')
    common(params)
    params.add_argument('--vocab-size', type=int, default=None,
                        help="dictionary size (default: the scale's vocab_size)")

    cards = sub.add_parser('cards', help='fill the generated parts of the model cards from the sweeps and results')
    cards.add_argument('config', type=Path, nargs='?', default=Path('model_cards/cards.yaml'))
    cards.add_argument('--check', action='store_true', help='only report cards that are out of date (exit 1)')
    return parser


def _points(sweep: Sweep, scale: str, runs_dir: Optional[Path], strict_env: bool = True) -> List[Point]:
    return sweep.points(scale, runs_dir=runs_dir, strict_env=strict_env)


def _twins(sweep: Sweep, scale: str, to_run: Sequence[Point]) -> Dict[str, Path]:
    """Point name -> the finished run (any sweep's) it would reproduce."""
    from parlai_hash.sweeps.reuse import finished_runs, twin_of

    index = finished_runs(sweep.root / 'runs' / 'sweeps', scale)
    return {p.name: twin for p in to_run if (twin := twin_of(p, index)) is not None}


def _reuse(sweep: Sweep, to_run: Sequence[Point], points: Sequence[Point], twins: Dict[str, Path],
           dry_run: bool) -> List[Point]:
    """Take each twin's run (or say it would be taken); the points still to train."""
    from parlai_hash.sweeps.reuse import adopt

    by_name = {p.name: p for p in points}
    left = []
    for point in to_run:
        twin = twins.get(point.name)
        if twin is not None and (dry_run or adopt(sweep, point, twin, by_name)):
            print(f"{point.name}: {'would reuse' if dry_run else 'reused'} {twin} (same options and seed)")
        else:
            left.append(point)
    return left


def cmd_run(args: argparse.Namespace) -> int:
    from parlai_hash.sweeps.runner import check_requirements, plan_run

    sweep = load_sweep(args.sweep)
    if args.jobs > 1 and not args.local:
        raise SweepError(sweep.where(), '--jobs is for --local runs', 'drop --jobs: SLURM runs every job at once')
    scale = args.scale or ('local' if args.local else 'paper')
    seeds = args.seeds if args.seeds is not None else list(sweep.seeds)
    runs_dir = args.runs_dir if args.runs_dir is not None else sweep.default_runs_dir(scale)
    points = seeded_points(_points(sweep, scale, args.runs_dir, strict_env=not args.dry_run), seeds)
    plan = plan_run(sweep, points, args.points)
    twins = {} if args.no_reuse else _twins(sweep, scale, plan.to_run)
    shown_seeds = f", seeds {','.join(map(str, seeds))}" if seeds else ''
    shown_twins = f", {len(twins)} reused from identical finished runs" if twins else ''
    print(f"sweep {sweep.name} ({scale}{shown_seeds}): {len(plan.to_run) - len(twins)} to run{shown_twins}, "
          f"{len(plan.finished)} finished (skipped); runs in {runs_dir}")
    plan.to_run = _reuse(sweep, plan.to_run, points, twins, dry_run=args.dry_run)
    if args.dry_run:
        for point in plan.to_run:
            # The seed is not a ParlAI option (the worker seeds before building the model): shown as a comment.
            print(point.command() + (f'  # seed {point.seed}' if seeds else ''))
        return 0
    if not plan.to_run:
        return 0
    check_requirements(sweep, scale)
    if args.local:
        from parlai_hash.sweeps.local import run_local

        outcome = run_local(sweep, plan.to_run, points, quiet=args.quiet, jobs=args.jobs)
        bad = {**outcome.failed, **outcome.skipped}
        stopped = outcome.not_started
    else:
        from parlai_hash.sweeps.slurm import submit

        outcome = submit(
            sweep, sweep.scale(scale), plan.to_run, points, folder=runs_dir / 'slurm',
            cluster=args.slurm_cluster, wait=args.wait,
            overrides={'partition': args.partition, 'timeout_min': args.timeout_min},
        )
        bad, stopped = outcome.failed, []
    for name, why in bad.items():
        print(f'{name}: not finished: {why}')
    if stopped:
        print(f'stopped before {len(stopped)} point(s): {", ".join(stopped)}; the same command goes on from here')
        return 130  # as an interrupted command
    return 1 if bad else 0


def cmd_report(args: argparse.Namespace) -> int:
    from parlai_hash.sweeps.report import (ORDERING_NOTE, ordering_table, paper_table,
                                           records_frame, table_notes, to_text, write_report)

    sweep = load_sweep(args.sweep)
    points = _points(sweep, args.scale, args.runs_dir, strict_env=False)
    frame = records_frame(points, sweep.metric)
    out_dir = args.out or points[0].run_dir.parent
    print(f'{sweep.title} ({args.scale})\n')
    print(to_text(paper_table(frame, sweep.metric)))
    note = table_notes(frame, sweep.metric)
    if note:
        print(f'\n{note}')
    orderings = ordering_table(sweep.orderings, points, sweep.metric) if sweep.orderings else None
    if orderings is not None:
        print(f"\nThe paper's orderings\n\n{to_text(orderings)}\n{ORDERING_NOTE}")
    footer = args.footer.read_text(encoding='utf-8') if args.footer else None
    paths = write_report(frame, sweep.metric, out_dir, sweep.name, f'{sweep.title} ({args.scale})', footer,
                         orderings)
    print(f"\nwrote {paths['csv']}\nwrote {paths['md']}")
    if not args.no_figures and sweep.figures:
        from parlai_hash.sweeps.figures import make_figures

        make_figures(sweep, points, out_dir)
    if args.keep_records:
        kept = keep_records(points, out_dir)
        print(f'copied {kept} records (and expert loads) into {out_dir}')
    return 0


def keep_records(points: Sequence[Point], out_dir: Path) -> int:
    """Copy records and measured expert loads next to the table (not the models).

    ``records/<point>.json`` is the sweep seed's run, ``records/<point>@seedK.json`` each other seed's.
    """
    import shutil

    kept = 0
    for point in points:
        for path in [point.record_file, *sorted(point.run_dir.glob('seed*/record.json'))]:
            if not path.exists():
                continue
            name = point.name if path == point.record_file else f'{point.name}@{path.parent.name}'
            (out_dir / 'records').mkdir(parents=True, exist_ok=True)
            shutil.copy(path, out_dir / 'records' / f'{name}.json')
            kept += 1
        for load in point.run_dir.glob('expert_load_valid.csv'):
            (out_dir / 'expert_load').mkdir(parents=True, exist_ok=True)
            shutil.copy(load, out_dir / 'expert_load' / f'{point.name}.csv')
    return kept


def check_point_options(point: Point) -> Optional[str]:
    """ParlAI's parser's complaint about the point's arguments, or None if it accepts them."""
    from parlai.scripts.train_model import setup_args

    captured = io.StringIO()
    try:
        with redirect_stdout(captured), redirect_stderr(captured):
            setup_args().parse_args(point.argv())
    except SystemExit:
        lines = [line for line in captured.getvalue().splitlines() if 'error' in line.lower()]
        return lines[-1].strip() if lines else captured.getvalue().strip().splitlines()[-1]
    return None


def cmd_check(args: argparse.Namespace) -> int:
    problems = 0
    for path in args.sweeps:
        sweep = load_sweep(path)
        for scale in ([args.scale] if args.scale else list(sweep.scales)):
            points = _points(sweep, scale, None, strict_env=False)
            bad = 0
            for point in points:
                complaint = check_point_options(point)
                if complaint:
                    bad += 1
                    print(f'{sweep.where()}: {scale}: {point.name}: {complaint}')
            problems += bad
            missing = sweep.missing_requirements(scale)
            note = f"; data absent here: {', '.join(map(str, missing))}" if missing else ''
            status = f'{bad} of {len(points)} points rejected' if bad else f'{len(points)} points ok'
            print(f'{sweep.where()}: {scale}: {status}{note}')
    return 1 if problems else 0


def cmd_params(args: argparse.Namespace) -> int:
    import pandas as pd

    from parlai_hash.sweeps.report import human_count
    from parlai_hash.sweeps.sizing import count_point_parameters

    sweep = load_sweep(args.sweep)
    vocab = args.vocab_size or sweep.scale(args.scale).vocab_size
    if not vocab:
        raise SweepError(sweep.where(f'scales.{args.scale}'), "has no vocab_size",
                         "pass --vocab-size N (the dictionary size)")
    points = _points(sweep, args.scale, args.runs_dir, strict_env=False)
    counts = count_point_parameters(points, vocab)
    table = pd.DataFrame([{
        'point': p.name, 'Model': p.model, 'Configuration': p.configuration,
        'Params': human_count(counts[p.name]['params']), 'params': counts[p.name]['params'],
        'active/token': counts[p.name]['active_params'],
    } for p in points])
    print(f'{sweep.title} ({args.scale}, dictionary of {vocab} tokens)\n')
    print(table.to_string(index=False))
    return 0


def cmd_cards(args: argparse.Namespace) -> int:
    from parlai_hash.sweeps.model_cards import update_cards

    changed = update_cards(args.config, check=args.check)
    for path in changed:
        print(f"{path}: {'out of date' if args.check else 'updated'}")
    if not changed:
        print('model cards are up to date')
    return 1 if args.check and changed else 0


COMMANDS = {'run': cmd_run, 'report': cmd_report, 'check': cmd_check, 'params': cmd_params, 'cards': cmd_cards}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SweepError as err:
        print(f'parlai-hash sweeps: error: {err}', file=sys.stderr)
        return 2
