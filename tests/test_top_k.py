"""Top-k routing: dispatch against a per-token reference, hash top-k tables and gates, Switch top-k."""

import math

import pytest
import torch
import torch.nn.functional as F

from parlai_hash.dispatch import DispatchPlan
from parlai_hash.experts import ExpertFFN
from parlai_hash.errors import OptionError
from parlai_hash.grouped_gemm import grouped_mm_available
from parlai_hash.options import SparseConfig
from parlai_hash.layers import SparseFFN
from parlai_hash.routing import HashRouter, RoutingContext, SwitchRouter, TableInputs
from parlai_hash.routing.hash_router import make_hash_function
from parlai_hash.routing.route import capacity_keep

D, H, K, V, PAD = 8, 12, 5, 30, 0


def batch(seed, b=3, t=7):
    """Tokens with padding, hidden states, and the gradient arriving at the output."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (b, t), generator=g)
    tokens[0, t - 2:] = PAD
    tokens[2, 3:] = PAD
    x = torch.randn(b, t, D, generator=g, dtype=torch.float64)
    return tokens, x, torch.randn(b, t, D, generator=g, dtype=torch.float64)


def per_token_reference(experts_module, x, experts, gates, keep):
    """Each token, each of its k choices, one at a time: Σ_j gate_j · expert_{e_j}(x)."""
    w1, b1, w2, b2 = (experts_module.expert_w1, experts_module.expert_b1,
                      experts_module.expert_w2, experts_module.expert_b2)
    rows = []
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            out = x.new_zeros(x.shape[-1])
            for j in range(experts.shape[-1]):
                if keep[b, t, j]:
                    e = int(experts[b, t, j])
                    h = torch.relu(x[b, t] @ w1[e] + b1[e])
                    out = out + gates[b, t, j] * (h @ w2[e] + b2[e])
            rows.append(out)
    return torch.stack(rows).reshape(x.shape)


def gradients(module, x, y, grad_out, extra_loss=None):
    """Output, and the gradient of every parameter and of the input."""
    module.zero_grad()
    x.grad = None
    loss = (y * grad_out).sum()
    if extra_loss is not None:
        loss = loss + extra_loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return y.detach(), x.grad.clone(), grads


def assert_all_close(got, want):
    y, dx, grads = got
    y_ref, dx_ref, grads_ref = want
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-5, atol=1e-7)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-5, atol=1e-7, msg=name)


# ------------------------------------------------------------- hash top-k


def table_inputs(vocab=V):
    counts = 1000.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    counts[:2] = 0
    return TableInputs(vocab_size=vocab, n_positions=16, token_counts=counts)


def hash_layer(k, gates, hash_type='balanced'):
    table = HashRouter.build_tables(hash_type, K, 3, table_inputs(), experts_per_token=k)
    router = HashRouter(hash_type, K, 3, table, experts_per_token=k, gates=gates, dim=D)
    return SparseFFN(SparseConfig(K, experts_per_token=k), 'dec0', router, D, H).double()


def learned_gates_reference(weight, x, experts):
    """sqrt(softplus(W·h)) at the table's experts, normalised over them (in float32, as the layer)."""
    scores = x.float() @ weight.float().t()
    w = F.softplus(scores.gather(-1, experts)).sqrt()
    return (w / w.sum(-1, keepdim=True)).to(x.dtype)


@pytest.mark.parametrize('k, gates', [(2, 'learned'), (3, 'learned'), (2, 'uniform')])
def test_hash_top_k_equals_the_per_token_reference_with_every_gradient(k, gates):
    torch.manual_seed(0)
    ffn = hash_layer(k, gates)
    ffn.train()
    tokens, x, grad_out = batch(1)
    ffn.routing = RoutingContext.full(tokens, PAD)
    x = x.requires_grad_(True)
    got = gradients(ffn, x, ffn(x), grad_out)

    experts = ffn.router.table[0][tokens]  # [B, T, k] straight from the table
    assert torch.equal(ffn.last_route.experts, experts)
    assert all(len(set(row)) == k for row in experts.reshape(-1, k).tolist())
    keep = (tokens != PAD).unsqueeze(-1).expand_as(experts)
    if gates == 'learned':
        g = learned_gates_reference(ffn.router.gate.weight, x, experts)
    else:
        g = torch.full(experts.shape, 1 / k, dtype=x.dtype)
    want = gradients(ffn, x, per_token_reference(ffn.experts, x, experts, g, keep), grad_out)
    assert_all_close(got, want)
    y, dx, grads = got
    assert torch.all(y[tokens == PAD] == 0) and torch.all(dx[tokens == PAD] == 0)
    if gates == 'learned':
        assert grads['router.gate.weight'].abs().sum() > 0  # the gate learns from the task loss
        assert not torch.allclose(ffn.last_route.gates, torch.full_like(g, 1 / k))


def test_learned_gates_never_change_which_experts_run():
    ffn = hash_layer(2, 'learned')
    tokens, x, _ = batch(2)
    ffn.routing = RoutingContext.full(tokens, PAD)
    before = ffn.router(ffn.routing, x)
    with torch.no_grad():
        ffn.router.gate.weight.mul_(50).add_(1)
    after = ffn.router(ffn.routing, 10 * x)
    assert torch.equal(before.experts, after.experts)
    assert not torch.allclose(before.gates, after.gates)
    torch.testing.assert_close(after.gates.sum(-1), torch.ones(after.gates.shape[:-1], dtype=x.dtype))


def test_hash_layers_sharing_a_top_k_table_share_one_plan():
    torch.manual_seed(1)
    first, second = hash_layer(2, 'learned'), hash_layer(2, 'learned')
    tokens, x, _ = batch(3)
    ctx = RoutingContext.full(tokens, PAD)
    first.routing = second.routing = ctx
    first(x), second(x)
    assert len(ctx.plans) == 1


def test_load_counts_every_choice_of_real_tokens_on_every_forward_until_taken():
    from parlai_hash.layers import take_loads
    torch.manual_seed(2)
    ffn = hash_layer(2, 'uniform')
    assert ffn.load.dtype == torch.long and ffn.load.shape == (K,)
    assert 'load' not in ffn.state_dict()  # a statistic of the run: not in checkpoints
    expected, real_tokens = torch.zeros(K, dtype=torch.long), 0
    for seed in (4, 5):
        tokens, x, _ = batch(seed)
        ffn.routing = RoutingContext.full(tokens, PAD)
        with torch.no_grad():
            ffn(x)
        real = ffn.router.table[0][tokens][tokens != PAD]  # [real tokens, k]
        expected += torch.bincount(real.flatten(), minlength=K)
        real_tokens += int((tokens != PAD).sum())
    (name, load), = take_loads({'dec0': ffn}).items()  # both forwards, then start again
    assert name == 'dec0' and torch.equal(load, expected) and int(load.sum()) == 2 * real_tokens
    assert torch.equal(ffn.take_load(), torch.zeros(K, dtype=torch.long))


# ---------------------------------------------------------- Switch top-k


def expected_keep_top_k(experts, real, capacity):
    """The documented rule by hand: every token's first choice (in token order)
    before any second choice; padding never kept."""
    taken = [0] * K
    keep = torch.zeros(experts.shape, dtype=torch.bool)
    b, t, k = experts.shape
    for j in range(k):
        for i in range(b):
            for p in range(t):
                e = int(experts[i, p, j])
                if real[i, p] and taken[e] < capacity:
                    taken[e] += 1
                    keep[i, p, j] = True
    return keep


def switch_layer(k, capacity_factor, load_balance_weight=0.1):
    router = SwitchRouter(D, K, V, capacity_factor=capacity_factor,
                          load_balance_weight=load_balance_weight, experts_per_token=k)
    return SparseFFN(SparseConfig(K, experts_per_token=k), 'dec0', router, D, H).double()


@pytest.mark.parametrize('k, capacity_factor', [(2, 0.0), (2, 0.7), (3, 0.8)])
def test_switch_top_k_equals_the_per_token_reference_with_every_gradient(k, capacity_factor):
    torch.manual_seed(2)
    ffn = switch_layer(k, capacity_factor)
    ffn.train()
    tokens, x, grad_out = batch(4)
    real = tokens != PAD
    ffn.routing = RoutingContext.full(tokens, PAD)
    x = x.requires_grad_(True)
    y = ffn(x)
    route = ffn.last_route
    got = gradients(ffn, x, y, grad_out, route.aux_loss)

    router = ffn.router
    logits = x.float() @ router.router_weight.float().t() + router.router_bias.float()
    probs = logits.softmax(-1)
    top, experts = probs.topk(k, dim=-1)
    assert torch.equal(route.experts, experts)
    gates = (top / top.sum(-1, keepdim=True)).to(x.dtype)
    if capacity_factor > 0:
        capacity = max(1, math.ceil(capacity_factor * int(real.sum()) * k / K))
        keep = expected_keep_top_k(experts, real, capacity)
        assert route.keep.tolist() == keep.tolist()
        partly = keep.any(-1) & ~keep.all(-1) & real
        assert partly.any()  # some token lost one choice and kept another
        assert route.stats['dropped'] == pytest.approx(float((real.unsqueeze(-1) & ~keep).sum()) / (int(real.sum()) * k))
    else:
        keep = real.unsqueeze(-1).expand_as(experts)
        assert route.keep is None
    # balancing loss over all k choices: f = share of routed rows per expert, P = mean probability
    f = torch.bincount(experts[real].reshape(-1), minlength=K).double() / (int(real.sum()) * k)
    aux = 0.1 * K * (f * probs[real].mean(0).double()).sum()
    torch.testing.assert_close(route.aux_loss.double(), aux, rtol=1e-5, atol=1e-7)
    want = gradients(ffn, x, per_token_reference(ffn.experts, x, experts, gates, keep), grad_out,
                     router.load_balance_weight * K * (f.to(probs.dtype) * probs[real].mean(0)).sum())
    assert_all_close(got, want)
    assert got[2]['router.router_weight'].abs().sum() > 0
    dropped = real.unsqueeze(-1) & ~keep
    for i, p, j in dropped.nonzero().tolist():  # a dropped choice adds nothing
        if not keep[i, p].any():
            assert torch.all(got[0][i, p] == 0)


def test_capacity_keep_serves_first_choices_before_second_ones():
    experts = torch.tensor([[[0, 1], [0, 1], [1, 0]]])
    real = torch.tensor([[True, True, True]])
    keep = capacity_keep(experts, real, 2, capacity=2)
    # expert 0: first choices of tokens 0 and 1, so token 2's second choice is dropped;
    # expert 1: token 2's first choice, then token 0's second.
    assert keep.tolist() == [[[True, True], [True, False], [True, False]]]


# --------------------------------------------------- dispatch on its own


KERNELS = ['loop'] + (['grouped_mm'] if grouped_mm_available(torch.device('cpu'), torch.float32) else [])


@pytest.mark.parametrize('gemm', KERNELS)
def test_expert_ffn_top_k_rows_with_drops_equal_the_reference(gemm):
    torch.manual_seed(5)
    moe = ExpertFFN(6, 8, 16)
    moe.set_gemm(gemm)
    g = torch.Generator().manual_seed(5)
    experts = torch.rand(2, 9, 6, generator=g).topk(3, dim=-1).indices
    keep = torch.rand(2, 9, 3, generator=g) > 0.3
    x = torch.randn(2, 9, 8, generator=g, requires_grad=True)
    gates = torch.rand(2, 9, 3, generator=g).requires_grad_(True)
    grad_out = torch.randn(2, 9, 8, generator=g)
    plan = DispatchPlan.from_experts(experts, 6, keep=keep, choices=3)
    assert plan.dropped == int((~keep).sum())
    y = moe(x, plan, gates)
    (y * grad_out).sum().backward()
    got = [y.detach(), x.grad.clone(), gates.grad.clone()] + [p.grad.clone() for p in moe.parameters()]
    moe.zero_grad(), x.grad.zero_(), gates.grad.zero_()
    ref = per_token_reference(moe, x, experts, gates, keep)
    (ref * grad_out).sum().backward()
    want = [ref.detach(), x.grad, gates.grad] + [p.grad for p in moe.parameters()]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert torch.all(got[2][~keep] == 0)  # a dropped row's gate gets no gradient


# --------------------------------------------------------- hash tables


def zipf_inputs(vocab=2000):
    counts = 1e5 / torch.arange(1, vocab + 1, dtype=torch.float64) ** 1.1
    counts[:4] = 0
    return TableInputs(vocab_size=vocab, n_positions=16, token_counts=counts)


def slot_load(table, counts):
    """Summed count per expert, every token counted once per slot (k·counts in all)."""
    k = table.shape[1]
    return torch.zeros(int(table.max()) + 1, dtype=torch.float64).index_add_(
        0, table.reshape(-1), counts.repeat_interleave(k))


@pytest.mark.parametrize('num_experts, k', [(16, 2), (16, 4), (8, 3), (4, 4)])
def test_balanced_top_k_table_is_distinct_per_token_and_even_over_k_counts(num_experts, k):
    inputs = zipf_inputs()
    for seed in (0, 1):
        table = make_hash_function('balanced', num_experts, seed, k).build_table(inputs)
        assert table.shape == (inputs.vocab_size, k) and table.dtype == torch.long
        assert all(len(set(row)) == k for row in table.tolist())
        load = slot_load(table, inputs.token_counts)
        assert load.numel() == num_experts
        # even up to the heaviest token, which no split can divide
        assert load.max() <= max(1.02 * load.mean(), inputs.token_counts.max() * 1.0001)
    # random top-k tables are far less even: the bound above is not vacuous
    random_table = make_hash_function('random', 16, 0, 2).build_table(inputs)
    assert all(len(set(row)) == 2 for row in random_table.tolist())
    assert slot_load(random_table, inputs.token_counts).max() > 1.2 * inputs.token_counts.sum() * 2 / 16


def test_top_k_tables_are_seeded_and_seeds_differ():
    inputs = zipf_inputs(300)
    for hash_type in ('random', 'balanced'):
        a = make_hash_function(hash_type, 8, 1, 2).build_table(inputs)
        assert torch.equal(a, make_hash_function(hash_type, 8, 1, 2).build_table(inputs))
        assert not torch.equal(a, make_hash_function(hash_type, 8, 2, 2).build_table(inputs))


# ------------------------------------------------------------- errors


@pytest.mark.parametrize('build, option', [
    (lambda: make_hash_function('bigram', 8, 0, 2), '--experts-per-token'),
    (lambda: make_hash_function('position', 8, 0, 2), '--experts-per-token'),
    (lambda: hash_layer(2, 'none'), '--hash-gates'),
    (lambda: hash_layer(1, 'learned'), '--hash-gates'),
    (lambda: HashRouter('random', K, 0, torch.zeros(2, V, dtype=torch.long), gates='uniform'), '--multihash'),
])
def test_routing_combinations_that_do_not_fit_name_the_option(build, option):
    with pytest.raises(OptionError) as err:
        build()
    assert str(err.value).startswith(option + ':') and '\n' not in str(err.value)


def test_unsupported_hash_type_error_names_both_options_and_the_fix():
    with pytest.raises(OptionError) as err:
        make_hash_function('bigram', 8, 0, 2)
    text = str(err.value)
    assert '--hash-type bigram' in text and 'use --hash-type balanced or random, or --experts-per-token 1' in text
