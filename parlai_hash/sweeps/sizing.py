"""Parameter counts of a sweep's points without training (or memory) — ``params``.

The paper compares models at equal parameter count (Table 1's wider/deeper
baselines) or equal compute per token. To check a sweep file before spending
GPU time, each point's model is built with the real code — ParlAI's agent and
ours — but every large tensor is allocated on PyTorch's ``meta`` device (shape
only, no storage), so a 1.3B-parameter model is counted in a second on a
laptop. Only floating-point tensors of two or more
dimensions go to meta: token counts and routing tables stay real. The
dictionary is a stand-in with the scale's ``vocab_size`` tokens: only its size
matters for the count.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import torch
from torch.overrides import TorchFunctionMode

from parlai_hash.sweeps.spec import Point, format_value, option_flag
from parlai_hash.sweeps.worker import count_parameters

#: Tensors with at least this many elements are built on the meta device.
META_THRESHOLD = 1 << 18
_FACTORIES = (torch.empty, torch.zeros, torch.ones, torch.randn, torch.rand)
#: Options that only matter for training or need files; never the parameter count.
_SIZING_DROP = {'init_model', 'dict_file', 'model_file', 'hash_predictor_model_file', 'hash_cluster_model_file',
                'freeze', 'dict_tokenizer', 'bpe_vocab', 'bpe_merge', 'dict_lower', 'dict_maxtokens', 'dict_minfreq',
                'dict_class'}


class _LargeTensorsOnMeta(TorchFunctionMode):
    """Weight-like tensors (floating point, 2-D or more, large) go to the meta device;
    vectors such as token counts and integer routing tables stay real."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        # A draw from an explicit generator builds a routing table, not a weight.
        if func in _FACTORIES and kwargs.get('device') is None and kwargs.get('generator') is None:
            shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args
            dtype = kwargs.get('dtype') or torch.get_default_dtype()
            numel = 1
            for size in shape:
                numel *= int(size)
            if len(shape) >= 2 and dtype.is_floating_point and numel >= META_THRESHOLD:
                kwargs['device'] = 'meta'
        return func(*args, **kwargs)


def write_stand_in_dict(path: Path, vocab_size: int) -> Path:
    """A ParlAI dictionary file with ``vocab_size`` entries (specials included) and
    distinct counts, so frequency-balanced hashing has counts to sort."""
    from parlai.core.dict import DictionaryAgent

    specials = [DictionaryAgent.default_null, DictionaryAgent.default_start,
                DictionaryAgent.default_end, DictionaryAgent.default_unk]
    with open(path, 'w', encoding='utf-8') as f:
        for i, token in enumerate(specials):
            f.write(f'{token}\t{1_000_000_000 - i}\n')
        for i in range(vocab_size - len(specials)):
            f.write(f'w{i}\t{vocab_size - i}\n')
    return path


def sizing_argv(point: Point, dict_file: Path) -> List[str]:
    """The point's arguments with what only training needs taken out."""
    args: List[str] = []
    for key, value in point.options.items():
        if value is None or key in _SIZING_DROP:
            continue
        if key == 'hash_type' and value in ('predicted', 'clustered', 'dispersed'):
            value = 'random'  # same parameters; those types need a trained baseline to build
        if key == 'optimizer':
            value = 'sgd'  # fused optimizers refuse meta tensors; no optimizer state is counted
        args += [option_flag(key), format_value(value)]
    return args + ['--dict-file', str(dict_file), '--optimizer', 'sgd']


@contextmanager
def _quiet_parlai() -> Iterator[None]:
    import logging

    from parlai.utils import logging as parlai_logging

    level = parlai_logging.logger.level
    parlai_logging.logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        parlai_logging.logger.setLevel(level)


def count_point_parameters(points: Sequence[Point], vocab_size: int) -> Dict[str, Dict[str, int]]:
    """``point name -> {'params', 'active_params', 'expert_params', ...}`` for each point."""
    from parlai.core.agents import create_agent
    from parlai.scripts.train_model import setup_args

    counts: Dict[str, Dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp, _quiet_parlai():
        dict_file = write_stand_in_dict(Path(tmp) / 'stand_in.dict', vocab_size)
        for point in points:
            opt = setup_args().parse_args(sizing_argv(point, dict_file))
            with _LargeTensorsOnMeta():
                agent: Any = create_agent(opt)
            counts[point.name] = count_parameters(agent.model, opt)
            del agent
    return counts
