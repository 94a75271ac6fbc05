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

Tracebacks on common mistakes, made one line naming the option and the fix
(``parlai_hash.errors.OptionError``):

| parlai.core.opt          | a cut-short or damaged ``.opt``: JSONDecodeError while | ``--model-file`` (or the option naming |
|                          | the arguments are parsed                                | the file): damaged; restore or retrain |
| parlai.core.agents       | ``-mf`` missing (eval_model, interactive, ...) or a     | ``--model-file``: missing / a folder,  |
|                          | folder: RuntimeError                                    | with the model files found near it     |
| parlai.scripts.multiprocessing_train | our agents without a dictionary: "Dictionaries | built in the main process before the  |
|                          | should be pre-built" from the workers                   | workers start, as train_model would    |
|                          |                                                         | (our agents' option checks run there)  |
| parlai.scripts.build_dict | the same inside ``distributed_train`` (our agents)     | ``--dict-file``: the build_dict command |

Before ParlAI is first imported, the hook also filters out the ``pkg_resources is
deprecated`` UserWarning that ``parlai.core.opt`` triggers in every process
(setuptools<81 is pinned on purpose): that message from ParlAI's modules only.

The fused-Adam entry is speed, not a breakage: with K experts a sparse model has K
times the FFN parameters, and on CPU the unfused Adam step over them cost as
much as the forward pass. It applies to every ParlAI agent (dense baselines
too), so comparisons stay fair; the update is the same algorithm.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Callable, Dict, List, Optional

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


# ------------------------------------------------ one-line errors instead of tracebacks

#: ParlAI's ``setuptools`` warning, printed by every command (and every worker):
#: setuptools<81 is pinned on purpose, since ParlAI needs ``pkg_resources``.
PKG_RESOURCES_WARNING = r'pkg_resources is deprecated as an API\.'


def silence_pkg_resources_warning() -> None:
    """Hide exactly ParlAI's ``pkg_resources is deprecated`` UserWarning.

    Called by the import hook just before ParlAI is first imported. The filter
    matches that message raised from a ``parlai.`` module, so the same warning
    caused by other code, and every other warning, still shows.
    """
    import warnings

    warnings.filterwarnings('ignore', message=PKG_RESOURCES_WARNING, category=UserWarning,
                            module=r'parlai\.')


def _option_error(option: str, problem: str, fix: str) -> Exception:
    # Imported here: compat loads with ParlAI modules, errors with it; the hook
    # makes an uncaught OptionError print as one line.
    from parlai_hash.errors import OptionError, install_excepthook

    install_excepthook()
    return OptionError(option, problem, fix)


#: ParlAI options that name a file whose ``.opt`` (suffix) ParlAI reads.
_OPT_FILE_OPTIONS = {
    ('-mf', '--model-file'): '.opt',
    ('-im', '--init-model'): '.opt',
    ('-o', '--init-opt'): '',
    ('-df', '--dict-file'): '.opt',
}


def _option_naming(path: str, argv: Optional[List[str]] = None) -> str:
    """The command-line option whose value (plus its suffix) is ``path``; else ``--model-file``."""
    argv = sys.argv if argv is None else argv
    target = os.path.abspath(path)
    for i, arg in enumerate(argv):
        for names, suffix in _OPT_FILE_OPTIONS.items():
            for name in names:
                if arg == name and i + 1 < len(argv):
                    value = argv[i + 1]
                elif arg.startswith(name + '='):
                    value = arg[len(name) + 1:]
                else:
                    continue
                if os.path.abspath(value + suffix) == target:
                    return names[-1]
    return '--model-file'


def _fix_damaged_opt_file(module: ModuleType) -> None:
    cls = module.Opt
    original = cls.__dict__['load'].__func__
    if getattr(original, _MARK, False):
        return
    import pickle

    def load(klass, optfile):
        try:
            return original(klass, optfile)
        except (ValueError, EOFError, pickle.UnpicklingError) as err:
            # ValueError covers json's JSONDecodeError: a file cut short by a
            # crash or a full disk while ParlAI wrote it.
            raise _option_error(
                _option_naming(optfile),
                f"{optfile} is cut short or damaged ({type(err).__name__}: {err})",
                "restore it from a copy, or train the model again (train_model writes the "
                ".opt file next to the model each time it saves)",
            ) from None

    load.__doc__ = original.__doc__
    setattr(load, _MARK, True)
    cls.load = classmethod(load)


def model_files_in(folder: str, limit: int = 3) -> List[str]:
    """Up to ``limit`` ParlAI model files in ``folder``: files with a ``.opt`` beside them."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    present = set(names)
    found = [os.path.join(folder, n) for n in names
             if n + '.opt' in present and not n.endswith('.dict')  # a dictionary has one too
             and os.path.isfile(os.path.join(folder, n))]
    return found[:limit]


def check_model_file(path: Optional[str], must_exist: bool) -> None:
    """Raise a one-line OptionError for a ``--model-file`` that is a folder, or
    missing when ``must_exist`` (evaluation, chat). Model-zoo names are left to ParlAI."""
    if not path or path.startswith(('zoo:', 'izoo:', 'models:')) or '://' in path:
        return  # unset, a model-zoo name or a URI: ParlAI resolves (and downloads) these
    if os.path.isdir(path):
        problem, where = f"{path} is a folder, not a model file", 'inside it'
        candidates = model_files_in(path)
    elif must_exist and not os.path.exists(path):
        problem, where = f"{path} does not exist", 'next to it'
        candidates = model_files_in(os.path.dirname(path) or '.')
    else:
        return
    if candidates:
        fix = f"pass a model file, e.g. the one{'s' if len(candidates) > 1 else ''} {where}: " + \
            ' or '.join(f'-mf {c}' for c in candidates)
    else:
        fix = "pass the file that train_model wrote with -mf (its .opt file sits beside it)"
    raise _option_error('--model-file', problem, fix)


def _fix_model_file_errors(module: ModuleType) -> None:
    original = module.create_agent
    if getattr(original, _MARK, False):
        return

    def create_agent(opt, requireModelExists=False):
        # ParlAI raises a RuntimeError for a missing file, and for a folder falls
        # through to "Need to set `model`" (or a load error): say what is wrong.
        check_model_file(opt.get('model_file'), must_exist=requireModelExists)
        return original(opt, requireModelExists)

    create_agent.__doc__ = original.__doc__
    setattr(create_agent, _MARK, True)
    module.create_agent = create_agent


def uses_our_agent(opt) -> bool:
    """Whether ``opt`` (``-m``, or the model file's ``.opt``) names one of our agents."""
    from parlai.core.params import get_model_name

    from parlai_hash._import_hook import ALIASES

    ours = {alias.rsplit('.', 1)[1] for alias in ALIASES if alias.startswith('parlai.agents.')}
    name = get_model_name(opt) or ''
    if name.startswith('parlai_hash.'):
        return True  # the full path, -m parlai_hash.agents....:Agent
    if name.startswith('parlai.agents.'):
        name = name[len('parlai.agents.'):]
    return name.split('/')[0].split(':')[0].split('.')[0] in ours


def build_dictionary_first(opt) -> None:
    """Build the dictionary the way ``TrainLoop`` would, in this process (no-op if built)."""
    if 'dict_file' not in opt:
        return
    if opt['dict_file'] is None and opt.get('model_file'):
        opt['dict_file'] = opt['model_file'] + '.dict'  # where TrainLoop will look for it
    from parlai.scripts.build_dict import build_dict

    build_dict(opt, skip_if_built=True)


def _fix_dictionary_before_workers(module: ModuleType) -> None:
    original = module.launch_and_train
    if getattr(original, _MARK, False):
        return

    def launch_and_train(opt, port=None):
        if uses_our_agent(opt):
            from parlai_hash.agents.option_checks import check_training_options
            from parlai_hash.errors import install_excepthook

            # A bad option stops here with one line, not once per worker.
            install_excepthook()
            check_training_options(opt)
            # Every worker's TrainLoop calls build_dict, which ParlAI refuses
            # inside distributed training; before the workers start it is allowed.
            build_dictionary_first(opt)
        return original(opt, port)

    launch_and_train.__doc__ = original.__doc__
    setattr(launch_and_train, _MARK, True)
    module.launch_and_train = launch_and_train


#: ParlAI's message when a distributed run lacks its dictionary.
NOT_PREBUILT = 'Dictionaries should be pre-built before distributed train.'


def _fix_dictionary_in_distributed(module: ModuleType) -> None:
    original = module.build_dict
    if getattr(original, _MARK, False):
        return

    def build_dict(opt, skip_if_built=False):
        try:
            return original(opt, skip_if_built)
        except ValueError as err:
            # Reached by distributed_train (multiprocessing_train builds first).
            if str(err) != NOT_PREBUILT or not uses_our_agent(opt):
                raise
            raise _option_error(
                '--dict-file',
                f"{opt['dict_file']} does not exist, and ParlAI builds no dictionary inside "
                "distributed training",
                f"build it first with the same task and --dict-* options: parlai build_dict "
                f"-t {opt.get('task')} --dict-file {opt['dict_file']}",
            ) from None

    build_dict.__doc__ = original.__doc__
    setattr(build_dict, _MARK, True)
    module.build_dict = build_dict


#: ParlAI module name -> the fix applied right after it is imported.
FIXES: Dict[str, Callable[[ModuleType], None]] = {
    'parlai.nn.lr_scheduler': _fix_reduce_on_plateau,
    'parlai.core.dict': _fix_txt2vec_ndarray,
    'parlai.core.torch_agent': _fix_fused_adam,
    'parlai.utils.distributed': _fix_distributed_on_cpu,
    'parlai.core.torch_generator_agent': _fix_ddp_device_ids,
    'parlai.utils.fsdp': _fix_join_device,
    'parlai.core.opt': _fix_damaged_opt_file,
    'parlai.core.agents': _fix_model_file_errors,
    'parlai.scripts.multiprocessing_train': _fix_dictionary_before_workers,
    'parlai.scripts.build_dict': _fix_dictionary_in_distributed,
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
