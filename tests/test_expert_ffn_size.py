"""``--expert-ffn-size``: routed experts of their own hidden size; dense FFNs keep ``--ffn-size``."""

import json
import os

import pytest
import torch
from conftest import leave_process_group
import torch.distributed as dist
import torch.multiprocessing as mp
from parlai.core.agents import create_agent, create_agent_from_model_file
from parlai.core.params import ParlaiParser

from parlai_hash.agents.checkpoint_fit import check_checkpoint_fits
from parlai_hash.agents.hash_generator.hash_generator import HashGeneratorAgent
from parlai_hash.errors import OptionError
from parlai_hash.layers import SparseFFN
from parlai_hash.options import SparseConfig, check_expert_ffn_size
from parlai_hash.parallel.sharded_experts import expert_block
from parlai_hash.parallel.training import ExpertParallel
from parlai_hash.routing import HashRouter, RoutingContext, TableInputs
from parlai_hash.sweeps.worker import count_parameters

from conftest import run_parlai as parlai

TASK = 'integration_tests:nocandidate'
ENV = dict(os.environ, OMP_NUM_THREADS='1')
#: d=16, dense FFNs of 128, routed experts of 32: top-2 + one shared expert of 64 is 2·32 + 64 = 128.
SIZES = ['--n-layers', '3', '--embedding-size', '16', '--n-heads', '2', '--ffn-size', '128',
         '--num-experts', '4', '--expert-ffn-size', '32']
AGENTS = {
    'hash_generator': ['--experts-per-token', '2', '--hash-gates', 'learned', '--hash-layers', '0,2'],
    'switch_generator': ['--experts-per-token', '2', '--hash-layers', '0,2'],
    'base_generator': ['--hash-layers', '0,2'],
    'mixed_generator': ['--layer-routing', 'hash:0;switch:2', '--experts-per-token', '2',
                        '--hash-gates', 'learned'],
}



def build(tmp_path, dict_file, model, *args):
    argv = ['-m', model, '-t', TASK, '-mf', str(tmp_path / model), '--dict-file', dict_file, *args]
    return create_agent(ParlaiParser(True, True).parse_args(argv))


@pytest.mark.parametrize('model', sorted(AGENTS))
def test_routed_experts_take_the_expert_size_and_dense_ffns_keep_ffn_size(tmp_path, dict_file, model):
    agent = build(tmp_path, dict_file, model, *SIZES, *AGENTS[model], '--shared-experts', '1')
    state = agent.model.state_dict()
    for i in (0, 2):
        assert state[f'decoder.layers.{i}.ffn.experts.expert_w1'].shape == (4, 16, 32)
        assert state[f'decoder.layers.{i}.ffn.experts.expert_w2'].shape == (4, 32, 16)
        assert state[f'decoder.layers.{i}.ffn.experts.expert_b1'].shape == (4, 32)
        # shared experts default to --ffn-size, not to the routed experts' size
        assert state[f'decoder.layers.{i}.ffn.shared.w1'].shape == (1, 16, 128)
    assert state['decoder.layers.1.ffn.lin1.weight'].shape == (128, 16)
    assert state['encoder.layers.0.ffn.lin1.weight'].shape == (128, 16)


@pytest.mark.parametrize('value', [None, 0])
def test_unset_or_0_is_ffn_size(tmp_path, dict_file, value):
    extra = [] if value is None else ['--expert-ffn-size', str(value)]
    agent = build(tmp_path, dict_file, 'hash_generator', '--n-layers', '2', '--embedding-size', '16',
                  '--n-heads', '2', '--ffn-size', '24', '--num-experts', '4', '--hash-layers', '1', *extra)
    assert agent.sparse_config.expert_ffn_size is None
    assert agent.model.state_dict()['decoder.layers.1.ffn.experts.expert_w1'].shape == (4, 16, 24)


def test_a_model_saved_before_the_option_existed_loads_with_ffn_size_experts(tmp_path, dict_file):
    agent = build(tmp_path, dict_file, 'hash_generator', '--n-layers', '2', '--embedding-size', '16',
                  '--n-heads', '2', '--ffn-size', '24', '--num-experts', '4', '--hash-layers', '1')
    mf = str(tmp_path / 'old')
    agent.save(mf)
    with open(mf + '.opt') as f:
        saved = json.load(f)
    del saved['expert_ffn_size']  # as written before the option existed
    with open(mf + '.opt', 'w') as f:
        json.dump(saved, f)
    loaded = create_agent_from_model_file(mf)
    assert loaded.opt['expert_ffn_size'] is None
    assert loaded.model.state_dict()['decoder.layers.1.ffn.experts.expert_w1'].shape == (4, 16, 24)
    opt = HashGeneratorAgent.upgrade_opt({'inference': 'greedy', 'ffn_size': 24})
    assert 'expert_ffn_size' in opt and opt['expert_ffn_size'] is None


@pytest.mark.parametrize('value', [-1, 2.5, True])
def test_a_bad_size_names_the_option(value):
    with pytest.raises(OptionError, match=r'^--expert-ffn-size: got .*, need a positive hidden size; pass e\.g\.'):
        check_expert_ffn_size(value)


def multihash_opt(**kw):
    return {'n_layers': 2, 'n_decoder_layers': -1, 'n_encoder_layers': -1, 'num_experts': 4, 'hash_layers': '1',
            'hash_encoder_layers': '', 'embedding_size': 16, **kw}


def test_multihash_must_divide_the_experts_size_not_ffn_size():
    # 36 is not divisible by 8, but the experts are 32 wide
    config = SparseConfig.from_opt(multihash_opt(multihash=8, ffn_size=36, expert_ffn_size=32))
    assert config.num_hashes == 8 and config.expert_ffn_size == 32
    with pytest.raises(OptionError) as err:
        SparseConfig.from_opt(multihash_opt(multihash=4, ffn_size=32, expert_ffn_size=30))
    assert str(err.value) == ('--multihash: 4 hashes do not divide --expert-ffn-size 30; pick a number of '
                              'hashes that divides both --embedding-size 16 and --expert-ffn-size 30, such as 2')
    # unset: --ffn-size sizes the experts and is the option named
    with pytest.raises(OptionError, match=r'^--multihash: 8 hashes do not divide --ffn-size 36;'):
        SparseConfig.from_opt(multihash_opt(multihash=8, ffn_size=36))
    table = HashRouter.build_tables('random', 4, 0, TableInputs(vocab_size=20, n_positions=8), num_hashes=2)
    ffn = SparseFFN(SparseConfig(4, num_hashes=2, expert_ffn_size=8), 'dec0', HashRouter('random', 4, 0, table),
                    6, 7)  # the dense size 7 is odd; the experts' 8 splits in two
    assert [tuple(w.shape) for w in ffn.experts.expert_w1] == [(4, 6, 4), (4, 6, 4)]


def test_active_parameters_equal_the_dense_model_when_k_times_d_plus_shared_is_ffn_size(tmp_path, dict_file):
    dense = build(tmp_path, dict_file, 'transformer/generator', *SIZES[:8])
    sparse = build(tmp_path, dict_file, 'hash_generator', *SIZES, *AGENTS['hash_generator'],
                   '--shared-experts', '1', '--shared-expert-size', '64')
    dense_counts, counts = count_parameters(dense.model, dense.opt), count_parameters(sparse.model, sparse.opt)
    d, k, layers = 16, 4, 2
    assert counts['expert_params'] == layers * k * (2 * d * 32 + 32 + d)
    # per sparse layer: routed 2·(2·d·32 + 32 + d) + shared (2·d·64 + 64 + d) = dense (2·d·128 + 128 + d)
    # + 2d output biases, and the learned gate's K x d
    assert counts['active_params'] == dense_counts['params'] + layers * (2 * d + k * d)
    assert counts['params'] == counts['active_params'] + layers * (k - 2) * (2 * d * 32 + 32 + d)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Top-2 Switch with a shared expert and routed experts of 8, through the parlai commands."""
    mf = str(tmp_path_factory.mktemp('expert_size') / 'model')
    parlai('train_model', '-m', 'switch_generator', '-t', TASK, '-mf', mf, '--n-layers', '2',
           '--embedding-size', '16', '--n-heads', '2', '--ffn-size', '32', '--num-experts', '4',
           '--hash-layers', '1', '--experts-per-token', '2', '--shared-experts', '1', '--shared-expert-size', '16',
           '--expert-ffn-size', '8', '-bs', '8', '--max-train-steps', '4', '-vstep', '4',
           '--validation-max-exs', '8', '--optimizer', 'adam', '--skip-generation', 'true', '-vmt', 'ppl',
           '--short-final-eval', 'true', env=ENV)
    return mf


def test_trains_and_evaluates_with_the_parlai_commands(trained):
    report = parlai('eval_model', '-mf', trained, '-t', TASK, '--num-examples', '8', env=ENV).stdout
    assert 'dec1_load_max' in report and 'ppl' in report
    agent = create_agent_from_model_file(trained)
    assert agent.opt['expert_ffn_size'] == 8
    state = torch.load(trained, map_location='cpu', weights_only=False)['model']
    assert state['decoder.layers.1.ffn.experts.expert_w1'].shape == (4, 16, 8)
    assert state['decoder.layers.1.ffn.shared.w1'].shape == (1, 16, 16)
    assert state['decoder.layers.0.ffn.lin1.weight'].shape == (32, 16)
    assert torch.equal(agent.model.state_dict()['decoder.layers.1.ffn.experts.expert_w1'],
                       state['decoder.layers.1.ffn.experts.expert_w1'])


def test_a_checkpoint_of_another_expert_size_is_refused_naming_the_size(tmp_path, trained, dict_file):
    proc = parlai('train_model', '-m', 'switch_generator', '-t', TASK, '-mf', str(tmp_path / 'ft'),
                  '--init-model', trained, '--dict-file', trained + '.dict', '--n-layers', '2', '--embedding-size',
                  '16', '--n-heads', '2', '--ffn-size', '32', '--num-experts', '4', '--hash-layers', '1',
                  '--experts-per-token', '2', '--shared-experts', '1', '--shared-expert-size', '16',
                  '--max-train-steps', '1', check=False, env=ENV)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith('parlai-hash: error:')]
    assert lines == ["parlai-hash: error: --expert-ffn-size: the checkpoint's routed experts have 8 hidden units, "
                     "these options 32; pass --expert-ffn-size 8 as it was trained"]


def test_another_dense_size_names_ffn_size_before_the_experts(tmp_path, dict_file):
    def state(ffn, expert):
        agent = build(tmp_path, dict_file, 'hash_generator', '--n-layers', '2', '--embedding-size', '16',
                      '--n-heads', '2', '--ffn-size', str(ffn), '--num-experts', '4', '--hash-layers', '1',
                      '--expert-ffn-size', str(expert))
        return agent.model.state_dict()

    check_checkpoint_fits(state(32, 8), state(32, 8), 4)
    with pytest.raises(OptionError, match=r"^--ffn-size: the checkpoint's dense FFNs have 32 hidden units, "
                                          r"these options 24; pass --ffn-size 32 as it was trained$"):
        check_checkpoint_fits(state(32, 8), state(24, 8), 4)
    with pytest.raises(OptionError, match=r"^--expert-ffn-size: the checkpoint's routed experts have 8 hidden "
                                          r"units, these options 32; pass --expert-ffn-size 8"):
        check_checkpoint_fits(state(32, 8), state(32, 0), 4)


# ------------------------------------------------------ expert parallelism (2 CPU processes)

K, D, H, E, N, V, WORLD = 4, 6, 10, 4, 7, 40, 2  # experts, dim, --ffn-size, expert size, tokens, vocab, ranks


def ep_layer():
    torch.manual_seed(1)
    table = HashRouter.build_tables('random', K, 3, TableInputs(vocab_size=V, n_positions=16), experts_per_token=2)
    router = HashRouter('random', K, 3, table, experts_per_token=2, gates='learned', dim=D)
    return SparseFFN(SparseConfig(K, experts_per_token=2, expert_ffn_size=E), 'dec0', router, D, H).double()


def ep_inputs():
    torch.manual_seed(0)
    tokens = torch.randint(1, V, (WORLD, N))
    return tokens, torch.randn(WORLD, N, D, dtype=torch.float64), torch.randn(WORLD, N, D, dtype=torch.float64)


def ep_run(ffn, tokens, x, grad):
    ffn.routing = RoutingContext.full(tokens, pad_idx=0)
    x = x.clone().requires_grad_(True)
    y = ffn(x)
    (y * grad).sum().backward()
    return y.detach(), x.grad


def ep_worker(rank, init, out_dir):
    dist.init_process_group('gloo', init_method=init, rank=rank, world_size=WORLD)
    try:
        tokens, x, grad = ep_inputs()
        ffn = ep_layer()
        parallel = ExpertParallel(ffn, rank, WORLD)
        ffn.train()
        y, dx = ep_run(ffn, tokens[rank : rank + 1], x[rank : rank + 1], grad[rank : rank + 1])
        parallel.gather_for_eval()
        ffn.eval()
        with torch.no_grad():
            y_eval = ffn(x[rank : rank + 1])
        torch.save({'y': y, 'dx': dx, 'y_eval': y_eval, 'shapes': {n: tuple(p.shape) for n, p in
                                                                   ffn.experts.named_parameters()},
                    'grads': {n: p.grad for n, p in ffn.experts.named_parameters()}},
                   os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        leave_process_group()


def test_expert_parallel_shards_have_the_experts_size(tmp_path):
    mp.spawn(ep_worker, args=(f'file://{tmp_path}/rendezvous', str(tmp_path)), nprocs=WORLD, join=True)
    tokens, x, grad = ep_inputs()
    ffn = ep_layer()
    ffn.train()
    reference = [ep_run(ffn, tokens[r : r + 1], x[r : r + 1], grad[r : r + 1]) for r in range(WORLD)]
    for r in range(WORLD):
        res = torch.load(tmp_path / f'rank{r}.pt', weights_only=False)
        assert res['shapes'] == {'expert_w1': (K // WORLD, D, E), 'expert_b1': (K // WORLD, E),
                                 'expert_w2': (K // WORLD, E, D), 'expert_b2': (K // WORLD, D)}
        torch.testing.assert_close(res['y'], reference[r][0])
        torch.testing.assert_close(res['y_eval'], reference[r][0])  # the gathered eval copy
        torch.testing.assert_close(res['dx'], reference[r][1])
        for name, g in res['grads'].items():
            torch.testing.assert_close(g, expert_block(getattr(ffn.experts, name).grad, r, WORLD), msg=name)
