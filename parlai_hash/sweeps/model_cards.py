"""Model cards: fill the generated parts of ``model_cards/*.md`` from the sweeps.

A card is hand-written Markdown in the layout of ParlAI's ``generate_model_card``
(details, quick usage, intended use, limitations, datasets, evaluation, extra
analysis, related paper, hyperparameters). The parts that come from data sit
between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` and are
rewritten by ``python -m parlai_hash.sweeps cards model_cards/cards.yaml``:

* ``details`` — agent, architecture, experts, routing, data, dictionary, at
  the paper's size and the local twin's, parameter counts from ``sizing``;
* ``usage`` — the commands that train, evaluate and inspect the model;
* ``evaluation`` — the committed sweep result (the card's row among the others);
* ``expert_load`` — the expert-load plot of the committed run, with its numbers;
* ``hyperparameters`` — every option the sweep sets, at both scales.

``--check`` only says whether a card is out of date (the tests use it), so
cards cannot drift from the sweep files and the committed results.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from parlai_hash.io_utils import atomic_write
from parlai_hash.metrics import expert_load as load_summary
from parlai_hash.sweeps.errors import SweepError
from parlai_hash.sweeps.records import read_record
from parlai_hash.sweeps.report import human_count, to_markdown
from parlai_hash.sweeps.spec import SEED_MARK, Point, Sweep, format_value, load_sweep
from parlai_hash.sweeps.stats import mean_interval

BLOCKS = ('details', 'usage', 'evaluation', 'expert_load', 'hyperparameters')
_BLOCK = re.compile(r'(<!-- generated:(\w+) -->\n)(.*?)(<!-- /generated:\2 -->)', re.S)
#: Options shown in the details list, by what they say about the model.
_ARCHITECTURE = ('n_encoder_layers', 'n_decoder_layers', 'embedding_size', 'ffn_size', 'n_heads', 'variant',
                 'n_positions', 'learn_positional_embeddings')
_ROUTING = ('num_experts', 'hash_layers', 'layer_routing', 'hash_type', 'multihash', 'hash_per_layer',
            'experts_per_token', 'hash_gates', 'expert_ffn_size', 'shared_experts', 'shared_expert_size',
            'load_balance_weight', 'router_bias', 'capacity_factor', 'switch_input', 'base_auction_eps')
_DATA = ('task', 'wikitext_dir', 'wikitext_carve_from', 'wikitext_unit', 'wikitext_chunk_tokens', 'wikitext_context',
         'reddit_dump_dir', 'reddit_rules', 'dict_tokenizer', 'bpe_vocab')


@dataclass
class CardSpec:
    file: str
    point: str
    compare: List[str] = field(default_factory=list)
    related_sweeps: List[str] = field(default_factory=list)
    #: A model another sweep trains: its sweep file and committed results
    #: (relative to the cards file) instead of the file's own.
    sweep: Optional[str] = None
    results: Optional[str] = None


@dataclass
class CardsConfig:
    folder: Path
    sweep: Sweep
    results: Path
    cards: List[CardSpec]

    def for_card(self, spec: CardSpec) -> 'CardsConfig':
        """The sweep and results the card's model comes from."""
        if spec.sweep is None and spec.results is None:
            return self
        sweep = load_sweep(self.folder / spec.sweep) if spec.sweep else self.sweep
        results = (self.folder / spec.results).resolve() if spec.results else self.results
        return CardsConfig(self.folder, sweep, results, [spec])


def load_cards_config(path: Path) -> CardsConfig:
    data = yaml.safe_load(Path(path).read_text(encoding='utf-8'))
    folder = Path(path).resolve().parent
    try:
        cards = [CardSpec(**c) for c in data['cards']]
        return CardsConfig(folder, load_sweep(folder / data['sweep']), (folder / data['results']).resolve(), cards)
    except (KeyError, TypeError) as err:
        raise SweepError(str(path), f"is not a cards file ({err})",
                         "give sweep:, results: and cards: [{file, point, compare, related_sweeps, "
                         "and sweep:, results: for a model of another sweep}]") from None


def _result(config: CardsConfig, name: str) -> Optional[Dict[str, Any]]:
    return read_record(config.results / 'records' / f'{name}.json')


def _seed_results(config: CardsConfig, name: str) -> Dict[int, Dict[str, Any]]:
    """Every committed seed's record of a point (``records/NAME.json``, ``records/NAME@seedK.json``)."""
    paths = [config.results / 'records' / f'{name}.json',
             *sorted((config.results / 'records').glob(f'{name}{SEED_MARK}*.json'))]
    records = [r for r in map(read_record, paths) if r is not None]
    return {int(r.get('seed', 0)): r for r in records}


def _seed_cell(records: Dict[int, Dict[str, Any]], split: str) -> str:
    """``736.01 ± 90.64`` (mean ± half-width of a 95% t interval) over seeds; one seed: the value."""
    interval = mean_interval([float(r[split]['ppl']) for r in records.values()])
    if interval.n < 2:
        return f'{interval.mean:.2f}'
    return f'{interval.mean:.2f} ± {(interval.high - interval.low) / 2:.2f}'


def _options_line(options: Dict[str, Any], keys: tuple) -> str:
    shown = [f'`{k}` {format_value(options[k])}' for k in keys if options.get(k) is not None]
    return ', '.join(shown) if shown else '—'


def details_block(config: CardsConfig, paper: Point, local: Point, paper_params: Dict[str, int]) -> str:
    record = _result(config, local.name) or {}
    lines = [
        f"- Agent: `-m {paper.options['model']}` ({paper.model}, {paper.configuration} at paper scale)",
        f"- Paper scale: {_options_line(paper.options, _ARCHITECTURE)}; "
        f"{human_count(paper_params['params'])} parameters, "
        f"{human_count(paper_params['active_params'])} used per token",
        f"- Local twin: {_options_line(local.options, _ARCHITECTURE)}; "
        + (f"{human_count(record['params'])} parameters, {human_count(record['active_params'])} used per token"
           if record else 'not trained yet'),
        f"- Experts and routing (paper / local): {_options_line(paper.options, _ROUTING)} / "
        f"{_options_line(local.options, _ROUTING)}",
        f"- Sparse decoder layers (0-based, paper / local): {_sparse_layers(paper)} / {_sparse_layers(local)}",
        f"- Data and dictionary (paper): {_options_line(paper.options, _DATA)}",
        f"- Data and dictionary (local): {_options_line(_relative(local.options, config), _DATA)}",
        f"- Sweep: `{config.sweep.where()}`, point `{paper.name}`",
    ]
    return '\n'.join(lines) + '\n'


def _sparse_layers(point: Point) -> str:
    from parlai_hash.options import default_decoder_layer, n_decoder_layers

    if point.options.get('model') == 'transformer/generator':
        return 'none (dense)'
    opt = {'n_layers': point.options.get('n_layers', 2), 'n_decoder_layers': point.options.get('n_decoder_layers')}
    if point.options.get('layer_routing'):  # "hash:1,2;switch:4" -> "1,2 (hash); 4 (switch)"
        from parlai_hash.agents.mixed_generator.mixed_generator import parse_layer_routing

        by_router: Dict[str, List[int]] = {}
        for layer, router in parse_layer_routing(point.options['layer_routing'], n_decoder_layers(opt)).items():
            by_router.setdefault(router, []).append(layer)
        return '; '.join(f"{','.join(map(str, layers))} ({router})" for router, layers in by_router.items())
    layers = point.options.get('hash_layers')
    if layers is None:
        return f'{default_decoder_layer(n_decoder_layers(opt))} (the default, last but one)'
    return format_value(layers)


def _relative(options: Dict[str, Any], config: CardsConfig) -> Dict[str, Any]:
    """Paths under the repo's parent written relative to the repo, as in the sweep files."""
    root = config.sweep.root
    out = {}
    for key, value in options.items():
        if isinstance(value, str) and value.startswith(str(root.parent) + '/'):
            value = str(Path('..') / Path(value).relative_to(root.parent))
        out[key] = value
    return out


def usage_block(config: CardsConfig, local: Point) -> str:
    sweep = config.sweep.where()
    run_dir = f'runs/sweeps/{config.sweep.name}/local/{local.name}'
    return '\n'.join([
        '```bash',
        '# train the local twin (minutes on a CPU), then the table and figures',
        f'python -m parlai_hash.sweeps run {sweep} --local --points {local.name}',
        f'python -m parlai_hash.sweeps report {sweep}',
        '# the paper-scale model, one SLURM job (see sweeps/README.md)',
        f'python -m parlai_hash.sweeps run {sweep} --slurm --points {local.name}',
        '# use the trained model',
        f'parlai eval_model -mf {run_dir}/model -t {local.options.get("task")} ... --skip-generation true',
        f'parlai expert_load -mf {run_dir}/model -t {local.options.get("task")} ...',
        '```',
        '',
    ])


def evaluation_block(config: CardsConfig, local: Point, points: Dict[str, Point], spec: CardSpec) -> str:
    import pandas as pd

    record = _result(config, spec.point)
    if record is None:
        return (f'No committed result yet: run `python -m parlai_hash.sweeps run {config.sweep.where()} --local '
                f'--points {spec.point}`.\n')
    rows = []
    # Every row over the card's model's seeds: a seed shifts all models together,
    # so rows averaged over different seeds would not compare.
    seeds = set(_seed_results(config, spec.point))
    for name in [spec.point, *spec.compare]:
        records = {seed: r for seed, r in _seed_results(config, name).items() if seed in seeds}
        if not records:
            continue
        label = f'**{points[name].model}**' if name == spec.point else points[name].model
        rows.append({'Model': label, 'Configuration': points[name].configuration,
                     'Params': human_count(next(iter(records.values()))['params']),
                     'Valid PPL': _seed_cell(records, 'valid'), 'Test PPL': _seed_cell(records, 'test')})
    results_dir = config.results.relative_to(config.sweep.root)
    if len(seeds) > 1:
        which = (f"seeds {', '.join(map(str, sorted(seeds)))}, mean ± half-width of a 95% Student t interval over "
                 f"seeds")
    else:
        which = f"seed {record['seed']}"
    return (
        f"Local twin on {record['options'].get('task')}, {record['train_steps']} steps, {which} "
        f"(from `{results_dir}`; ParlAI's `ppl` per dictionary token, on the carved splits — not comparable "
        f"with published WikiText-103 numbers; which differences are resolved: its README):\n\n"
        f"{to_markdown(pd.DataFrame(rows))}\n"
        f"At paper scale: not run here (no GPU cluster); `python -m parlai_hash.sweeps run {config.sweep.where()} "
        f"--slurm` trains it.\n"
    )


def expert_load_block(config: CardsConfig, local: Point, spec: CardSpec, images: Path) -> str:
    """The committed run's tokens per expert, as a PNG in ``images`` (linked as
    ``images/<card>_expert_load.png``), with its summary."""
    from parlai_hash.sweeps.expert_load import ExpertLoad
    from parlai_hash.sweeps.plots import plot_expert_load

    csv = config.results / 'expert_load' / f'{spec.point}.csv'
    if not csv.exists():
        return 'Dense: every token uses the one FFN of each layer, so there is no expert load to show.\n' \
            if local.options.get('model') == 'transformer/generator' else 'No committed expert-load measurement yet.\n'
    load = ExpertLoad.read_csv(csv)
    image = images / f'{Path(spec.file).stem}_expert_load.png'
    plot_expert_load({f'{local.model} {local.configuration} {layer}': c for layer, c in load.layers.items()},
                     image, title=f'Expert load: {local.model} {local.configuration}',
                     subtitle='local twin, validation split (teacher forcing)')
    lines = [f'![expert load](images/{image.name})', '']
    for layer, counts in load.layers.items():
        stats = load_summary(counts)
        lines.append(f"- `{layer}`: {sum(counts):,} tokens over {len(counts)} experts; the busiest gets "
                     f"{stats['max']:.2f}x the mean, entropy {stats['entropy']:.3f} of the maximum, "
                     f"{int(stats['unused'])} experts unused.")
    return '\n'.join(lines) + '\n'


def hyperparameters_block(paper: Point, local: Point, config: CardsConfig) -> str:
    local_options = _relative(local.options, config)
    keys = list(dict.fromkeys([*paper.options, *local_options]))
    rows = [f'| `{k}` | {format_value(paper.options.get(k, "—"))} | {format_value(local_options.get(k, "—"))} |'
            for k in keys if k != 'model']
    return '\n'.join(['<details>', '<summary>every option the sweep sets (paper / local)</summary>', '',
                      '| option | paper | local |', '|---|---|---|', *rows, '', '</details>', ''])


def fill_blocks(text: str, blocks: Dict[str, str], where: str) -> str:
    found = {m.group(2) for m in _BLOCK.finditer(text)}
    missing = [b for b in blocks if b not in found]
    if missing:
        raise SweepError(where, f"has no <!-- generated:{missing[0]} --> block",
                         f"add <!-- generated:{missing[0]} --> and <!-- /generated:{missing[0]} --> lines")
    return _BLOCK.sub(lambda m: m.group(1) + blocks.get(m.group(2), m.group(3)) + m.group(4), text)


def update_cards(config_path: Path, check: bool = False) -> List[Path]:
    """Rewrite the generated blocks; return the cards that changed (or would)."""
    from parlai_hash.sweeps.sizing import count_point_parameters

    cards_config = load_cards_config(config_path)
    env_free = dict(strict_env=False)
    images = cards_config.folder / 'images'
    changed = []
    with tempfile.TemporaryDirectory(prefix='cards-check-') as scratch:
        for spec in cards_config.cards:
            config = cards_config.for_card(spec)
            paper_points = {p.name: p for p in config.sweep.points('paper', **env_free)}
            local_points = {p.name: p for p in config.sweep.points('local', **env_free)}
            path = config.folder / spec.file
            paper, local = paper_points[spec.point], local_points[spec.point]
            paper_params = count_point_parameters([paper], config.sweep.scale('paper').vocab_size)
            # --check draws the plot elsewhere: it must not touch the committed files.
            blocks = {
                'details': details_block(config, paper, local, paper_params[spec.point]),
                'usage': usage_block(config, local),
                'evaluation': evaluation_block(config, local, local_points, spec),
                'expert_load': expert_load_block(config, local, spec, Path(scratch) if check else images),
                'hyperparameters': hyperparameters_block(paper, local, config),
            }
            text = path.read_text(encoding='utf-8')
            new = fill_blocks(text, blocks, str(path))
            if new != text:
                changed.append(path)
                if not check:
                    with atomic_write(path) as f:
                        f.write(new)
    return changed
