"""ParlAI 1.7.2 on PyTorch 2.x: the smallest fixes, each applied when its module loads.

ParlAI's last release predates torch 2.7 and numpy 1.24. Each fix below is tied
to the ParlAI module it repairs and runs right after that module is imported
(``parlai_hash._import_hook`` calls ``patch_module``) or, when the hook is not
installed, when our agents are imported (``apply_loaded``). Each is idempotent.

| ParlAI module            | breakage                                              | fix |
| parlai.nn.lr_scheduler   | ReduceLROnPlateau(verbose=True): torch >= 2.7 removed | build it without ``verbose`` |
| parlai.core.dict         | ``np.int`` (removed in numpy 1.24) in txt2vec(ndarray) | vectorise as a list, then int64 array |
| parlai.core.torch_agent  | ``--optimizer adam/adamw`` use torch's per-tensor loop; | the same optimizer with ``fused=True`` |
|                          | torch >= 2.4 has a fused kernel, ~5x faster on CPU      | where torch supports it, else as before |

The last one is speed, not a breakage: with K experts a sparse model has K
times the FFN parameters, and on CPU the unfused Adam step over them cost as
much as the forward pass. It applies to every ParlAI agent (dense baselines
too), so comparisons stay fair; the update is the same algorithm.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Callable, Dict

_MARK = '_parlai_hash_compat'


def _fix_reduce_on_plateau(module: ModuleType) -> None:
    cls = module.ReduceOnPlateauLRScheduler
    if getattr(cls.__init__, _MARK, False):
        return
    from torch import optim

    def __init__(self, optimizer, patience, decay, warmup_updates, warmup_rate):
        module.ParlAILRScheduler.__init__(self, warmup_updates, warmup_rate)
        self.scheduler = optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, 'min', factor=decay, patience=patience
        )

    setattr(__init__, _MARK, True)
    cls.__init__ = __init__


def _fix_txt2vec_ndarray(module: ModuleType) -> None:
    cls = module.DictionaryAgent
    original = cls.txt2vec
    if getattr(original, _MARK, False):
        return
    import numpy as np

    def txt2vec(self, text, vec_type=list):
        if vec_type is np.ndarray:
            return np.asarray(original(self, text, list), dtype=np.int64)
        return original(self, text, vec_type)

    txt2vec.__doc__ = original.__doc__
    setattr(txt2vec, _MARK, True)
    cls.txt2vec = txt2vec


def fused_when_possible(optimizer_class):
    """A constructor that asks for the fused kernel and falls back when refused."""

    def build(params, **kwargs):
        params = list(params)
        try:
            return optimizer_class(params, fused=True, **kwargs)
        except (RuntimeError, ValueError, TypeError):
            # e.g. parameters on several devices, or a dtype the kernel lacks
            return optimizer_class(params, **kwargs)

    build.__name__ = optimizer_class.__name__
    build.__doc__ = optimizer_class.__doc__
    return build


def _fix_fused_adam(module: ModuleType) -> None:
    cls = module.TorchAgent
    original = cls.__dict__['optim_opts'].__func__
    if getattr(original, _MARK, False):
        return
    from torch import optim

    def optim_opts(klass):
        optims = original(klass)
        optims['adam'] = fused_when_possible(optim.Adam)
        optims['adamw'] = fused_when_possible(optim.AdamW)
        return optims

    optim_opts.__doc__ = original.__doc__
    setattr(optim_opts, _MARK, True)
    cls.optim_opts = classmethod(optim_opts)


#: ParlAI module name -> the fix applied right after it is imported.
FIXES: Dict[str, Callable[[ModuleType], None]] = {
    'parlai.nn.lr_scheduler': _fix_reduce_on_plateau,
    'parlai.core.dict': _fix_txt2vec_ndarray,
    'parlai.core.torch_agent': _fix_fused_adam,
}


def patch_module(name: str, module: ModuleType) -> None:
    """Apply the fix for ``name`` (if any) to the freshly imported module."""
    fix = FIXES.get(name)
    if fix is not None:
        fix(module)


def apply_loaded() -> None:
    """Apply every fix whose ParlAI module is already imported."""
    for name in FIXES:
        module = sys.modules.get(name)
        if module is not None:
            patch_module(name, module)
