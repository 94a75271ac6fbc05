"""Each hash type inside the model: generation = full forward, checkpoints, refusals."""

import shutil

import pytest
import torch
from parlai.core.agents import create_agent, create_agent_from_model_file
from parlai.core.params import ParlaiParser
from parlai.scripts.train_model import TrainModel

from parlai_hash.errors import OptionError
from parlai_hash.layers import SparseFFN

TINY = dict(n_layers=3, embedding_size=16, ffn_size=32, n_heads=2)
GENERATABLE = ['random', 'balanced', 'bigram', 'previous', 'position', 'predicted',
               'clustered', 'dispersed']


@pytest.fixture(scope='module')
def baseline(tmp_path_factory):
    """A tiny dense generator: the predictor and the embeddings to cluster."""
    mf = tmp_path_factory.mktemp('baseline') / 'model'
    torch.manual_seed(0)
    TrainModel.main(task='integration_tests:nocandidate', model='transformer/generator',
                    model_file=str(mf), batchsize=8, max_train_steps=30, learningrate=1e-2,
                    optimizer='adam', skip_generation=True, validation_metric='ppl',
                    validation_every_n_steps=30, validation_max_exs=8, short_final_eval=True,
                    **TINY)
    return str(mf)


def hash_agent(tmp_path, baseline, hash_type, **extra):
    args = ['-m', 'hash_generator', '-t', 'integration_tests:nocandidate',
            '-mf', str(tmp_path / f'{hash_type}_model'), '--dict-file', baseline + '.dict',
            '--n-layers', '3', '--embedding-size', '16', '--ffn-size', '32', '--n-heads', '2',
            '--num-experts', '4', '--hash-layers', '0,2', '--hash-type', hash_type,
            '--hash-predictor-model-file', baseline, '--hash-cluster-model-file', baseline]
    for k, v in extra.items():
        if v is None:  # leave the option out entirely
            i = args.index(f"--{k.replace('_', '-')}")
            del args[i : i + 2]
            continue
        args += [f"--{k.replace('_', '-')}", str(v)]
    opt = ParlaiParser(True, True).parse_args(args)
    agent = create_agent(opt)
    agent.model.eval()
    return agent


def encode(agent, texts):
    obs = []
    for t in texts:
        obs.append(agent.observe({'text': t, 'episode_done': True}))
        agent.reset()
    batch = agent.batchify(obs)
    return agent.model.encoder(batch.text_vec)


@pytest.mark.parametrize('hash_type', GENERATABLE)
def test_incremental_generation_equals_full_forward(tmp_path, baseline, hash_type):
    agent = hash_agent(tmp_path, baseline, hash_type)
    model = agent.model
    ys = torch.randint(4, len(agent.dict), (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        enc = encode(agent, ['1 2 3', '4 5 6 7'])
        full = model.output(model.decoder(ys, enc)[0])
        incr = None
        for t in range(ys.size(1)):
            latent, incr = model.decoder(ys[:, : t + 1], enc, incr)
            torch.testing.assert_close(model.output(latent)[:, -1], full[:, t], rtol=1e-4, atol=1e-5)
        # after a beam-style reorder too
        inds = torch.tensor([1, 0])
        enc2, incr2 = model.reorder_encoder_states(enc, inds), model.reorder_decoder_incremental_state(incr, inds)
        ys2 = torch.cat([ys[inds], ys[:, :1]], dim=1)
        step = model.output(model.decoder(ys2, enc2, incr2)[0])[:, -1]
        torch.testing.assert_close(step, model.output(model.decoder(ys2, enc2)[0])[:, -1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('hash_type', GENERATABLE + ['oracle'])
def test_checkpoint_reloads_and_routes_identically(tmp_path, baseline, hash_type):
    extra = {'skip_generation': True} if hash_type == 'oracle' else {}
    agent = hash_agent(tmp_path, baseline, hash_type, **extra)
    path = str(tmp_path / f'{hash_type}_saved')
    agent.save(path)
    assert not any(k.startswith('predictor.') for k in torch.load(path, weights_only=False)['model'])
    # clustered/dispersed must not need their baseline again: the table is saved
    moved = tmp_path / 'moved_baseline'
    if hash_type in ('clustered', 'dispersed'):
        override = {'hash_cluster_model_file': str(moved)}
    else:
        override = {}
    reloaded = create_agent_from_model_file(path, override)
    reloaded.model.eval()
    for name, ffn in agent.model.sparse_ffns().items():
        assert torch.equal(ffn.router.table, reloaded.model.sparse_ffns()[name].router.table), name
    ys = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a = agent.model.decode_forced(encode(agent, ['1 2']), ys)[0]
        b = reloaded.model.decode_forced(encode(reloaded, ['1 2']), ys)[0]
    assert torch.equal(a, b)


def test_oracle_refuses_to_generate(tmp_path, baseline):
    with pytest.raises(OptionError, match='^--hash-type.*cannot generate'):
        hash_agent(tmp_path, baseline, 'oracle', skip_generation=False)
    with pytest.raises(OptionError, match='^--hash-type'):
        hash_agent(tmp_path, baseline, 'oracle', skip_generation=True, interactive_mode=True)
    agent = hash_agent(tmp_path, baseline, 'oracle', skip_generation=True)
    with torch.no_grad(), pytest.raises(OptionError, match='teacher forcing'):
        agent.model.decoder(torch.tensor([[1, 5]]), encode(agent, ['1']), {})


def test_oracle_routes_on_the_label_under_teacher_forcing(tmp_path, baseline):
    agent = hash_agent(tmp_path, baseline, 'oracle', skip_generation=True)
    ys = torch.tensor([[5, 6, 7, 8]])
    ffn = agent.model.decoder.layers[0].ffn
    ffn.take_load()
    with torch.no_grad():
        agent.model.decode_forced(encode(agent, ['1 2']), ys)
    expected = torch.bincount(ffn.router.table[0][ys[0]], minlength=4)
    assert torch.equal(ffn.take_load(), expected)


@pytest.mark.parametrize('hash_type, option', [
    ('clustered', 'hash_cluster_model_file'),
    ('dispersed', 'hash_cluster_model_file'),
    ('predicted', 'hash_predictor_model_file'),
])
@pytest.mark.parametrize('value, problem', [(None, 'needs a trained baseline'),
                                            ('/nonexistent/model', 'does not exist')])
def test_types_without_their_baseline_name_the_option(tmp_path, baseline, hash_type, option,
                                                      value, problem):
    flag = '--' + option.replace('_', '-')
    with pytest.raises(OptionError, match=f'^{flag}: .*{problem}'):
        hash_agent(tmp_path, baseline, hash_type, **{option: value})


def test_predicted_in_the_encoder_names_the_option(tmp_path, baseline):
    with pytest.raises(OptionError, match='^--hash-encoder-layers'):
        hash_agent(tmp_path, baseline, 'predicted', hash_encoder_layers='1')


def test_predicted_baseline_is_frozen_and_not_trained(tmp_path, baseline):
    agent = hash_agent(tmp_path, baseline, 'predicted')
    predictor_params = list(agent.model.predictor.parameters())
    assert predictor_params and not any(p.requires_grad for p in predictor_params)
    optimized = {id(p) for g in agent.optimizer.param_groups for p in g['params']}
    assert not any(id(p) in optimized for p in predictor_params)
    agent.model.train()
    assert not agent.model.predictor.training


def test_multihash_keeps_parameters_of_k_full_experts(tmp_path, baseline):
    plain = hash_agent(tmp_path, baseline, 'random')
    multi = hash_agent(tmp_path, baseline, 'random', multihash=4)
    count = lambda a: sum(p.numel() for n, p in a.model.named_parameters() if 'expert' in n)
    assert count(plain) == count(multi) > 0
    ffn = multi.model.decoder.layers[0].ffn
    assert ffn.router.table.shape[0] == 4
    assert tuple(ffn.experts.expert_w1[0].shape) == (4, 16, 8)
    assert tuple(ffn.experts.expert_w2[0].shape) == (4, 32, 4)


def test_multihash_must_divide_the_sizes(tmp_path, baseline):
    with pytest.raises(OptionError, match='^--multihash'):
        hash_agent(tmp_path, baseline, 'random', multihash=3)


def test_multihash_model_generates_like_its_full_forward(tmp_path, baseline):
    agent = hash_agent(tmp_path, baseline, 'bigram', multihash=2)
    model = agent.model
    ys = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        enc = encode(agent, ['1 2 3'])
        full = model.output(model.decoder(ys, enc)[0])
        incr = None
        for t in range(ys.size(1)):
            latent, incr = model.decoder(ys[:, : t + 1], enc, incr)
            torch.testing.assert_close(model.output(latent)[:, -1], full[:, t], rtol=1e-4, atol=1e-5)


def test_hash_per_layer_same_or_different(tmp_path, baseline):
    same = hash_agent(tmp_path, baseline, 'random', hash_per_layer='same')
    diff = hash_agent(tmp_path, baseline, 'random', hash_per_layer='different')
    t = lambda a, i: a.model.decoder.layers[i].ffn.router.table
    assert torch.equal(t(same, 0), t(same, 2))
    assert not torch.equal(t(diff, 0), t(diff, 2))


def test_layers_sharing_a_table_share_one_plan_per_forward(tmp_path, baseline):
    ys = torch.tensor([[5, 6, 7, 8]])
    for per_layer, expected in (('same', 1), ('different', 2)):
        agent = hash_agent(tmp_path, baseline, 'random', hash_per_layer=per_layer)
        with torch.no_grad():
            agent.model.decode_forced(encode(agent, ['1 2']), ys)
        first, last = agent.model.decoder.layers[0].ffn, agent.model.decoder.layers[2].ffn
        assert first.routing is last.routing
        assert len(first.routing.plans) == expected
        # A device move (.cuda()) copies each router's buffer: the plan is still shared.
        agent.model._apply(lambda t: t.clone())
        assert first.router.table.data_ptr() != last.router.table.data_ptr()
        with torch.no_grad():
            agent.model.decode_forced(encode(agent, ['1 2']), ys)
        assert len(first.routing.plans) == expected


def test_predicted_hashing_trains_on_two_workers_expert_parallel(tmp_path, baseline):
    """Under distributed training ParlAI wraps the loaded baseline in DDP; the predictor must not be."""
    from conftest import run_parlai

    out = str(tmp_path / 'model')
    run_parlai('multiprocessing_train', '--distributed-world-size', '2', '-m', 'hash_generator',
               '-t', 'integration_tests:nocandidate', '-mf', out, '--dict-file', baseline + '.dict',
               '--n-layers', '3', '--embedding-size', '16', '--ffn-size', '32', '--n-heads', '2',
               '--num-experts', '4', '--hash-layers', '0,2', '--hash-type', 'predicted',
               '--hash-predictor-model-file', baseline, '--expert-parallel', 'true', '-bs', '4',
               '--max-train-steps', '2', '-vstep', '2', '--validation-max-exs', '8',
               '--skip-generation', 'true', '-vmt', 'ppl', '--short-final-eval', 'true', cwd=tmp_path)
    state = torch.load(out, weights_only=False)['model']
    assert state['decoder.layers.2.ffn.experts.expert_w1'].shape[0] == 4
    assert not any(k.startswith('predictor.') for k in state)  # the baseline is not saved in it


@pytest.mark.parametrize('hash_type', ['predicted', 'clustered'])
def test_a_baseline_whose_dictionary_orders_tokens_differently_is_refused(tmp_path, baseline, hash_type):
    """Same size, two tokens swapped: its token ids would mean other words."""
    other = tmp_path / 'other'
    shutil.copy(baseline, other)
    shutil.copy(baseline + '.opt', str(other) + '.opt')
    lines = open(baseline + '.dict', encoding='utf-8').read().splitlines()
    lines[4], lines[5] = lines[5], lines[4]  # the first two after the special tokens
    (tmp_path / 'other.dict').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    option = {'predicted': 'hash_predictor_model_file', 'clustered': 'hash_cluster_model_file'}[hash_type]
    with pytest.raises(OptionError, match=f"^--{option.replace('_', '-')}: its dictionary has other tokens "
                                          r"or another order than this model's \(id 4: "):
        hash_agent(tmp_path, baseline, hash_type, **{option: str(other)})


def test_clustered_with_more_experts_than_tokens_names_the_option(tmp_path, baseline):
    with pytest.raises(OptionError, match='^--num-experts: k-means cannot make 64 clusters of'):
        hash_agent(tmp_path, baseline, 'clustered', num_experts=64)
