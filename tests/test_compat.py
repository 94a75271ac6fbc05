"""parlai_hash.compat: each fix repairs its ParlAI module on torch 2.x, idempotently."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import leave_process_group

from parlai_hash import compat
from parlai_hash.errors import OptionError


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
        leave_process_group()


def test_join_device_is_cpu_for_gpu_minus_one():
    from parlai.utils.fsdp import JoinableTrainLoop
    loop = JoinableTrainLoop.__new__(JoinableTrainLoop)
    loop._JoinableTrainLoop__device = -1
    assert loop.join_device == torch.device('cpu')


# ------------------------------------------------ one-line errors instead of tracebacks

def test_only_parlais_pkg_resources_warning_is_silenced():
    code = ("import sys, warnings, parlai.core.opt; print('pkg_resources' in sys.modules);"
            "warnings.warn_explicit('pkg_resources is deprecated as an API. (elsewhere)', UserWarning,"
            " 'x.py', 1, module='x');"
            "warnings.warn_explicit('another warning', UserWarning, 'opt.py', 1, module='parlai.core.opt')")
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'}
    out = subprocess.run([sys.executable, '-W', 'default', '-c', code], capture_output=True,
                         text=True, check=True, env=env)
    assert out.stdout.strip() == 'True'  # ParlAI did import it (setuptools<81)
    assert 'pkg_resources is deprecated as an API. See' not in out.stderr
    assert '(elsewhere)' in out.stderr and 'another warning' in out.stderr


def test_damaged_opt_file_names_the_option_that_gave_it(tmp_path):
    from parlai.core.opt import Opt
    (tmp_path / 'im.opt').write_text('{"model": "hash_gen')
    argv = ['parlai', 'train_model', '-mf', str(tmp_path / 'm'), f'--init-model={tmp_path / "im"}']
    assert compat._option_naming(str(tmp_path / 'im.opt'), argv) == '--init-model'
    assert compat._option_naming(str(tmp_path / 'm.opt'), argv) == '--model-file'
    with pytest.raises(OptionError, match=r"^--model-file: .*im\.opt is cut short or damaged \(JSONDecodeError"):
        Opt.load(str(tmp_path / 'im.opt'))  # sys.argv here is pytest's: the default option


def test_model_file_checks(tmp_path):
    (tmp_path / 'model').write_bytes(b'')
    (tmp_path / 'model.opt').write_text('{}')
    (tmp_path / 'model.dict').write_text('')
    (tmp_path / 'model.dict.opt').write_text('{}')  # a dictionary's options: not a model
    folder, model, missing = (re.escape(str(p)) for p in (tmp_path, tmp_path / 'model', tmp_path / 'mdl'))
    with pytest.raises(OptionError, match=f"^--model-file: {folder} is a folder, not a model file; "
                                          f".*the one inside it: -mf {model}$"):
        compat.check_model_file(str(tmp_path), must_exist=False)
    with pytest.raises(OptionError, match=f"^--model-file: {missing} does not exist; "
                                          f".*the one next to it: -mf {model}$"):
        compat.check_model_file(str(tmp_path / 'mdl'), must_exist=True)
    compat.check_model_file(str(tmp_path / 'mdl'), must_exist=False)  # train_model creates it
    compat.check_model_file(str(tmp_path / 'model'), must_exist=True)
    compat.check_model_file('zoo:blender/blender_90M/model', must_exist=True)  # ParlAI's to resolve


def test_our_agents_are_recognised_by_any_of_their_names(tmp_path):
    from parlai.core.opt import Opt
    ours = ['hash_generator', 'switch_generator', 'base_generator',
            'parlai.agents.hash_generator.hash_generator:HashGeneratorAgent',
            'parlai_hash.agents.base_generator.base_generator:BaseGeneratorAgent']
    assert all(compat.uses_our_agent(Opt({'model': name})) for name in ours)
    assert not any(compat.uses_our_agent(Opt({'model': name}))
                   for name in ['transformer/generator', 'seq2seq', 'hash_generatorx'])
    (tmp_path / 'm.opt').write_text('{"model": "switch_generator"}')
    assert compat.uses_our_agent(Opt({'model': None, 'model_file': str(tmp_path / 'm')}))


def _train_opt(tmp_path, *args):
    from parlai.scripts.multiprocessing_train import setup_args
    return setup_args().parse_args(['-t', 'integration_tests:nocandidate', '-mf', str(tmp_path / 'm'),
                                    *args])


def test_multiprocessing_builds_our_dictionary_before_the_workers_start(tmp_path):
    import types
    launched = []
    fake = types.SimpleNamespace(launch_and_train=lambda opt, port=None: launched.append(opt['dict_file']))
    compat._fix_dictionary_before_workers(fake)
    fake.launch_and_train(_train_opt(tmp_path, '-m', 'hash_generator'))
    assert launched == [str(tmp_path / 'm.dict')] and (tmp_path / 'm.dict').exists()
    # a bad option stops before any worker starts (and before the dictionary is built)
    with pytest.raises(OptionError, match="^--validation-metric: 'accuracy'"):
        fake.launch_and_train(_train_opt(tmp_path / 'x', '-m', 'hash_generator', '--skip-generation', 'true',
                                         '-vstep', '10'))
    assert len(launched) == 1 and not (tmp_path / 'x').exists()
    fake.launch_and_train(_train_opt(tmp_path / 'y', '-m', 'transformer/generator'))  # not ours: as ParlAI
    assert launched[-1] is None and not (tmp_path / 'y').exists()


def test_dictionary_missing_inside_distributed_training_is_one_line(tmp_path, monkeypatch):
    import parlai.scripts.build_dict as build_dict_module
    monkeypatch.setattr(build_dict_module, 'is_distributed', lambda: True)
    opt = _train_opt(tmp_path, '-m', 'hash_generator', '--dict-file', str(tmp_path / 'd.dict'))
    with pytest.raises(OptionError, match=r"^--dict-file: .*d\.dict does not exist, .*; build it first .*: "
                                          r"parlai build_dict -t integration_tests:nocandidate --dict-file"):
        build_dict_module.build_dict(opt, skip_if_built=True)
    other = _train_opt(tmp_path, '-m', 'transformer/generator', '--dict-file', str(tmp_path / 'd.dict'))
    with pytest.raises(ValueError, match='Dictionaries should be pre-built'):  # not ours: as ParlAI
        build_dict_module.build_dict(other, skip_if_built=True)
