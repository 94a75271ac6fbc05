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

CPU multiprocessing (``multiprocessing_train`` with gloo), when CUDA is absent:

| parlai.utils.distributed | ``rank % torch.cuda.device_count()`` (ZeroDivision), | a gloo/CPU ``distributed_context`` |
|                          | ``nccl``, ``torch.cuda.init()``                         | (gpu = -1); CUDA machines unchanged |
|                          | ``all_gather_list`` builds ``.cuda()`` buffers          | ``all_gather_object`` under gloo    |
| parlai.core.torch_generator_agent | DDP(device_ids=[opt['gpu']]) = [-1] on CPU     | ``[-1]`` with CPU parameters -> ``None`` |
| parlai.utils.fsdp        | Join's ``join_device`` is the int -1                    | ``torch.device('cpu')`` for -1      |

The fused-Adam entry is speed, not a breakage: with K experts a sparse model has K
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


def _fix_distributed_on_cpu(module: ModuleType) -> None:
    if getattr(module.distributed_context, _MARK, False):
        return
    import contextlib
    import copy

    import torch
    import torch.distributed as dist

    original_context = module.distributed_context
    original_gather = module.all_gather_list

    @contextlib.contextmanager
    def cpu_distributed_context(rank, opt, rank_offset=0, gpu=None, init_method="tcp://localhost:61337"):
        # ParlAI's context, minus its CUDA steps: gloo, gpu = -1.
        opt = copy.deepcopy(opt)
        rank = rank + rank_offset
        opt['rank'] = rank
        opt['gpu'] = -1
        opt.setdefault('override', {})['gpu'] = -1
        prefix = 'rank:{:3d} |'.format(rank) if opt.get('verbose') or rank != 0 else None
        with module.override_print(not opt.get('verbose') and rank != 0, prefix):
            dist.init_process_group(
                backend='gloo', init_method=init_method,
                world_size=opt['distributed_world_size'], rank=rank,
            )
            module.logging.info("Distributed group initialized (gloo, CPU)")
            torch.manual_seed(42)
            module.sync_object(None)
            try:
                yield opt
            finally:
                # Let every rank finish its collectives and drop work objects
                # before teardown: gloo threads still holding them at exit abort
                # the process (seen about once in ten runs without this).
                try:
                    dist.barrier()
                except RuntimeError:
                    pass  # a peer already failed; tear down anyway
                import gc

                gc.collect()
                dist.destroy_process_group()

    def distributed_context(rank, opt, rank_offset=0, gpu=None, init_method="tcp://localhost:61337"):
        if torch.cuda.is_available():
            return original_context(rank, opt, rank_offset, gpu, init_method)
        return cpu_distributed_context(rank, opt, rank_offset, gpu, init_method)

    def all_gather_list(data):
        if module.is_distributed() and dist.get_backend() == 'gloo':
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, data)
            return gathered
        return original_gather(data)

    for fn in (distributed_context, all_gather_list):
        setattr(fn, _MARK, True)
    distributed_context.__doc__ = original_context.__doc__
    all_gather_list.__doc__ = original_gather.__doc__
    module.distributed_context = distributed_context
    module.all_gather_list = all_gather_list


def _fix_ddp_device_ids(module: ModuleType) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    original = DDP.__init__
    if getattr(original, _MARK, False):
        return

    def __init__(self, module_, device_ids=None, *args, **kwargs):
        # ParlAI passes [opt['gpu']] = [-1] for a CPU model; DDP wants None there.
        if device_ids is not None and list(device_ids) == [-1]:
            device_ids = None
        original(self, module_, device_ids, *args, **kwargs)

    setattr(__init__, _MARK, True)
    DDP.__init__ = __init__


def _fix_join_device(module: ModuleType) -> None:
    import torch

    for cls_name in ('JoinableTrainLoop', 'JoinableEvaluator'):
        cls = getattr(module, cls_name, None)
        if cls is None or getattr(cls.join_device.fget, _MARK, False):
            continue
        original = cls.join_device.fget

        def join_device(self, _original=original):
            device = _original(self)
            return torch.device('cpu') if device is None or device == -1 else device

        setattr(join_device, _MARK, True)
        cls.join_device = property(join_device)


#: ParlAI module name -> the fix applied right after it is imported.
FIXES: Dict[str, Callable[[ModuleType], None]] = {
    'parlai.nn.lr_scheduler': _fix_reduce_on_plateau,
    'parlai.core.dict': _fix_txt2vec_ndarray,
    'parlai.core.torch_agent': _fix_fused_adam,
    'parlai.utils.distributed': _fix_distributed_on_cpu,
    'parlai.core.torch_generator_agent': _fix_ddp_device_ids,
    'parlai.utils.fsdp': _fix_join_device,
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
