"""How many tokens each expert of a trained model receives on a task.

Runs the model over a split in evaluation mode with teacher forcing (no
generation, so ``oracle`` models work too) and sums, for every sparse layer,
the token counts per expert that the layers record (``SparseFFN.load``, taken
after every forward of the model: real tokens only, every hash of a
MultiHash). Works
for hash, Switch and BASE models alike. Used by ``parlai expert_load`` and by
the sweeps' ``expert_load`` figures (the paper's Figure 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from parlai_hash.errors import OptionError
from parlai_hash.io_utils import atomic_write
from parlai_hash.metrics import expert_load as load_summary


@dataclass
class ExpertLoad:
    """Tokens per expert for every sparse layer of one model on one split."""

    model_file: str
    task: str
    datatype: str
    examples: int
    layers: Dict[str, List[int]]

    def frame(self) -> pd.DataFrame:
        """One row per (layer, expert): tokens, share of the layer's tokens, load vs mean."""
        rows = []
        for layer, counts in self.layers.items():
            total = float(sum(counts)) or 1.0
            mean = total / len(counts)
            for expert, tokens in enumerate(counts):
                rows.append({'layer': layer, 'expert': expert, 'tokens': int(tokens),
                             'share': tokens / total, 'load_vs_mean': tokens / mean})
        return pd.DataFrame(rows, columns=['layer', 'expert', 'tokens', 'share', 'load_vs_mean'])

    def summary(self) -> Dict[str, Dict[str, float]]:
        """Per layer: ``max`` (busiest / mean), ``entropy`` (/ log K), ``unused`` experts."""
        return {layer: load_summary(counts) for layer, counts in self.layers.items()}

    def write_csv(self, path: Path) -> Path:
        with atomic_write(path) as f:
            self.frame().to_csv(f, index=False)
        return path

    @classmethod
    def read_csv(cls, path: Path, model_file: str = '', task: str = '', datatype: str = '') -> 'ExpertLoad':
        frame = pd.read_csv(path)
        layers = {
            str(layer): [int(t) for t in group.sort_values('expert')['tokens']]
            for layer, group in frame.groupby('layer', sort=False)
        }
        return cls(model_file=model_file, task=task, datatype=datatype, examples=-1, layers=layers)


def _eval_datatype(datatype: str) -> str:
    # A train split must not train: ParlAI's evalmode reads it without updates.
    parts = datatype.split(':')
    if parts[0] == 'train' and 'evalmode' not in parts:
        parts.append('evalmode')
    return ':'.join(parts)


def measure_expert_load(opt: Any, max_examples: int = -1) -> ExpertLoad:
    """Tokens per expert of the model ``opt['model_file']`` on ``opt['task']``.

    ``opt`` is a parsed ParlAI opt (``parlai eval_model``'s options, or a
    sweep point's training options).
    """
    from parlai.core.agents import create_agent
    from parlai.core.worlds import create_task

    from parlai_hash.layers import SparseFFN, take_loads

    model_file = opt.get('model_file')
    if not model_file or not Path(model_file).exists():
        raise OptionError('--model-file', f"no model at {model_file!r}", "pass a trained model with -mf")
    opt['datatype'] = _eval_datatype(opt.get('datatype', 'valid'))
    opt['skip_generation'] = True  # teacher forcing: every label token is routed once
    agent = create_agent(opt, requireModelExists=True)
    model = getattr(agent.model, 'module', agent.model)
    ffns = {m.name: m for m in model.modules() if isinstance(m, SparseFFN)}
    if not ffns:
        raise OptionError('--model-file', f"{model_file} has no sparse layer (a dense model)",
                          "pass a hash_generator, switch_generator or base_generator model")
    totals: Dict[str, List[int]] = {name: [0] * ffn.num_experts for name, ffn in ffns.items()}

    def add_loads(module: Any, inputs: Sequence[Any], output: Any) -> None:
        # After each whole forward, before the agent's own metrics take the counts.
        for name, load in take_loads(ffns).items():
            for i, c in enumerate(load.tolist()):
                totals[name][i] += int(c)

    take_loads(ffns)  # nothing counted before the first batch belongs to the measurement
    hooks = [model.register_forward_hook(add_loads)]
    try:
        world = create_task(opt, agent)
        seen, limit = 0, max_examples if max_examples and max_examples > 0 else float('inf')
        while not world.epoch_done() and seen < limit:
            world.parley()
            seen += opt.get('batchsize', 1)
        exs = world.report().get('exs', seen)
        examples = int(exs.value() if hasattr(exs, 'value') else exs)
    finally:
        for hook in hooks:
            hook.remove()
    ordered = {name: totals[name] for name in sorted(totals, key=_layer_order)}
    return ExpertLoad(model_file=str(model_file), task=str(opt.get('task')), datatype=opt['datatype'],
                      examples=examples, layers=ordered)


def _layer_order(name: str) -> tuple:
    # enc before dec, then by index: "enc1" < "dec0" < "dec7" < "dec10"
    prefix = name.rstrip('0123456789')
    return (prefix != 'enc', prefix, int(name[len(prefix):] or 0))


def default_name(model_file: str) -> str:
    """A name for the output files: the model file's name, or its folder's when it is
    the generic ``model`` (sweep runs keep ``<point>/model``)."""
    path = Path(model_file)
    return path.parent.name if path.name == 'model' and path.parent.name else path.name


def write_expert_load(load: ExpertLoad, outdir: Path, name: Optional[str] = None) -> Dict[str, Path]:
    """Write ``expert_load_<name>.csv`` and ``.png`` into ``outdir``."""
    from parlai_hash.sweeps.plots import plot_expert_load

    name = name or default_name(load.model_file)
    outdir.mkdir(parents=True, exist_ok=True)
    csv = load.write_csv(outdir / f'expert_load_{name}.csv')
    label = {layer: f'{name} {layer}' for layer in load.layers}
    png = plot_expert_load(
        {label[layer]: counts for layer, counts in load.layers.items()},
        outdir / f'expert_load_{name}.png',
        title=f'Expert load: {name}',
        subtitle=f'{load.task} ({load.datatype}), {load.examples} examples',
    )
    return {'csv': csv, 'png': png}
