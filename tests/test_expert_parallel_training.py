"""--expert-parallel through ParlAI's multiprocessing_train (2 and 4 CPU workers)."""

import shutil

import torch

from conftest import run_parlai as parlai
from test_baselines import _agent, batch_of

TASK = ['-t', 'integration_tests:nocandidate']
MODEL = ['-m', 'hash_generator', '--n-layers', '2', '--embedding-size', '16', '--ffn-size', '32',
         '--n-heads', '2', '--num-experts', '4', '--hash-layers', '0,1']
# Ordered data and SGD with momentum: two runs see the same batches, the
# optimizer has per-parameter state, and Adam's sign-like steps do not amplify
# float-level differences, so the comparison can be tight.
TRAIN = ['-dt', 'train:ordered', '-bs', '4', '--max-train-steps', '6', '-vstep', '6',
         '--validation-max-exs', '8', '-lr', '0.5', '--optimizer', 'sgd', '--momentum', '0.9',
         '--skip-generation', 'true', '-vmt', 'ppl', '--short-final-eval', 'true']


def test_expert_parallel_training_equals_data_parallel_and_checkpoints_are_whole(tmp_path):
    d = str(tmp_path / 'model.dict')
    parlai('build_dict', *TASK, '--dict-file', d, cwd=tmp_path)
    runs, logs = {}, {}
    for ep in ('false', 'true'):
        runs[ep] = str(tmp_path / f'ep_{ep}')
        proc = parlai('multiprocessing_train', '--distributed-world-size', '2', *MODEL, *TASK, *TRAIN,
                      '--dict-file', d, '-mf', runs[ep], '--expert-parallel', ep, cwd=tmp_path)
        logs[ep] = proc.stdout + proc.stderr
    # the workers really held half the experts each (else every check below holds trivially)
    assert '--expert-parallel: 2 experts per worker on 2 workers' in logs['true']
    assert '--expert-parallel:' not in logs['false']
    dp = torch.load(runs['false'], weights_only=False)['model']
    ep = torch.load(runs['true'], weights_only=False)['model']
    assert set(dp) == set(ep)
    assert ep['decoder.layers.0.ffn.experts.expert_w1'].shape[0] == 4  # all experts, gathered
    for key in dp:
        if dp[key].is_floating_point():
            torch.testing.assert_close(ep[key], dp[key], rtol=1e-5, atol=1e-6)
    # the optimizer state is whole too: every expert's momentum, as data parallelism has it
    dp_opt = torch.load(runs['false'], weights_only=False)['optimizer']['state']
    ep_opt = torch.load(runs['true'], weights_only=False)['optimizer']['state']
    assert set(dp_opt) == set(ep_opt) and dp_opt
    for index in dp_opt:
        torch.testing.assert_close(ep_opt[index]['momentum_buffer'], dp_opt[index]['momentum_buffer'],
                                   rtol=1e-5, atol=1e-6)
    # the expert-parallel checkpoint evaluates on one process...
    ev = parlai('eval_model', '-mf', runs['true'], *TASK, '--num-examples', '8', cwd=tmp_path)
    assert 'dec0_load_max' in ev.stdout
    # ...and on 2 evaluation workers, which keep every expert (its saved options say
    # datatype train and expert_parallel true: evaluation must not shard)
    ev = parlai('multiprocessing_eval', '--distributed-world-size', '2', '-mf', runs['true'], *TASK,
                '--num-examples', '8', cwd=tmp_path)
    assert 'dec0_load_max' in ev.stdout and '--expert-parallel:' not in ev.stdout + ev.stderr
    # ...and resumes, its optimizer state cut to each worker's experts: 2 more
    # steps expert-parallel equal 2 more steps data-parallel from the same file
    resumed = {}
    for ep_again in ('false', 'true'):
        resumed[ep_again] = str(tmp_path / f'resume_{ep_again}')
        for f in tmp_path.glob('ep_true*'):
            shutil.copy(f, resumed[ep_again] + f.name[len('ep_true'):])
        parlai('multiprocessing_train', '--distributed-world-size', '2', *MODEL, *TASK, *TRAIN,
               '--dict-file', d, '-mf', resumed[ep_again], '--expert-parallel', ep_again,
               '--max-train-steps', '8', '-vstep', '8', cwd=tmp_path)
    dp2 = torch.load(resumed['false'], weights_only=False)['model']
    ep2 = torch.load(resumed['true'], weights_only=False)['model']
    key = 'decoder.layers.1.ffn.experts.expert_w2'
    assert not torch.equal(ep2[key], ep[key])  # it trained on
    for key in dp2:
        if dp2[key].is_floating_point():
            torch.testing.assert_close(ep2[key], dp2[key], rtol=1e-5, atol=1e-6)
    # ...and on another number of workers (4: one expert each)
    for f in tmp_path.glob('ep_true*'):
        shutil.copy(f, str(tmp_path / 'w4') + f.name[len('ep_true'):])
    parlai('multiprocessing_train', '--distributed-world-size', '4', *MODEL, *TASK, *TRAIN,
           '--dict-file', d, '-mf', str(tmp_path / 'w4'), '--expert-parallel', 'true',
           '--max-train-steps', '8', '-vstep', '8', cwd=tmp_path)
    w4 = torch.load(str(tmp_path / 'w4'), weights_only=False)
    assert w4['model']['decoder.layers.1.ffn.experts.expert_w2'].shape[0] == 4
    shapes = [tuple(v['momentum_buffer'].shape) for v in w4['optimizer']['state'].values()]
    assert shapes == [tuple(v['momentum_buffer'].shape) for v in dp_opt.values()]
    assert (4, 32, 16) in shapes  # an expert_w2's momentum, all 4 experts


def test_multihash_expert_parallel_training_equals_data_parallel_and_evaluates_on_one_process(tmp_path):
    d = str(tmp_path / 'model.dict')
    parlai('build_dict', *TASK, '--dict-file', d, cwd=tmp_path)
    runs = {}
    for ep in ('false', 'true'):
        runs[ep] = str(tmp_path / f'ep_{ep}')
        # --save-every-n-secs: timed saves gather experts, so workers must save on the same
        # step (parlai_hash.train_hooks syncs their clocks); here one after every step.
        proc = parlai('multiprocessing_train', '--distributed-world-size', '2', *MODEL, '--multihash', '2',
                      *TASK, *TRAIN, '--max-train-steps', '3', '-vstep', '3', '--dict-file', d,
                      '-mf', runs[ep], '--expert-parallel', ep, '--save-every-n-secs', '0.001', cwd=tmp_path)
        assert ('--expert-parallel: 2 experts per worker' in proc.stdout + proc.stderr) == (ep == 'true')
    dp = torch.load(runs['false'], weights_only=False)['model']
    ep = torch.load(runs['true'], weights_only=False)['model']
    assert set(dp) == set(ep)
    assert ep['decoder.layers.1.ffn.experts.expert_w2.1'].shape == (4, 32, 8)  # all K copies of a segment
    for key in dp:
        if dp[key].is_floating_point():
            torch.testing.assert_close(ep[key], dp[key], rtol=1e-5, atol=1e-6)
    ev = parlai('eval_model', '-mf', runs['true'], *TASK, '--num-examples', '8', cwd=tmp_path)
    assert 'dec0_load_max' in ev.stdout
    timed = torch.load(runs['true'] + '.checkpoint', weights_only=False)['model']
    assert timed['decoder.layers.1.ffn.experts.expert_w2.1'].shape == (4, 32, 8)  # gathered there too


def test_experts_not_divisible_by_workers_is_an_option_error(tmp_path):
    d = str(tmp_path / 'model.dict')
    parlai('build_dict', *TASK, '--dict-file', d, cwd=tmp_path)
    proc = parlai('multiprocessing_train', '--distributed-world-size', '2',
                  *MODEL[:-4], '--num-experts', '3', '--hash-layers', '0', *TASK, *TRAIN,
                  '--dict-file', d, '-mf', str(tmp_path / 'm'), '--expert-parallel', 'true',
                  cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert '--num-experts: 3 experts cannot be split evenly over 2 workers' in proc.stdout + proc.stderr


def test_out_of_memory_in_expert_parallel_training_stops_with_the_fix(tmp_path, dict_file, monkeypatch):
    """ParlAI skips an out-of-memory batch and runs a dummy one to keep DDP in step; under
    expert parallelism that dummy batch's exchanges would pair with other ranks' collectives."""
    import pytest
    from parlai_hash.errors import OptionError
    from parlai_hash.parallel.training import ExpertParallel

    agent = _agent(tmp_path, dict_file, 'hash_generator', hash_type='random')
    batch = batch_of(agent, [('1 2 3', '4 5 6')])

    def out_of_memory(*args, **kwargs):
        raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')

    monkeypatch.setattr(agent, 'compute_loss', out_of_memory)
    # what build_model sets under --expert-parallel on 2 workers (needs no collective here)
    agent.expert_parallel = object.__new__(ExpertParallel)
    with pytest.raises(OptionError, match='^--batchsize: a worker ran out of memory'):
        agent.train_step(batch)
    # one process: ParlAI's skip-the-batch handling as before (its dummy batch computes)
    real_loss = type(agent).compute_loss.__get__(agent)
    calls = []

    def first_call_out_of_memory(*args, **kwargs):
        calls.append(1)
        return out_of_memory() if len(calls) == 1 else real_loss(*args, **kwargs)

    monkeypatch.setattr(agent, 'compute_loss', first_call_out_of_memory)
    agent.expert_parallel = None
    agent.reset_metrics()
    agent.train_step(batch)
    assert agent.report()['skipped_batches'] == 1 and len(calls) == 2
