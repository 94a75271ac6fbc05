"""The hash_generator agent inside ParlAI: placement, decoding, checkpoints, metrics."""

import math
import random

import pytest
import torch
from parlai.agents.transformer.modules import TransformerFFN
from parlai.core.agents import create_agent_from_model_file
from parlai.scripts.train_model import TrainModel

from parlai_hash.errors import OptionError
from parlai_hash.layers import SparseFFN


def _train(model_file, **overrides):
    kwargs = dict(
        task='integration_tests:nocandidate', model='hash_generator', model_file=str(model_file),
        n_layers=3, embedding_size=16, ffn_size=32, n_heads=2, num_experts=4,
        hash_layers='0,2', hash_encoder_layers='1', hash_type='balanced',
        batchsize=8, max_train_steps=40, validation_every_n_steps=40, validation_max_exs=16,
        learningrate=1e-2, optimizer='adam', skip_generation=True, validation_metric='ppl',
        short_final_eval=True,
    )
    kwargs.update(overrides)
    return TrainModel.main(**kwargs)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    mf = tmp_path_factory.mktemp('hash') / 'model'
    # ParlAI shuffles training data with Python's random: seed it too, so the
    # trained model does not depend on which tests ran before.
    random.seed(0)
    torch.manual_seed(0)
    valid, test = _train(mf)
    return mf, valid


@pytest.fixture
def agent(trained):
    mf, _ = trained
    a = create_agent_from_model_file(
        str(mf), {'inference': 'greedy', 'beam_length_penalty': 0.0, 'skip_generation': False})
    a.model.eval()
    return a


def _batch(agent, texts):
    obs = []
    for t in texts:
        o = agent.observe({'text': t, 'episode_done': True})
        obs.append(o)
        agent.reset()
    return agent.batchify(obs)


def test_sparse_layers_are_where_asked(agent):
    dec = agent.model.decoder.layers
    assert isinstance(dec[0].ffn, SparseFFN) and isinstance(dec[2].ffn, SparseFFN)
    assert type(dec[1].ffn) is TransformerFFN
    enc = agent.model.encoder.layers
    assert isinstance(enc[1].ffn, SparseFFN) and type(enc[0].ffn) is TransformerFFN
    names = [n for n, _ in agent.model.named_parameters() if 'expert' in n]
    assert 'decoder.layers.0.ffn.experts.expert_w1' in names
    assert agent.model.decoder.layers[0].ffn.experts.expert_w1.shape == (4, 16, 32)
    assert set(agent.model.sparse_ffns()) == {'dec0', 'dec2', 'enc1'}


def test_sparse_layers_found_once_and_copied_with_the_model(agent):
    import copy

    decoder = agent.model.decoder
    assert decoder.sparse_ffns() is decoder.sparse_ffns()  # cached: no module walk per step
    twin = copy.deepcopy(agent.model)
    assert twin.decoder.sparse_ffns()['dec2'] is twin.decoder.layers[2].ffn
    assert twin.decoder.sparse_ffns()['dec2'] is not decoder.layers[2].ffn
    batch = _batch(agent, ['1 2 3'])
    with torch.no_grad():
        twin.decoder(batch.text_vec, twin.encoder(batch.text_vec))
    assert twin.decoder.layers[2].ffn.routing.tokens.shape == batch.text_vec.shape


def test_training_reports_expert_load(trained):
    _, valid = trained
    for name in ('dec0', 'dec2', 'enc1'):
        assert 1.0 <= float(valid[f'{name}_load_max']) <= 4.0
        assert 0.0 < float(valid[f'{name}_load_ent']) <= 1.0


def test_incremental_decoding_equals_full_forward(agent):
    model = agent.model
    batch = _batch(agent, ['1 2 3 4', '5 6 7 8 9 10'])
    gen = torch.Generator().manual_seed(0)
    ys = torch.randint(4, len(agent.dict), (2, 7), generator=gen)
    with torch.no_grad():
        enc = model.encoder(batch.text_vec)
        full = model.output(model.decoder(ys, enc)[0])
        table = model.decoder.layers[2].ffn.router.table[0]
        ffn = model.decoder.layers[2].ffn
        assert torch.equal(ffn.take_load(), torch.bincount(table[ys].flatten(), minlength=4))
        incr = None
        for t in range(ys.size(1)):
            latent, incr = model.decoder(ys[:, : t + 1], enc, incr)
            torch.testing.assert_close(model.output(latent)[:, -1], full[:, t], rtol=1e-4, atol=1e-5)
            # the router saw the true newest token, not a stale position
            expected = torch.bincount(table[ys[:, t]], minlength=4)
            assert torch.equal(ffn.take_load(), expected)
        # beam search reorders the incremental state: still the full forward
        inds = torch.tensor([1, 1])
        enc2 = model.reorder_encoder_states(enc, inds)
        incr2 = model.reorder_decoder_incremental_state(incr, inds)
        ys2 = torch.cat([ys[inds], ys[:1, :1].expand(2, 1)], dim=1)
        latent, _ = model.decoder(ys2, enc2, incr2)
        full2 = model.output(model.decoder(ys2, enc2)[0])
        torch.testing.assert_close(model.output(latent)[:, -1], full2[:, -1], rtol=1e-4, atol=1e-5)


def _forced_logprob(model, enc, tokens):
    logits, preds = model.decode_forced(enc, tokens)
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return lp.sum().item(), preds, logits


def _assert_argmax_up_to_ties(logits, preds, tokens):
    """Generated tokens are the forced argmax, except at float-level ties."""
    for t in (preds != tokens).nonzero().tolist():
        row = logits[t[0], t[1]]
        assert (row[preds[t[0], t[1]]] - row[tokens[t[0], t[1]]]).abs() < 1e-4


def _strip_start(agent, tokens):
    return tokens[1:] if tokens[0].item() == agent.START_IDX else tokens


def test_greedy_generation_equals_teacher_forced_argmax(agent):
    batch = _batch(agent, ['1 2 3', '4 5 6 7 8'])
    max_ts = 16
    with torch.no_grad():
        hyps, _ = agent._generate(batch, beam_size=1, max_ts=max_ts)
        enc = agent.model.encoder(batch.text_vec)
        for i, (tokens, score, _) in enumerate(hyps):
            tokens = _strip_start(agent, tokens).unsqueeze(0)
            enc_i = agent.model.reorder_encoder_states(enc, torch.tensor([i]))
            logprob, preds, logits = _forced_logprob(agent.model, enc_i, tokens)
            if tokens.size(1) < max_ts:
                _assert_argmax_up_to_ties(logits, preds, tokens)
                assert logprob == pytest.approx(float(score), abs=1e-3)
            else:
                # Hit max_ts: ParlAI overwrote the last token with EOS.
                _assert_argmax_up_to_ties(logits[:, :-1], preds[:, :-1], tokens[:, :-1])


def test_beam_hypothesis_score_equals_forced_logprob(trained):
    mf, _ = trained
    agent = create_agent_from_model_file(
        str(mf), {'inference': 'beam', 'beam_size': 3, 'beam_length_penalty': 0.0,
                  'skip_generation': False})
    agent.model.eval()
    batch = _batch(agent, ['3 4 5 6'])
    max_ts = 10
    with torch.no_grad():
        hyps, _ = agent._generate(batch, beam_size=3, max_ts=max_ts)
        tokens, score, _ = hyps[0]
        tokens = _strip_start(agent, tokens)
        enc = agent.model.encoder(batch.text_vec)
        logprob, _, logits = _forced_logprob(agent.model, enc, tokens.unsqueeze(0))
    if tokens.size(0) < max_ts:
        assert logprob == pytest.approx(float(score), abs=1e-3)
    else:
        # At max_ts ParlAI ends the hypothesis with END in place of the token
        # the beam chose last, whose score it keeps: every earlier position must
        # match, and the last score must be some token's log-probability there.
        lp = torch.log_softmax(logits[0].float(), dim=-1)
        prefix = lp[:-1].gather(-1, tokens[:-1].unsqueeze(-1)).sum()
        assert (lp[-1] - (float(score) - prefix)).abs().min() < 1e-3


def test_checkpoint_round_trip_routes_identically(trained, tmp_path):
    mf, _ = trained
    a = create_agent_from_model_file(str(mf))
    # Change the dictionary counts: a reloaded model must keep its saved table,
    # not rebuild one from the counts it sees now.
    for tok in list(a.dict.freq):
        a.dict.freq[tok] = 1
    b = create_agent_from_model_file(str(mf))
    for name, ffn in a.model.sparse_ffns().items():
        assert torch.equal(ffn.router.table, b.model.sparse_ffns()[name].router.table)
    state = torch.load(str(mf), map_location='cpu', weights_only=False)['model']
    assert any(k.endswith('router.table') for k in state)
    a.model.eval(), b.model.eval()
    batch = _batch(a, ['1 2 3'])
    ys = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        la = a.model.decode_forced(a.model.encoder(batch.text_vec), ys)[0]
        lb = b.model.decode_forced(b.model.encoder(batch.text_vec), ys)[0]
    assert torch.equal(la, lb)


def test_checkpoint_with_other_vocabulary_size_names_the_option(trained):
    mf, _ = trained
    a = create_agent_from_model_file(str(mf))
    state = {k: v.clone() for k, v in a.model.state_dict().items()}
    state['decoder.layers.0.ffn.router.table'] = state['decoder.layers.0.ffn.router.table'][:, :-3]
    with pytest.raises(OptionError, match='^--dict-file'):
        a.load_state_dict(state)


def test_k1_model_matches_dense_transformer(tmp_path):
    """With one expert, a hash layer is exactly ParlAI's dense layer."""
    mf = tmp_path / 'k1'
    _train(mf, num_experts=1, max_train_steps=2, hash_layers='1', hash_encoder_layers='')
    hash_agent = create_agent_from_model_file(str(mf))
    from parlai.core.agents import create_agent
    opt = dict(hash_agent.opt)
    opt.update(model='transformer/generator', model_file=None, init_model=None)
    dense = create_agent(opt)
    state = {}
    for k, v in hash_agent.model.state_dict().items():
        if '.ffn.router.' in k:
            continue
        for ours, theirs, transpose in (('experts.expert_w1', 'lin1.weight', True),
                                        ('experts.expert_b1', 'lin1.bias', False),
                                        ('experts.expert_w2', 'lin2.weight', True),
                                        ('experts.expert_b2', 'lin2.bias', False)):
            if k.endswith(ours):
                k, v = k.replace(ours, theirs), (v[0].t() if transpose else v[0])
        state[k] = v
    dense.model.load_state_dict(state)
    hash_agent.model.eval(), dense.model.eval()
    batch = _batch(hash_agent, ['1 2 3 4'])
    ys = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        lh = hash_agent.model.decode_forced(hash_agent.model.encoder(batch.text_vec), ys)[0]
        ld = dense.model.decode_forced(dense.model.encoder(batch.text_vec), ys)[0]
    torch.testing.assert_close(lh, ld, rtol=1e-5, atol=1e-5)
    assert not math.isnan(lh.sum().item())


def test_padding_in_a_batch_does_not_change_real_tokens(agent):
    """Padding skips the experts; real positions match unpadded forwards exactly."""
    model = agent.model
    batch = _batch(agent, ['1 2 3', '4 5 6 7 8 9'])
    short, long = torch.tensor([[5, 6]]), torch.tensor([[7, 8, 9, 10, 5]])
    ys = torch.full((2, 5), agent.NULL_IDX)
    ys[0, :2], ys[1] = short[0], long[0]
    load = model.decoder.layers[0].ffn.take_load  # what earlier forwards counted goes first
    load()
    with torch.no_grad():
        enc = model.encoder(batch.text_vec)
        both = model.decode_forced(enc, ys)[0]
        # decoder inputs: the start token, then each label but its last token; padding is not counted
        assert int(load().sum()) == 3 + 5
        for i, y in enumerate((short, long)):
            enc_i = model.encoder(batch.text_vec[i : i + 1, : int((batch.text_vec[i] != agent.NULL_IDX).sum())])
            alone = model.decode_forced(enc_i, y)[0]
            torch.testing.assert_close(both[i, : y.size(1)], alone[0], rtol=1e-4, atol=1e-5)
        assert int(load().sum()) == 2 + 5  # both forwards counted until taken
