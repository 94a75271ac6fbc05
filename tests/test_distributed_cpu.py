"""multiprocessing_train on 2 CPU workers (gloo): ParlAI's CUDA-only path, fixed in compat."""

import torch

from conftest import run_parlai as parlai

MODEL = ['--n-layers', '2', '--embedding-size', '16', '--ffn-size', '32', '--n-heads', '2',
         '--num-experts', '16', '--hash-layers', '0,1']


def test_two_worker_fine_tune_with_frozen_experts_then_single_process_eval(tmp_path):
    d = str(tmp_path / 'model.dict')
    task = ['-t', 'integration_tests:nocandidate']
    parlai('build_dict', *task, '--dict-file', d, cwd=tmp_path)
    common = [*task, '--dict-file', d, *MODEL, '-lr', '1e-2', '--optimizer', 'adam',
              '--skip-generation', 'true', '-vmt', 'ppl', '--validation-max-exs', '8',
              '--short-final-eval', 'true']
    pre = str(tmp_path / 'pre')
    parlai('train_model', '-m', 'hash_generator', '-mf', pre, *common, '-bs', '4',
           '--max-train-steps', '4', '-vstep', '4', cwd=tmp_path)
    out = str(tmp_path / 'ft')
    # batch 2 over 16 experts: on each worker most experts see no token in a step
    proc = parlai('multiprocessing_train', '--distributed-world-size', '2', '-m', 'hash_generator',
                  '-mf', out, '--init-model', pre, '--freeze', 'experts', *common, '-bs', '2',
                  '--max-train-steps', '8', '-vstep', '8', cwd=tmp_path)
    assert 'gloo' in proc.stdout + proc.stderr
    before = torch.load(pre, weights_only=False)['model']
    after = torch.load(out, weights_only=False)['model']
    experts = [k for k in after if '.ffn.experts.' in k]
    assert experts and all(torch.equal(before[k], after[k]) for k in experts)
    assert not torch.equal(before['decoder.layers.0.self_attention.q_lin.weight'],
                           after['decoder.layers.0.self_attention.q_lin.weight'])
    ev = parlai('eval_model', '-mf', out, *task, '--num-examples', '8', cwd=tmp_path)
    assert 'dec0_load_max' in ev.stdout
