"""parlai_hash.compat: each fix repairs its ParlAI module on torch 2.x, idempotently."""

import subprocess
import sys

import numpy as np
import torch

from parlai_hash import compat


def test_reduce_on_plateau_scheduler_builds_on_this_torch():
    from parlai.nn.lr_scheduler import ReduceOnPlateauLRScheduler
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = ReduceOnPlateauLRScheduler(opt, patience=2, decay=0.5, warmup_updates=-1, warmup_rate=1e-4)
    assert isinstance(sched.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert sched.scheduler.patience == 2 and sched.scheduler.factor == 0.5


def test_txt2vec_ndarray_without_np_int():
    from parlai.core.dict import DictionaryAgent
    from parlai.core.params import ParlaiParser
    d = DictionaryAgent(ParlaiParser(True, False).parse_args([]))
    d.add_to_dict(['hello', 'world'])
    vec = d.txt2vec('hello world', vec_type=np.ndarray)
    assert vec.dtype == np.int64 and vec.tolist() == [d['hello'], d['world']]
    assert d.txt2vec('hello world') == vec.tolist()


def test_fixes_are_idempotent():
    import parlai.core.dict as dict_module
    before = dict_module.DictionaryAgent.txt2vec
    compat.apply_loaded()
    compat.apply_loaded()
    assert dict_module.DictionaryAgent.txt2vec is before


def test_fix_applies_on_plain_import_of_the_parlai_module():
    # Without our agents imported at all, importing ParlAI's module is enough.
    code = ("import torch; from parlai.nn.lr_scheduler import ReduceOnPlateauLRScheduler as R;"
            "o=torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=.1);"
            "R(o, 1, .5, -1, 1e-4); import sys; print('parlai_hash.agents' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'


def test_hook_and_compat_agree_on_patched_modules():
    from parlai_hash._import_hook import AFTER_IMPORT
    hooked = {name for name, target in AFTER_IMPORT.items() if target.startswith('parlai_hash.compat:')}
    assert hooked == set(compat.FIXES)


def test_adam_is_fused_when_possible_and_computes_the_same_update():
    from parlai.core.torch_agent import TorchAgent
    build = TorchAgent.optim_opts()['adam']
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, 3))
    b = torch.nn.Parameter(a.detach().clone())
    fused = build([a], lr=0.1, amsgrad=True)
    plain = torch.optim.Adam([b], lr=0.1, amsgrad=True)
    assert fused.defaults['fused'] is True
    for _ in range(3):
        g = torch.randn(5, 3)
        a.grad, b.grad = g.clone(), g.clone()
        fused.step(), plain.step()
    torch.testing.assert_close(a, b)
    assert TorchAgent.optim_opts()['adamw']([torch.nn.Parameter(torch.zeros(2))], lr=1).defaults['fused']


def test_fused_falls_back_when_torch_refuses(monkeypatch):
    calls = []

    class Picky(torch.optim.SGD):
        def __init__(self, params, fused=None, **kw):
            calls.append(fused)
            if fused:
                raise RuntimeError("fused not supported here")
            super().__init__(params, **kw)

    opt = compat.fused_when_possible(Picky)([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert isinstance(opt, Picky) and calls == [True, None]


def test_ddp_accepts_parlais_cpu_device_ids(tmp_path):
    import parlai.core.torch_generator_agent  # noqa: F401  (applies the fix)
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/rdv', rank=0, world_size=1)
    try:
        wrapped = DDP(torch.nn.Linear(2, 2), device_ids=[-1], broadcast_buffers=False)
        assert wrapped.device_ids is None
    finally:
        dist.destroy_process_group()


def test_join_device_is_cpu_for_gpu_minus_one():
    from parlai.utils.fsdp import JoinableTrainLoop
    loop = JoinableTrainLoop.__new__(JoinableTrainLoop)
    loop._JoinableTrainLoop__device = -1
    assert loop.join_device == torch.device('cpu')
