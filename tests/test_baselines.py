"""Switch, Token Switch and BASE: routers, losses, capacity, assignment, agents."""

import math

import pytest
import torch
import torch.nn.functional as F
from parlai.core.agents import create_agent, create_agent_from_model_file
from parlai.core.params import ParlaiParser
from scipy.optimize import linear_sum_assignment

from parlai_hash.errors import OptionError
from parlai_hash.options import SparseConfig
from parlai_hash.layers import SparseFFN
from parlai_hash.metrics import expert_load
from parlai_hash.routing import (BalancedAssignmentRouter, RoutingContext, SwitchRouter,
                                 balanced_assignment, load_balancing_loss)
from parlai_hash.routing.assignment import expert_capacities
from parlai_hash.routing.route import capacity_keep

D, K, V = 8, 3, 30


def ctx_for(tokens, pad=0):
    return RoutingContext.full(tokens, pad)


def test_load_balancing_loss_hand_computed():
    probs = torch.tensor([[.7, .2, .1], [.1, .8, .1], [.6, .3, .1], [.2, .2, .6]])
    experts = probs.argmax(-1)  # 0, 1, 0, 2 -> f = .5, .25, .25
    # P = mean probs = .4, .375, .225; K * sum f*P = 3 * (.2 + .09375 + .05625) = 1.05
    assert load_balancing_loss(probs, experts, 3).item() == pytest.approx(1.05)
    uniform = torch.full((6, 3), 1 / 3)
    assert load_balancing_loss(uniform, torch.tensor([0, 1, 2, 0, 1, 2]), 3).item() == pytest.approx(1.0)


def test_capacity_keeps_first_tokens_of_each_expert_and_never_padding():
    experts = torch.tensor([[0, 0, 0, 1, 0, 2, 0]])
    real = torch.tensor([[True, True, True, True, True, True, False]])
    keep = capacity_keep(experts, real, 3, capacity=2)
    assert keep.tolist() == [[True, True, False, True, False, True, False]]


def switch(**kw):
    args = dict(dim=D, num_experts=K, vocab_size=V, capacity_factor=0.0)
    args.update(kw)
    return SwitchRouter(**args)


def test_switch_router_gradients_flow_through_gates_and_loss():
    torch.manual_seed(0)
    ffn = SparseFFN(SparseConfig(K), 'dec0', switch(), D, 16)
    ffn.train()
    tokens = torch.randint(1, V, (2, 5))
    ffn.routing = ctx_for(tokens)
    x = torch.randn(2, 5, D, requires_grad=True)
    y = ffn(x)
    (y.pow(2).sum() + ffn.last_route.aux_loss).backward()
    assert ffn.router.router_weight.grad is not None
    assert ffn.router.router_weight.grad.abs().sum() > 0
    gate = ffn.last_route.gates
    assert torch.all((gate > 0) & (gate <= 1))


def expert_reference(ffn, x, experts, activation):
    """Each token through its routed expert, from the stacked weights directly."""
    ex = ffn.experts
    flat, ids = x.reshape(-1, D), experts.reshape(-1)
    out = torch.stack([
        activation(flat[i] @ ex.expert_w1[e] + ex.expert_b1[e]) @ ex.expert_w2[e] + ex.expert_b2[e]
        for i, e in enumerate(ids.tolist())
    ])
    return out.reshape(x.shape)


def test_switch_output_is_the_gate_times_the_routed_expert_and_trains_the_router():
    torch.manual_seed(11)
    router = switch(capacity_factor=0.6, load_balance_weight=0.0)
    ffn = SparseFFN(SparseConfig(K), 'dec0', router, D, 16, activation='gelu')
    ffn.train()
    tokens, x = capacity_batch(11)
    ffn.routing = ctx_for(tokens)
    y = ffn(x)
    route = ffn.last_route
    keep, gates, experts = route.keep.squeeze(-1), route.gates.squeeze(-1), route.experts.squeeze(-1)
    assert keep is not None and (~keep & (tokens != 0)).any() and keep.any()
    probs = (x @ router.router_weight.t()).softmax(-1)
    torch.testing.assert_close(gates, probs.max(-1).values)  # gate: top-1 probability
    assert torch.all(gates < 0.9)  # far from 1: an ungated output would differ
    expected = gates.unsqueeze(-1) * expert_reference(ffn, x, experts, F.gelu)
    torch.testing.assert_close(y[keep], expected[keep], rtol=1e-5, atol=1e-6)
    assert torch.all(y[~keep] == 0)
    # no balancing loss: the router learns only through the gate
    assert route.aux_loss.item() == 0
    ffn.zero_grad()
    y.pow(2).sum().backward()
    grad = router.router_weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_base_output_is_the_sigmoid_affinity_times_the_routed_expert():
    """The BASE router's docstring: the layer computes σ(h·c_e)·expert_e(h) (plus the residual)."""
    torch.manual_seed(12)
    router = BalancedAssignmentRouter(D, K)
    ffn = SparseFFN(SparseConfig(K), 'dec0', router, D, 16, activation='relu')
    tokens, x = capacity_batch(12)
    real = tokens != 0
    for train in (True, False):
        ffn.train(train)
        ffn.routing = ctx_for(tokens)
        y = ffn(x)
        route = ffn.last_route
        assert route.keep is None
        affinity = (x @ router.centroids.t()).gather(-1, route.experts).squeeze(-1)
        torch.testing.assert_close(route.gates.squeeze(-1), torch.sigmoid(affinity))
        expected = torch.sigmoid(affinity).unsqueeze(-1) * expert_reference(ffn, x, route.experts, F.relu)
        torch.testing.assert_close(y[real], expected[real], rtol=1e-5, atol=1e-6)
        assert torch.all(y[~real] == 0)
        # BASE has no auxiliary loss: its centroids learn only through the gate
        assert route.aux_loss is None
        ffn.zero_grad()
        y.pow(2).sum().backward()
        grad = router.centroids.grad
        assert grad is not None and grad.abs().sum() > 0


def test_switch_agent_router_learns_from_the_task_loss_alone(agent_for):
    agent = agent_for('switch_generator', load_balance_weight=0)
    batch = batch_of(agent, [('1 2 3', '4 5 6'), ('7 8', '9 1 2 3')])
    agent.model.train()
    agent.model.zero_grad()
    agent.compute_loss(batch).backward()
    for name, ffn in agent.model.sparse_ffns().items():
        grad = ffn.router.router_weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def expected_keep(experts, real, num_experts, factor):
    """The documented rule, computed by hand: capacity = ceil(factor * T / K) over the
    batch's T real tokens; each expert keeps its first ``capacity`` real tokens in
    token order (row-major over ``[B, T]``); padding is never kept."""
    capacity = max(1, math.ceil(factor * int(real.sum()) / num_experts))
    taken = [0] * num_experts
    keep = []
    for e, r in zip(experts.reshape(-1).tolist(), real.reshape(-1).tolist()):
        ok = bool(r) and taken[e] < capacity
        taken[e] += ok
        keep.append(ok)
    return torch.tensor(keep).reshape(experts.shape), capacity, taken


def capacity_batch(seed):
    """Two rows, the first with 2 padding tokens: T = 14 real tokens of 16. With
    factor 0.6 and K = 3 the capacity is ceil(8.4 / 3) = 3 (it would be 4 if the
    padding were counted)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (2, 8), generator=g)
    tokens[0, 6:] = 0
    return tokens, torch.randn(2, 8, D, generator=g)


def assert_capacity_exact(route, router, tokens, hidden, factor):
    real = tokens != 0
    experts = route.experts.squeeze(-1)  # one choice per token
    # the routing itself, independently: argmax of the router logits
    assert torch.equal(experts, (hidden @ router.router_weight.t()).argmax(-1))
    keep, capacity, taken = expected_keep(experts, real, K, factor)
    assert capacity == 3
    # the batch must exercise the rule: some expert over capacity, one filled to it
    assert (real & ~keep).any() and capacity in taken
    assert route.keep.squeeze(-1).tolist() == keep.tolist()
    dropped = int((real & ~keep).sum()) / int(real.sum())
    assert route.stats['dropped'] == pytest.approx(dropped, abs=1e-12)


def test_switch_capacity_drops_are_counted_and_skip_the_ffn():
    torch.manual_seed(1)
    router = switch(capacity_factor=0.6)
    router.train()
    ffn = SparseFFN(SparseConfig(K), 'dec0', router, D, 16)
    ffn.train()
    tokens, x = capacity_batch(1)
    ffn.routing = ctx_for(tokens)
    y = ffn(x)
    assert_capacity_exact(ffn.last_route, router, tokens, x, 0.6)
    keep = ffn.last_route.keep.squeeze(-1)
    assert torch.all(y[~keep] == 0)  # dropped tokens and padding: only the residual carries them
    assert torch.all(y[keep].abs().sum(-1) > 0)
    router.eval()
    assert ffn.router(ctx_for(tokens), x).keep is None  # evaluation is dropless


def test_token_switch_ignores_the_hidden_state():
    torch.manual_seed(2)
    router = switch(source='token')
    tokens = torch.randint(1, V, (2, 6))
    a = router(ctx_for(tokens), torch.randn(2, 6, D)).experts
    b = router(ctx_for(tokens), 100 * torch.randn(2, 6, D)).experts
    assert torch.equal(a, b)
    same_token = torch.full((1, 4), 7)
    assert len(router(ctx_for(same_token), torch.randn(1, 4, D)).experts.unique()) == 1
    hidden_router = switch()
    assert not torch.equal(hidden_router(ctx_for(tokens), torch.randn(2, 6, D)).experts,
                           hidden_router(ctx_for(tokens), torch.randn(2, 6, D)).experts)


@pytest.mark.parametrize('T, k', [(12, 3), (50, 7), (64, 8), (33, 5), (17, 4)])
def test_auction_is_exactly_balanced_and_near_optimal(T, k):
    scores = torch.randn(T, k, generator=torch.Generator().manual_seed(T * k), dtype=torch.float64)
    assigned = balanced_assignment(scores, eps=1e-5)
    caps = expert_capacities(T, k)
    assert torch.equal(torch.bincount(assigned, minlength=k), caps)
    slots = torch.repeat_interleave(torch.arange(k), caps)
    cost = scores[:, slots].numpy()
    rows, cols = linear_sum_assignment(cost, maximize=True)
    optimum = cost[rows, cols].sum()
    got = scores[torch.arange(T), assigned].sum().item()
    span = (scores.max() - scores.min()).item()
    assert got <= optimum + 1e-9
    assert optimum - got <= T * 1e-5 * span + 1e-6


def test_base_router_balances_in_training_and_is_greedy_in_eval():
    torch.manual_seed(3)
    router = BalancedAssignmentRouter(D, 4)
    tokens = torch.randint(1, V, (2, 9))
    tokens[1, 7:] = 0  # padding is not assigned
    hidden = torch.randn(2, 9, D)
    router.train()
    route = router(ctx_for(tokens), hidden)
    real = tokens != 0
    assert torch.bincount(route.experts[real].reshape(-1), minlength=4).tolist() == expert_capacities(16, 4).tolist()
    router.eval()
    route = router(ctx_for(tokens), hidden)
    scores = hidden @ router.centroids.t()
    assert torch.equal(route.experts, scores.argmax(-1, keepdim=True))
    torch.testing.assert_close(route.gates, torch.sigmoid(scores.max(-1, keepdim=True).values))



@pytest.fixture
def agent_for(tmp_path, dict_file):
    def make(model, **extra):
        return _agent(tmp_path, dict_file, model, **extra)
    return make


def _agent(tmp_path, dict_file, model, **extra):
    args = ['-m', model, '-t', 'integration_tests:nocandidate', '-mf', str(tmp_path / model),
            '--dict-file', dict_file,
            '--n-layers', '2', '--embedding-size', '16', '--ffn-size', '32', '--n-heads', '2',
            '--num-experts', '4', '--sparse-layers', '0,1', '-bs', '4', '--optimizer', 'adam']
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return create_agent(ParlaiParser(True, True).parse_args(args))


def batch_of(agent, pairs):
    obs = []
    for text, label in pairs:
        obs.append(agent.observe({'text': text, 'labels': [label], 'episode_done': True}))
        agent.reset()
    return agent.batchify(obs)


@pytest.mark.parametrize('model, extra', [
    ('switch_generator', {}),
    ('switch_generator', {'switch_input': 'token'}),
    ('base_generator', {}),
])
def test_agents_train_report_and_reload(tmp_path, agent_for, model, extra):
    agent = agent_for(model, **extra)
    batch = batch_of(agent, [('1 2 3', '4 5 6'), ('7 8', '9 1 2 3')])
    agent.train_step(batch)
    report = agent.report()
    assert 'dec0_load_max' in report and 'dec1_load_ent' in report
    if model == 'switch_generator':
        assert 'lb_loss' in report and 'dec0_dropped' in report
    path = str(tmp_path / 'saved')
    agent.save(path)
    again = create_agent_from_model_file(path)
    agent.model.eval(), again.model.eval()
    ys = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        a = agent.model.decode_forced(agent.model.encoder(batch.text_vec), ys.expand(2, -1))[0]
        b = again.model.decode_forced(again.model.encoder(batch.text_vec), ys.expand(2, -1))[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize('model', ['switch_generator', 'base_generator'])
def test_incremental_decoding_equals_full_forward(agent_for, model):
    agent = agent_for(model)
    agent.model.eval()
    batch = batch_of(agent, [('1 2 3', '4'), ('5 6', '7')])
    ys = torch.randint(4, len(agent.dict), (2, 6), generator=torch.Generator().manual_seed(0))
    m = agent.model
    with torch.no_grad():
        enc = m.encoder(batch.text_vec)
        full = m.output(m.decoder(ys, enc)[0])
        incr = None
        for t in range(ys.size(1)):
            latent, incr = m.decoder(ys[:, : t + 1], enc, incr)
            torch.testing.assert_close(m.output(latent)[:, -1], full[:, t], rtol=1e-4, atol=1e-5)


def test_training_loss_includes_the_balancing_loss_only_as_its_own_metric(agent_for):
    agent = agent_for('switch_generator', load_balance_weight=0.5)
    batch = batch_of(agent, [('1 2 3', '4 5 6'), ('7 8', '9 1 2 3')])
    agent.model.train()
    loss = agent.compute_loss(batch)
    aux = sum(f.last_route.aux_loss for f in agent.model.sparse_ffns().values())
    assert aux.item() > 0.5 * 0.9  # K*sum f*P >= 1 per layer, times the weight
    assert float(agent.report()['lb_loss']) == pytest.approx(aux.item(), rel=1e-5)
    lm_loss = sum(agent._local_metrics['loss'], None).value()  # what ParlAI reports as loss
    assert lm_loss == pytest.approx(loss.item() - aux.item(), rel=1e-4)


@pytest.mark.parametrize('option, value', [('capacity_factor', -1), ('load_balance_weight', -0.1)])
def test_negative_switch_options_name_the_option(agent_for, option, value):
    with pytest.raises(OptionError, match=f"^--{option.replace('_', '-')}"):
        agent_for('switch_generator', **{option: value})


def test_router_z_loss_adds_its_weighted_term():
    torch.manual_seed(5)
    tokens = torch.randint(1, V, (2, 6))
    hidden = torch.randn(2, 6, D)
    plain, with_z = switch(), switch(z_loss_weight=0.1)
    with_z.load_state_dict(plain.state_dict())
    logits = hidden @ plain.router_weight.t()
    z = torch.logsumexp(logits.reshape(-1, K), -1).pow(2).mean()
    diff = with_z(ctx_for(tokens), hidden).aux_loss - plain(ctx_for(tokens), hidden).aux_loss
    assert diff.item() == pytest.approx(0.1 * z.item(), rel=1e-5)


def test_router_jitter_only_in_training():
    torch.manual_seed(6)
    router = switch(jitter=0.5)
    tokens = torch.randint(1, V, (4, 32))
    hidden = torch.randn(4, 32, D)
    router.eval()
    assert torch.equal(router(ctx_for(tokens), hidden).gates, router(ctx_for(tokens), hidden).gates)
    router.train()
    assert not torch.equal(router(ctx_for(tokens), hidden).gates, router(ctx_for(tokens), hidden).gates)


def test_eval_capacity_factor_drops_in_evaluation_when_asked():
    torch.manual_seed(7)
    router = switch(capacity_factor=5.0, eval_capacity_factor=0.6)
    router.eval()
    tokens, hidden = capacity_batch(7)
    route = router(ctx_for(tokens), hidden)
    assert route.keep is not None
    assert_capacity_exact(route, router, tokens, hidden, 0.6)


def test_bad_auction_eps_names_the_option(agent_for):
    with pytest.raises(OptionError, match='^--base-auction-eps'):
        agent_for('base_generator', base_auction_eps=0)


@pytest.mark.parametrize('model', ['switch_generator', 'base_generator'])
def test_reported_load_sums_the_counts_of_every_batch(agent_for, model):
    """The logged load describes the whole report window: counts summed over batches."""
    agent = agent_for(model)
    batches = [[('1 2 3', '4 5 6'), ('7 8', '9 1 2 3')],
               [('3 3 3 3 3', '2'), ('9', '8 7 6 5 4 3 2 1')]]
    # Observed before training: agent.reset() (between observations) clears the metrics.
    observed = []
    for pairs in batches:
        observed.append([])
        for text, label in pairs:
            observed[-1].append(agent.observe({'text': text, 'labels': [label], 'episode_done': True}))
            agent.reset()
    total, per_batch = {}, []
    for obs in observed:
        agent.batch_act(obs)  # one training step, as the training loop runs it
        # recounted from each layer's route: real tokens, every choice
        counts = {n: torch.bincount(f.last_route.experts[f.routing.mask].flatten(), minlength=f.num_experts)
                  for n, f in agent.model.sparse_ffns().items()}
        per_batch.append(counts)
        for n, c in counts.items():
            total[n] = total.get(n, 0) + c
    report = agent.report()
    for name, counts in total.items():
        want = expert_load(counts.tolist())
        assert float(report[f'{name}_load_max']) == pytest.approx(want['max'])
        assert float(report[f'{name}_load_ent']) == pytest.approx(want['entropy'])
    # the check means something: the second batch changed the summary of some layer
    first = {n: expert_load(c.tolist()) for n, c in per_batch[0].items()}
    assert any(first[n] != expert_load(total[n].tolist()) for n in total)
