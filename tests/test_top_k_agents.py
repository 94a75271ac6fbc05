"""Top-k routing through the agents and the real ``parlai`` commands."""

import os
import random

import pytest
import torch
from parlai.core.agents import create_agent, create_agent_from_model_file
from parlai.core.params import ParlaiParser
from parlai.scripts.train_model import TrainModel

from parlai_hash.agents.checkpoint_fit import check_checkpoint_fits
from parlai_hash.errors import OptionError

from conftest import TINY_MODEL_ARGS
from conftest import run_parlai as parlai

TASK = 'integration_tests:nocandidate'
#: One thread a command: tiny models only contend with more.
ENV = dict(os.environ, OMP_NUM_THREADS='1')
# Each with one always-on shared expert, as today's production MoE layers have.
TOP_2 = {
    'hash_generator': ['--experts-per-token', '2', '--hash-gates', 'learned', '--hash-type', 'balanced',
                       '--shared-experts', '1'],
    'switch_generator': ['--experts-per-token', '2', '--shared-experts', '1', '--shared-expert-size', '24'],
    # DeepSeek-V4's stack: hash routing early, learned top-k late.
    'mixed_generator': ['--layer-routing', 'hash:0;switch:2', '--experts-per-token', '2',
                        '--hash-gates', 'learned', '--shared-experts', '1'],
}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny top-2 model of each router, trained and evaluated by the parlai commands."""
    root = tmp_path_factory.mktemp('top2')
    paths = {}
    for model, extra in TOP_2.items():
        mf = str(root / model / 'model')
        parlai('train_model', '-m', model, '-t', TASK, '-mf', mf, *TINY_MODEL_ARGS,
               '--hash-layers', '0,2', *extra, '-bs', '8', '--max-train-steps', '12', '-vstep', '12',
               '--validation-max-exs', '16', '-lr', '1e-2', '--optimizer', 'adam',
               '--skip-generation', 'true', '-vmt', 'ppl', '--short-final-eval', 'true', env=ENV)
        out = parlai('eval_model', '-mf', mf, '-t', TASK, '--num-examples', '8',
                     '--skip-generation', 'false', '--inference', 'greedy', env=ENV)
        paths[model] = (mf, out.stdout)
    return paths


@pytest.mark.parametrize('model', sorted(TOP_2))
def test_top_2_trains_and_evaluates_with_the_parlai_commands(trained, model):
    mf, report = trained[model]
    assert 'dec0_load_max' in report and 'dec2_load_ent' in report and 'ppl' in report
    state = torch.load(mf, map_location='cpu', weights_only=False)['model']
    agent = create_agent_from_model_file(mf)
    assert agent.opt['experts_per_token'] == 2 and agent.opt['shared_experts'] == 1
    d, ffn_size = agent.opt['embedding_size'], agent.opt['ffn_size']
    shared_size = 24 if model == 'switch_generator' else ffn_size
    assert state['decoder.layers.2.ffn.shared.w1'].shape == (1, d, shared_size)
    assert state['decoder.layers.2.ffn.shared.w2'].shape == (1, shared_size, d)
    for name in ('dec0', 'dec2'):
        ffn = agent.model.sparse_ffns()[name]
        assert ffn.experts_per_token == 2
        # every expert-load count covers both choices of every token
        agent.model.eval()
        ys = torch.tensor([[5, 6, 7, 8]])
        ffn.take_load()
        with torch.no_grad():
            agent.model.decode_forced(agent.model.encoder(torch.tensor([[4, 5, 6]])), ys)
        assert int(ffn.take_load().sum()) == 2 * ys.numel()
    if model == 'mixed_generator':  # layer 0 routes by its table, layer 2 by a learned router
        assert 'decoder.layers.0.ffn.router.table' in state and 'decoder.layers.0.ffn.router.gate.weight' in state
        assert 'decoder.layers.2.ffn.router.router_weight' in state
        assert not any(k.startswith('decoder.layers.2.ffn.router.table') for k in state)
    if model in ('hash_generator', 'mixed_generator'):
        table = state['decoder.layers.0.ffn.router.table']
        assert table.shape == (1, len(agent.dict), 2)
        assert all(len(set(row)) == 2 for row in table[0].tolist())
        # the reloaded model routes with the saved table, not a rebuilt one
        loaded = agent.model.decoder.layers[0].ffn.router
        assert torch.equal(loaded.table, table)
        assert torch.equal(loaded.gate.weight, state['decoder.layers.0.ffn.router.gate.weight'])


@pytest.mark.parametrize('model', sorted(TOP_2))
def test_a_reloaded_top_2_model_gives_the_same_logits(trained, model):
    mf, _ = trained[model]
    a, b = create_agent_from_model_file(mf), create_agent_from_model_file(mf)
    a.model.eval(), b.model.eval()
    text, ys = torch.tensor([[4, 5, 6], [7, 8, 0]]), torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0]])
    with torch.no_grad():
        la = a.model.decode_forced(a.model.encoder(text), ys)[0]
        lb = b.model.decode_forced(b.model.encoder(text), ys)[0]
    assert torch.equal(la, lb)


@pytest.mark.parametrize('model', sorted(TOP_2))
def test_incremental_decoding_equals_full_forward(trained, model):
    mf, _ = trained[model]
    m = create_agent_from_model_file(mf).model
    m.eval()
    text = torch.tensor([[4, 5, 6], [7, 8, 9]])
    ys = torch.randint(4, 11, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        enc = m.encoder(text)
        full = m.output(m.decoder(ys, enc)[0])
        incr = None
        for t in range(ys.size(1)):
            latent, incr = m.decoder(ys[:, : t + 1], enc, incr)
            torch.testing.assert_close(m.output(latent)[:, -1], full[:, t], rtol=1e-4, atol=1e-5)


def test_freeze_router_keeps_learned_hash_gates_fixed(tmp_path, trained):
    mf, _ = trained['hash_generator']
    out = str(tmp_path / 'finetuned')
    random.seed(0)
    TrainModel.main(task=TASK, model='hash_generator', model_file=out, init_model=mf, freeze='router',
                    n_layers=3, embedding_size=16, ffn_size=32, n_heads=2, num_experts=4,
                    hash_layers='0,2', experts_per_token=2, hash_gates='learned', shared_experts=1, batchsize=8,
                    max_train_steps=3, validation_every_n_steps=3, validation_max_exs=8,
                    learningrate=1e-2, optimizer='adam', skip_generation=True,
                    validation_metric='ppl', short_final_eval=True)
    before = torch.load(mf, map_location='cpu', weights_only=False)['model']
    after = torch.load(out, map_location='cpu', weights_only=False)['model']
    gates = [k for k in after if k.endswith('router.gate.weight')]
    assert len(gates) == 2
    for k in gates:
        assert torch.equal(before[k], after[k]), k
    experts = [k for k in after if '.ffn.experts.' in k]
    assert any(not torch.equal(before[k], after[k]) for k in experts)


# ------------------------------------------------------------- errors



def build_agent(tmp_path, dict_file, model, *extra):
    args = ['-m', model, '-t', TASK, '-mf', str(tmp_path / model), '--dict-file', dict_file,
            *TINY_MODEL_ARGS, '--hash-layers', '0,2', *extra]
    return create_agent(ParlaiParser(True, True).parse_args(args))


@pytest.mark.parametrize('model, extra, message', [
    ('switch_generator', ['--experts-per-token', '0'],
     '--experts-per-token: got 0, need at least 1; pass --experts-per-token 1'),
    ('switch_generator', ['--experts-per-token', '5'],
     '--experts-per-token: 5 distinct experts per token, but --num-experts is 4; '
     'pass --experts-per-token 4 or less'),
    ('base_generator', ['--experts-per-token', '2'],
     "--experts-per-token: BASE layers' balanced assignment gives each token one expert; "
     'pass --experts-per-token 1'),
    ('hash_generator', ['--experts-per-token', '2'],
     '--hash-gates: none would add up the outputs of --experts-per-token 2 experts unweighted; '
     'pass --hash-gates uniform or learned, or --experts-per-token 1'),
    ('hash_generator', ['--hash-gates', 'learned'],
     '--hash-gates: learned gates are normalised over a token\'s experts'),
    ('hash_generator', ['--experts-per-token', '2', '--hash-gates', 'uniform', '--hash-type', 'bigram'],
     '--experts-per-token: --hash-type bigram routes each token to one expert; '
     'tables of 2 experts per token exist for balanced and random; '
     'use --hash-type balanced or random, or --experts-per-token 1'),
    ('hash_generator', ['--experts-per-token', '2', '--hash-gates', 'uniform', '--multihash', '2'],
     '--multihash: MultiHash routes each segment to one expert'),
    ('hash_generator', ['--multihash', '2', '--hash-gates', 'uniform'],
     '--multihash: MultiHash routes each segment to one expert, ungated'),
])
def test_bad_combinations_are_one_line_naming_the_option(tmp_path, dict_file, model, extra, message):
    with pytest.raises(OptionError) as err:
        build_agent(tmp_path, dict_file, model, *extra)
    assert str(err.value).startswith(message)
    assert '\n' not in str(err.value)


def test_the_parlai_command_prints_the_error_as_one_line(tmp_path):
    proc = parlai('train_model', '-m', 'hash_generator', '-t', TASK, '-mf', str(tmp_path / 'm'),
                  *TINY_MODEL_ARGS, '--experts-per-token', '9', '--max-train-steps', '1', check=False,
                  env=ENV)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith('parlai-hash: error:')]
    assert lines == ['parlai-hash: error: --experts-per-token: 9 distinct experts per token, but '
                     '--num-experts is 4; pass --experts-per-token 4 or less, or more --num-experts']


def routing_state(table_shape, gate=False, shared=None):
    state = {'decoder.layers.1.ffn.experts.expert_w1': torch.zeros(4, 16, 32),
             'decoder.layers.1.ffn.router.table': torch.zeros(table_shape, dtype=torch.long)}
    if gate:
        state['decoder.layers.1.ffn.router.gate.weight'] = torch.zeros(4, 16)
    if shared:
        state['decoder.layers.1.ffn.shared.w1'] = torch.zeros(shared[0], 16, shared[1])
    return state


@pytest.mark.parametrize('checkpoint, options, message', [
    (routing_state((1, 11, 2), gate=True), routing_state((1, 11)),
     "--hash-gates: the checkpoint's hash layers have learned gates, these options build none; "
     'pass --hash-gates learned'),
    (routing_state((1, 11, 2)), routing_state((1, 11)),
     "--experts-per-token: the checkpoint's routing table (decoder.layers.1.ffn.router.table) gives "
     '2 expert(s) per token, these options 1; pass --experts-per-token 2'),
    (routing_state((1, 11)), routing_state((1, 11), shared=(1, 32)),
     "--shared-experts: the checkpoint's sparse layers have 0 shared experts, these options 1; "
     'pass --shared-experts 0'),
    (routing_state((1, 11), shared=(2, 32)), routing_state((1, 11), shared=(2, 8)),
     "--shared-expert-size: the checkpoint's shared experts have 32 hidden units, these options 8; "
     'pass --shared-expert-size 32'),
    (routing_state((1, 11, 3)), routing_state((1, 11, 2)),
     "--experts-per-token: the checkpoint's routing table (decoder.layers.1.ffn.router.table) gives "
     '3 expert(s) per token, these options 2; pass --experts-per-token 3'),
])
def test_a_checkpoint_of_another_k_or_gating_names_the_option(checkpoint, options, message):
    with pytest.raises(OptionError) as err:
        check_checkpoint_fits(checkpoint, options, 4)
    assert str(err.value).startswith(message) and '\n' not in str(err.value)
