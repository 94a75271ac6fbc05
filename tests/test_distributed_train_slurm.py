"""--expert-parallel through ParlAI's SLURM launcher, ``parlai.scripts.distributed_train``.

On a cluster ``srun`` starts one such process per task, each told its rank by
SLURM's environment, and ParlAI asks ``scontrol`` for the main host. Here the
tasks are two local processes with that environment and a stand-in
``scontrol`` on PATH; the rest (TCP rendezvous, gloo, our agents) is real.
"""

from __future__ import annotations

import re
import sys

import torch

from conftest import fake_srun, free_port, run_parlai as parlai

TASK = ['-t', 'integration_tests:nocandidate']
# Switch: its routing plan depends on the hidden state, so the all-to-all split
# sizes are exchanged inside the layer (hash's come from the token ids).
# Dropless, so data and expert parallelism compute the same tokens.
MODEL = ['-m', 'switch_generator', '--n-layers', '2', '--embedding-size', '16', '--ffn-size', '32',
         '--n-heads', '2', '--num-experts', '4', '--sparse-layers', '0,1', '--capacity-factor', '0']
TRAIN = ['-dt', 'train:ordered', '-bs', '4', '--max-train-steps', '5', '-vstep', '5',
         '--validation-max-exs', '8', '-lr', '0.5', '--optimizer', 'sgd', '--momentum', '0.9',
         '--skip-generation', 'true', '-vmt', 'ppl', '--short-final-eval', 'true']


def parameters_logged(output: str) -> int:
    """The count in ParlAI's 'Total parameters: N (M trainable)' line (this worker's model)."""
    return int(re.search(r'Total parameters: ([\d,]+)', output).group(1).replace(',', ''))


def test_slurm_expert_parallel_switch_equals_data_parallel_and_evaluates_on_one_process(tmp_path):
    d = str(tmp_path / 'model.dict')
    parlai('build_dict', *TASK, '--dict-file', d, cwd=tmp_path)
    dp_file, ep_file = str(tmp_path / 'dp'), str(tmp_path / 'ep')
    dp_run = parlai('multiprocessing_train', '--distributed-world-size', '2', *MODEL, *TASK, *TRAIN,
                    '--dict-file', d, '-mf', dp_file, cwd=tmp_path)
    # ParlAI 1.7.2's SLURM launcher needs the world size and port given
    outputs = fake_srun(2, [sys.executable, '-u', '-m', 'parlai.scripts.distributed_train', *MODEL, *TASK,
                            *TRAIN, '--dict-file', d, '-mf', ep_file, '--expert-parallel', 'true',
                            '--distributed-world-size', '2', '--port', str(free_port())], tmp_path)
    # each worker really held half the experts: 2 layers x 2 experts x (w1, b1, w2, b2) fewer
    expert_params = 16 * 32 + 32 + 32 * 16 + 16
    assert parameters_logged(outputs[0]) == parameters_logged(dp_run.stdout + dp_run.stderr) - 2 * 2 * expert_params
    dp = torch.load(dp_file, weights_only=False)
    ep = torch.load(ep_file, weights_only=False)
    assert ep['model']['decoder.layers.0.ffn.experts.expert_w1'].shape[0] == 4  # all experts, gathered
    assert set(ep['model']) == set(dp['model'])
    for key, value in dp['model'].items():
        if value.is_floating_point():
            torch.testing.assert_close(ep['model'][key], value, rtol=1e-5, atol=1e-6)
    assert set(ep['optimizer']['state']) == set(dp['optimizer']['state'])
    for index, state in dp['optimizer']['state'].items():
        torch.testing.assert_close(ep['optimizer']['state'][index]['momentum_buffer'],
                                   state['momentum_buffer'], rtol=1e-5, atol=1e-6)
    ev = parlai('eval_model', '-mf', ep_file, *TASK, '--num-examples', '8', cwd=tmp_path)
    assert 'dec0_load_max' in ev.stdout
