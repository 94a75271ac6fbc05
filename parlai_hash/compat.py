"""ParlAI 1.7.2 on PyTorch 2.x: the smallest fixes, each applied when its module loads.

ParlAI's last release predates torch 2.7 and numpy 1.24. Each fix below is tied
to the ParlAI module it repairs and runs right after that module is imported
(``parlai_hash._import_hook`` calls ``patch_module``) or, when the hook is not
installed, when our agents are imported (``apply_loaded``). Each is idempotent.

| ParlAI module            | breakage                                              | fix |
| parlai.nn.lr_scheduler   | ReduceLROnPlateau(verbose=True): torch >= 2.7 removed | build it without ``verbose`` |
| parlai.core.dict         | ``np.int`` (removed in numpy 1.24) in txt2vec(ndarray) | vectorise as a list, then int64 array |
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


#: ParlAI module name -> the fix applied right after it is imported.
FIXES: Dict[str, Callable[[ModuleType], None]] = {
    'parlai.nn.lr_scheduler': _fix_reduce_on_plateau,
    'parlai.core.dict': _fix_txt2vec_ndarray,
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
