"""Sweep files: loading, checking, and expanding them into runnable points.

A sweep file (YAML) names a grid over ParlAI options; ``sweeps/README.md``
documents the format. :func:`load_sweep` reads and checks one;
:meth:`Sweep.points` expands it at one scale (``paper`` or its scaled-down
twin ``local``) into :class:`Point` s, each one ``parlai train_model`` run.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from parlai_hash.sweeps.errors import SweepError

SWEEP_KEYS = {'sweep', 'title', 'paper', 'description', 'seed', 'seeds', 'metric', 'extends', 'scales', 'points',
              'figures', 'orderings'}
SCALE_KEYS = {'description', 'options', 'slurm', 'requires', 'vocab_size'}
POINT_KEYS = {'name', 'model', 'configuration', 'description', 'options', 'scales', 'grid', 'init_from', 'only',
              'paper_row'}
#: A point's ``paper_row``: the row of the paper it reproduces and the numbers printed there.
PAPER_ROW_KEYS = {'row', 'params', 'valid', 'test'}
FIGURE_KEYS = {'kind', 'file', 'title', 'points', 'x', 'xlabel', 'series', 'datatype', 'max_examples'}
FIGURE_KINDS = ('curves', 'versus', 'expert_load')
#: An ``orderings:`` entry: the paper's claim that ``better`` has a lower metric than ``worse``.
ORDERING_KEYS = {'better', 'worse', 'paper'}
#: Separates a point's name from its seed in a seeded copy's name (not allowed in point names).
SEED_MARK = '@seed'
SLURM_KEYS = {
    'nodes', 'gpus_per_node', 'cpus_per_task', 'mem_gb', 'timeout_min', 'partition',
    'constraint', 'account', 'qos', 'comment', 'array_parallelism', 'additional',
}
#: Options the runner sets itself (a point's model file lives in its run folder).
RUNNER_OPTIONS = {'model_file'}
#: Options a point with ``init_from`` gets from its parent's run.
INIT_OPTIONS = {'init_model', 'dict_file'}
#: ``{model_file_of: NAME}`` / ``{dict_file_of: NAME}`` as an option value.
REFERENCE_KEYS = {'model_file_of': '', 'dict_file_of': '.dict'}

_ENV = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}')


def find_root(path: Path) -> Path:
    """The repository holding a sweep file: the nearest folder with pyproject.toml or .git.

    Relative paths in a sweep file (``../shared/data/...``) are read against it,
    so a sweep behaves the same from any working directory.
    """
    for folder in path.resolve().parents:
        if (folder / 'pyproject.toml').exists() or (folder / '.git').exists():
            return folder
    return path.resolve().parent


def option_flag(key: str) -> str:
    """``n_decoder_layers`` -> ``--n-decoder-layers`` (ParlAI's long option)."""
    return '--' + key.replace('_', '-')


def format_value(value: Any) -> str:
    """An option value as ParlAI's parser reads it from the command line."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return ','.join(format_value(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Scale:
    """One size of a sweep: the shared options and the resources it needs."""

    name: str
    options: Dict[str, Any]
    slurm: Dict[str, Any]
    requires: Tuple[str, ...]
    vocab_size: Optional[int]
    description: str = ''


@dataclass
class Point:
    """One training run of a sweep at one scale, with every option resolved."""

    sweep: str
    scale: str
    name: str
    model: str
    configuration: str
    options: Dict[str, Any]
    run_dir: Path
    depends_on: Tuple[str, ...] = ()
    seed: int = 0
    description: str = ''
    paper_row: Dict[str, Any] = field(default_factory=dict)
    #: The sweep file's point name; differs from ``name`` only in a seeded copy (``NAME@seedK``).
    base: str = ''

    @property
    def point_name(self) -> str:
        return self.base or self.name

    @property
    def model_file(self) -> Path:
        return self.run_dir / 'model'

    @property
    def record_file(self) -> Path:
        return self.run_dir / 'record.json'

    def argv(self) -> List[str]:
        """The ``parlai train_model`` arguments of this point (model file included)."""
        args: List[str] = []
        # The agent and the task first, so the command reads like ParlAI's examples.
        first = [k for k in ('model', 'task') if k in self.options]
        for key in first + [k for k in self.options if k not in first]:
            value = self.options[key]
            if value is None:
                continue
            args += [option_flag(key), format_value(value)]
        return args + ['--model-file', str(self.model_file)]

    def command(self) -> str:
        """The equivalent shell command, for the record and for humans."""
        import shlex

        return 'parlai train_model ' + ' '.join(shlex.quote(a) for a in self.argv())


@dataclass
class Sweep:
    """A loaded, checked sweep file."""

    path: Path
    root: Path
    name: str
    title: str
    paper: str
    description: str
    seed: int
    metric: str
    scales: Dict[str, Scale]
    raw_points: List[Dict[str, Any]]
    figures: List[Dict[str, Any]] = field(default_factory=list)
    #: Seeds to train each point with (``seeds:``); empty: only ``seed``.
    seeds: Tuple[int, ...] = ()
    #: The paper's orderings to test: ``{better, worse, paper}`` each.
    orderings: List[Dict[str, str]] = field(default_factory=list)

    def where(self, suffix: str = '') -> str:
        try:
            shown = self.path.resolve().relative_to(self.root)
        except ValueError:
            shown = self.path
        return f'{shown}{": " + suffix if suffix else ""}'

    def scale(self, name: str) -> Scale:
        if name not in self.scales:
            raise SweepError(
                self.where('scales'), f"there is no scale {name!r} (it has {', '.join(self.scales)})",
                f"pick one of {', '.join(self.scales)} with --scale",
            )
        return self.scales[name]

    def default_runs_dir(self, scale: str) -> Path:
        """``<repo>/runs/sweeps/<sweep>/<scale>`` (``/runs/`` is git-ignored)."""
        return self.root / 'runs' / 'sweeps' / self.name / scale

    def missing_requirements(self, scale: str) -> List[Path]:
        """Data the scale needs (its ``requires``) that is not on this machine."""
        paths = []
        for required in self.scale(scale).requires:
            value = _substitute_env(required, os.environ, False, '')
            # An unset ${VAR} leaves the path unresolved, so it counts as absent.
            paths.append(Path(value) if '${' in value else self.resolve_path(value))
        return [p for p in paths if '${' in str(p) or not p.exists()]

    def resolve_path(self, value: str) -> Path:
        # Lexical, not Path.resolve(): a ../shared that is a symlink keeps its
        # written name (CI links ../shared beside a fresh clone).
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else Path(os.path.normpath(self.root / path))

    def points(
        self,
        scale: str,
        runs_dir: Optional[Path] = None,
        environ: Optional[Mapping[str, str]] = None,
        strict_env: bool = True,
    ) -> List[Point]:
        """Every point at ``scale``, in file order (a point's dependencies come first).

        ``strict_env=False`` leaves an unset ``${VAR}`` in place instead of
        failing (for ``check`` and ``params`` on a machine without the data).
        """
        scale_spec = self.scale(scale)
        runs_dir = Path(runs_dir) if runs_dir is not None else self.default_runs_dir(scale)
        environ = os.environ if environ is None else environ
        resolved: Dict[str, Point] = {}
        for index, raw in enumerate(self.raw_points):
            where = self.where(f"points[{index}] ({raw['name']})")
            if raw['only'] and scale not in raw['only']:
                continue
            for values in _grid_values(raw.get('grid') or {}, scale):
                point = self._resolve_point(raw, values, scale_spec, runs_dir, resolved, where)
                point.options = {
                    key: self._finish_value(value, resolved, environ, strict_env, f'{where}: option {key}')
                    for key, value in point.options.items()
                }
                if point.name in resolved:
                    raise SweepError(
                        where, f"two points are named {point.name!r}",
                        "give every point a unique name (with a grid, put {option} in the name)",
                    )
                resolved[point.name] = point
        return list(resolved.values())

    def _resolve_point(
        self, raw: Dict[str, Any], grid: Dict[str, Any], scale: Scale, runs_dir: Path,
        resolved: Dict[str, Point], where: str,
    ) -> Point:
        depends: List[str] = []
        parent_name = raw.get('init_from')
        if parent_name is not None:
            parent = _earlier(parent_name, resolved, where, 'init_from')
            options = {k: v for k, v in parent.options.items() if k not in INIT_OPTIONS}
            options['init_model'] = str(parent.model_file)
            options['dict_file'] = str(parent.model_file) + '.dict'
            depends.append(parent.name)
        else:
            options = copy.deepcopy(scale.options)
        options.update(copy.deepcopy(raw.get('options') or {}))
        options.update(copy.deepcopy((raw.get('scales') or {}).get(scale.name) or {}))
        options.update(grid)
        for value in options.values():
            if isinstance(value, dict):
                (kind, target), = value.items()
                _earlier(target, resolved, where, kind)
                if target not in depends:
                    depends.append(target)
        name = _fill(raw['name'], options, where, 'name')
        return Point(
            sweep=self.name,
            scale=scale.name,
            name=name,
            model=_fill(raw.get('model', raw['name']), options, where, 'model'),
            configuration=_fill(raw.get('configuration', ''), options, where, 'configuration'),
            options=options,
            run_dir=runs_dir / name,
            depends_on=tuple(depends),
            seed=self.seed,
            description=raw.get('description', ''),
            paper_row=dict(raw.get('paper_row') or {}),
        )

    def _finish_value(
        self, value: Any, resolved: Dict[str, Point], environ: Mapping[str, str], strict_env: bool, where: str,
    ) -> Any:
        if isinstance(value, dict):
            (kind, target), = value.items()
            return str(resolved[target].model_file) + REFERENCE_KEYS[kind]
        if not isinstance(value, str):
            return value
        value = _substitute_env(value, environ, strict_env, where)
        if value == '':
            return None  # ${VAR:-} with VAR unset: leave the option to ParlAI's default
        if value.startswith(('./', '../', '~/')):
            return str(self.resolve_path(value))
        return value


def _earlier(name: Any, resolved: Dict[str, Point], where: str, key: str) -> Point:
    if name not in resolved:
        raise SweepError(
            where, f"{key} names {name!r}, which is not a point defined above it",
            "name a point that comes earlier in the file (points run in file order)",
        )
    return resolved[name]


class _Template(dict):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def _fill(template: str, options: Dict[str, Any], where: str, what: str) -> str:
    shown = _Template({k: format_value(v) if not isinstance(v, dict) else '' for k, v in options.items()})
    try:
        return str(template).format_map(shown)
    except KeyError as err:
        raise SweepError(
            where, f"{what} {template!r} uses {{{err.args[0]}}}, which is not an option of the point",
            "use only option names (with underscores) inside braces",
        ) from None
    except (ValueError, IndexError) as err:
        raise SweepError(where, f"{what} {template!r} is not a valid template ({err})",
                         "write {option_name} placeholders, and {{ }} for braces") from None


def _substitute_env(value: str, environ: Mapping[str, str], strict: bool, where: str) -> str:
    def replace(match: 're.Match[str]') -> str:
        var, default = match.group(1), match.group(2)
        if var in environ:
            return environ[var]
        if default is not None:
            return default
        if strict:
            raise SweepError(where, f"uses ${{{var}}}, which is not set",
                             f"export {var}=... before running (or write ${{{var}:-default}})")
        return match.group(0)

    return _ENV.sub(replace, value)


def _grid_values(grid: Dict[str, Any], scale: str) -> List[Dict[str, Any]]:
    """The grid's combinations; a key's values may differ per scale ({paper: [...], local: [...]})."""
    keys = list(grid)
    values = [grid[k][scale] if isinstance(grid[k], dict) else grid[k] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


# --------------------------------------------------------------------------- loading


def load_sweep(path: os.PathLike) -> Sweep:
    """Read a sweep file and check its structure (options are checked by ``check``)."""
    path = Path(path)
    if not path.exists():
        raise SweepError(str(path), "no such sweep file", "pass a file such as sweeps/table1.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except yaml.YAMLError as err:
        raise SweepError(str(path), f"is not valid YAML ({str(err).splitlines()[0]})",
                         "fix the YAML syntax") from None
    root = find_root(path)
    stub = Sweep(path, root, path.stem, '', '', '', 0, 'ppl', {}, [])
    if not isinstance(data, dict):
        raise SweepError(stub.where(), "is not a mapping", "start the file with keys such as sweep:, scales:, points:")
    _only_keys(data, SWEEP_KEYS, stub.where())
    if data.get('extends'):
        data['scales'] = _extended_scales(path, data['extends'], data.get('scales') or {}, stub)
    for key in ('scales', 'points'):
        if not data.get(key):
            raise SweepError(stub.where(), f"has no {key}:", f"add a {key}: section")
    stub.name = str(data.get('sweep', path.stem))
    raw_scales = _mapping(data['scales'], stub.where('scales'))
    scales = {name: _load_scale(name, raw, stub) for name, raw in raw_scales.items()}
    points = _load_points(data['points'], scales, stub)
    names = {p['name'] for p in points}
    figures = [_load_figure(i, f, names, stub) for i, f in enumerate(data.get('figures') or [])]
    seed = data.get('seed', 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SweepError(stub.where('seed'), f"got {seed!r}", "give an integer seed")
    seeds = data.get('seeds') or []
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SweepError(stub.where('seeds'), f"got {seeds!r}", "give a list of integer seeds, e.g. seeds: [0, 1, 2]")
    orderings = [_load_ordering(i, o, points, stub) for i, o in enumerate(data.get('orderings') or [])]
    return Sweep(
        path=path, root=root, name=stub.name, title=str(data.get('title', stub.name)),
        paper=str(data.get('paper', '')), description=str(data.get('description', '')),
        seed=seed, metric=str(data.get('metric', 'ppl')), scales=scales, raw_points=points,
        figures=figures, seeds=tuple(seeds), orderings=orderings,
    )


def _load_ordering(index: int, raw: Any, points: List[Dict[str, Any]], sweep: Sweep) -> Dict[str, str]:
    where = sweep.where(f'orderings[{index}]')
    raw = dict(_mapping(raw, where))
    _only_keys(raw, ORDERING_KEYS, where)
    names = {str(p['name']) for p in points}
    templated = any('{' in n for n in names)  # grid names are only known once expanded
    for key in ('better', 'worse'):
        if key not in raw:
            raise SweepError(where, f"has no {key}:", "write {better: POINT, worse: POINT, paper: \"...\"}")
        if str(raw[key]) not in names and not templated:
            raise SweepError(where, f"{key} names {raw[key]!r}, which is not a point",
                             f"use one of {', '.join(sorted(names))}")
    return {'better': str(raw['better']), 'worse': str(raw['worse']), 'paper': str(raw.get('paper', ''))}


def seeded_points(points: Sequence[Point], seeds: Sequence[int]) -> List[Point]:
    """Each point once per seed, a point's seeds together (dependencies stay first).

    The copy with the sweep's own seed is the point itself (same name and run
    folder, so single-seed runs and records stay valid); another seed K runs in
    ``<run_dir>/seedK/`` as ``NAME@seedK``, and a dependency (``init_from``,
    ``model_file_of``) is the parent's run with the same seed.
    """
    if not seeds:
        return list(points)
    originals = {p.name: p for p in points}
    copies: Dict[Tuple[str, int], Point] = {}
    out: List[Point] = []
    for point in points:
        for seed in dict.fromkeys(seeds):  # ordered, without repeats
            copy_ = point if seed == point.seed else _seed_copy(point, seed, originals, copies)
            copies[(point.name, seed)] = copy_
            out.append(copy_)
    return out


def _seed_copy(point: Point, seed: int, originals: Dict[str, Point], copies: Dict[Tuple[str, int], Point]) -> Point:
    options = dict(point.options)
    depends = []
    for dep in point.depends_on:
        parent = copies[(dep, seed)]
        depends.append(parent.name)
        # Paths into the parent's run folder now point into its run with this seed.
        old, new = str(originals[dep].run_dir) + os.sep, str(parent.run_dir) + os.sep
        options = {k: new + v[len(old):] if isinstance(v, str) and v.startswith(old) else v
                   for k, v in options.items()}
    return dataclasses.replace(
        point, name=f'{point.name}{SEED_MARK}{seed}', base=point.name, seed=seed, options=options,
        run_dir=point.run_dir / f'seed{seed}', depends_on=tuple(depends),
    )


def _extended_scales(path: Path, base_name: Any, scales: Dict[str, Any], sweep: Sweep,
                     seen: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """``extends: settings/x.yaml``: that file's scales (itself possibly extending
    another), with this file's on top (options and slurm merged key by key), so
    shared settings are written once.

    ``extends: {paper: settings/x.yaml, local: settings/y.yaml}`` takes each
    scale from its own file (a local twin on other data than the paper's).
    """
    if isinstance(base_name, dict):
        merged: Dict[str, Any] = {}
        for scale, name in base_name.items():
            from_file = _extended_scales(path, str(name), {}, sweep, seen)
            if scale not in from_file:
                raise SweepError(sweep.where('extends'), f"{name} has no scale {scale!r}",
                                 f"use one of {', '.join(from_file)} or another file")
            merged[scale] = from_file[scale]
        return _merge_scales(merged, scales, sweep)
    base_path = (path.parent / base_name).resolve()
    where = sweep.where('extends')
    if not base_path.exists():
        raise SweepError(where, f"{base_name} does not exist next to {path.name}", "fix the file name")
    if base_path in seen:
        raise SweepError(where, f"{base_name} extends itself through a chain", "break the cycle")
    base = yaml.safe_load(base_path.read_text(encoding='utf-8')) or {}
    if set(base) - {'scales', 'description', 'extends'}:
        raise SweepError(where, f"{base_name} may hold only scales:, extends: and description:",
                         "move other keys into the sweep file")
    merged = _mapping(base.get('scales') or {}, f'{base_name}: scales')
    if base.get('extends'):
        merged = _extended_scales(base_path, str(base['extends']), merged, sweep, seen + (base_path,))
    return _merge_scales(merged, scales, sweep)


def _merge_scales(base: Dict[str, Any], scales: Dict[str, Any], sweep: Sweep) -> Dict[str, Any]:
    """``scales`` on top of ``base``: options and slurm merged key by key, descriptions joined."""
    merged = copy.deepcopy(base)
    for name, own in _mapping(scales, sweep.where('scales')).items():
        target = merged.setdefault(name, {})
        for key, value in _mapping(own or {}, sweep.where(f'scales.{name}')).items():
            if key in ('options', 'slurm') and isinstance(value, dict):
                target[key] = {**(target.get(key) or {}), **value}
            elif key == 'description' and target.get(key):
                target[key] = f"{str(target[key]).strip()} {str(value).strip()}"
            else:
                target[key] = value
    return merged


def _mapping(value: Any, where: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise SweepError(where, f"must be a mapping, got {type(value).__name__}", "write key: value lines")
    return value


def _only_keys(data: Dict[str, Any], allowed: set, where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SweepError(where, f"unknown key {unknown[0]!r}", f"use only {', '.join(sorted(allowed))}")


def _check_options(options: Any, where: str) -> Dict[str, Any]:
    options = _mapping(options or {}, where)
    out: Dict[str, Any] = {}
    for key, value in options.items():
        key = str(key)
        if key.startswith('-'):
            raise SweepError(where, f"option {key!r} is written as a flag",
                             "write the long option name without dashes, e.g. batchsize for -bs")
        dest = key.replace('-', '_')
        if dest in RUNNER_OPTIONS:
            raise SweepError(where, f"sets {dest}, which the runner chooses (the point's run folder)",
                             "remove it; use --runs-dir to choose where runs go")
        if isinstance(value, dict):
            if len(value) != 1 or next(iter(value)) not in REFERENCE_KEYS:
                raise SweepError(where, f"option {key} is a mapping",
                                 "give a value, or {model_file_of: POINT} / {dict_file_of: POINT}")
        out[dest] = value
    return out


def _load_scale(name: str, raw: Any, sweep: Sweep) -> Scale:
    where = sweep.where(f'scales.{name}')
    raw = _mapping(raw, where)
    _only_keys(raw, SCALE_KEYS, where)
    slurm = _mapping(raw.get('slurm') or {}, where + '.slurm')
    _only_keys(slurm, SLURM_KEYS, where + '.slurm')
    requires = raw.get('requires') or []
    if isinstance(requires, str):
        requires = [requires]
    return Scale(
        name=name, options=_check_options(raw.get('options'), where + '.options'), slurm=dict(slurm),
        requires=tuple(str(r) for r in requires), vocab_size=raw.get('vocab_size'),
        description=str(raw.get('description', '')),
    )


def _load_points(raw_points: Any, scales: Dict[str, Scale], sweep: Sweep) -> List[Dict[str, Any]]:
    if not isinstance(raw_points, list):
        raise SweepError(sweep.where('points'), "must be a list", "write one '- name: ...' entry per point")
    points = []
    for index, raw in enumerate(raw_points):
        where = sweep.where(f'points[{index}]')
        raw = dict(_mapping(raw, where))
        if 'name' not in raw:
            raise SweepError(where, "has no name", "give every point a name: (used for its run folder)")
        where = f"{where} ({raw['name']})"
        _only_keys(raw, POINT_KEYS, where)
        if not re.fullmatch(r'[A-Za-z0-9_.{}-]+', str(raw['name'])):
            raise SweepError(where, f"name {raw['name']!r} has characters unsafe in a folder name",
                             "use letters, digits, '_', '-' and '.'")
        raw['options'] = _check_options(raw.get('options'), where + '.options')
        paper_row = _mapping(raw.get('paper_row') or {}, where + '.paper_row')
        _only_keys(paper_row, PAPER_ROW_KEYS, where + '.paper_row')
        if paper_row and 'row' not in paper_row:
            raise SweepError(where + '.paper_row', "has no row",
                             "say which row of the paper it is, e.g. row: Table 1 row 5")
        per_scale = _mapping(raw.get('scales') or {}, where + '.scales')
        for scale_name in per_scale:
            if scale_name not in scales:
                raise SweepError(where + '.scales', f"names scale {scale_name!r}, which the sweep lacks",
                                 f"use {', '.join(scales)}")
        raw['scales'] = {s: _check_options(o, f'{where}.scales.{s}') for s, o in per_scale.items()}
        grid = _mapping(raw.get('grid') or {}, where + '.grid')
        for key, values in grid.items():
            per_scale = values if isinstance(values, dict) else {s: values for s in scales}
            if set(per_scale) != set(scales):
                raise SweepError(where + '.grid', f"{key} gives values for {', '.join(per_scale)}",
                                 f"give a list, or one list per scale ({', '.join(scales)})")
            if any(not isinstance(v, list) or not v for v in per_scale.values()):
                raise SweepError(where + '.grid', f"{key} must be a non-empty list of values",
                                 f"write {key}: [a, b, c]")
        raw['grid'] = {str(k).replace('-', '_'): v for k, v in grid.items()}
        only = raw.get('only') or []
        raw['only'] = [only] if isinstance(only, str) else list(only)
        for scale_name in raw['only']:
            if scale_name not in scales:
                raise SweepError(where + '.only', f"names scale {scale_name!r}, which the sweep lacks",
                                 f"use {', '.join(scales)}")
        points.append(raw)
    return points


def _load_figure(index: int, raw: Any, names: set, sweep: Sweep) -> Dict[str, Any]:
    where = sweep.where(f'figures[{index}]')
    raw = dict(_mapping(raw, where))
    _only_keys(raw, FIGURE_KEYS, where)
    if raw.get('kind') not in FIGURE_KINDS:
        raise SweepError(where, f"kind {raw.get('kind')!r} is unknown", f"use one of {', '.join(FIGURE_KINDS)}")
    if not str(raw.get('file', '')).endswith('.png'):
        raise SweepError(where, "has no file: NAME.png", "name the PNG it writes, e.g. file: figure2.png")
    if raw['kind'] == 'versus' and 'x' not in raw:
        raise SweepError(where, "a versus figure needs x: (the option on the x axis)",
                         "add e.g. x: num_experts")
    return raw


def select_points(points: Sequence[Point], names: Optional[Sequence[str]], where: str) -> List[Point]:
    """The points named on the command line (all when none), checked to exist."""
    if not names:
        return list(points)
    by_name = {p.name: p for p in points}
    unknown = [n for n in names if n not in by_name and not any(p.base == n for p in points)]
    if unknown:
        raise SweepError(where, f"has no point {unknown[0]!r}",
                         f"use one of {', '.join(dict.fromkeys(p.point_name for p in points))}")
    # A sweep point's name selects all its seeds; NAME@seedK only that one.
    return [p for n in names for p in points if p.name == n or p.base == n]
