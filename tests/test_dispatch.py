"""Dispatch: stacked experts on the sorted path equal dense and per-expert references."""

import torch
import torch.nn as nn
from parlai.agents.transformer.modules import TransformerFFN

from parlai_hash.dispatch import DispatchPlan
from parlai_hash.experts import ExpertFFN
from parlai_hash.grouped_gemm import grouped_linear


def _dense_like(moe: ExpertFFN, activation='relu', relu_dropout=0.0) -> TransformerFFN:
    ffn = TransformerFFN({'embedding_size': moe.dim, 'ffn_size': moe.dim_hidden},
                         relu_dropout=relu_dropout, activation=activation)
    with torch.no_grad():
        ffn.lin1.weight.copy_(moe.expert_w1[0].t())
        ffn.lin1.bias.copy_(moe.expert_b1[0])
        ffn.lin2.weight.copy_(moe.expert_w2[0].t())
        ffn.lin2.bias.copy_(moe.expert_b2[0])
    return ffn


def _run(module_call, x):
    x = x.clone().requires_grad_(True)
    y = module_call(x)
    y.backward(torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape).sin())
    return y.detach(), x.grad


def test_plan_sorts_counts_and_inverts():
    experts = torch.tensor([[2, 0, 2], [1, 2, 0]])
    plan = DispatchPlan.from_experts(experts, 4)
    assert plan.counts == [2, 1, 3, 0]
    flat = experts.reshape(-1)
    assert flat[plan.order].tolist() == sorted(flat.tolist())
    assert torch.equal(plan.order[plan.inverse], torch.arange(6))


def test_k1_equals_parlai_dense_ffn_forward_and_backward():
    torch.manual_seed(0)
    for activation in ('relu', 'gelu'):
        moe = ExpertFFN(1, 8, 16, activation=activation)
        dense = _dense_like(moe, activation)
        x = torch.randn(3, 5, 8)
        plan = DispatchPlan.from_experts(torch.zeros(3, 5, dtype=torch.long), 1)
        y_moe, gx_moe = _run(lambda t: moe(t, plan), x)
        y_dense, gx_dense = _run(dense, x)
        torch.testing.assert_close(y_moe, y_dense, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gx_moe, gx_dense, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(moe.expert_w1.grad[0].t(), dense.lin1.weight.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(moe.expert_b2.grad[0], dense.lin2.bias.grad, rtol=1e-5, atol=1e-6)


def test_k1_dropout_matches_dense_with_same_seed():
    torch.manual_seed(1)
    moe = ExpertFFN(1, 8, 16, relu_dropout=0.4)
    dense = _dense_like(moe, relu_dropout=0.4)
    moe.train(), dense.train()
    x = torch.randn(2, 6, 8)
    plan = DispatchPlan.from_experts(torch.zeros(2, 6, dtype=torch.long), 1)
    torch.manual_seed(7)
    y_moe = moe(x, plan)
    torch.manual_seed(7)
    y_dense = dense(x)
    torch.testing.assert_close(y_moe, y_dense, rtol=1e-5, atol=1e-6)
    moe.eval()
    assert not torch.allclose(moe(x, plan), y_moe)  # eval mode: no dropout


def _loop_reference(moe: ExpertFFN, x, experts):
    """Per-expert loop-and-mask, as in the official reference code."""
    flat, e = x.reshape(-1, moe.dim), experts.reshape(-1)
    out = flat.new_zeros(flat.shape)
    for i in range(moe.num_experts):
        idx = (e == i).nonzero().squeeze(1)
        if idx.numel():
            h = torch.relu(flat[idx] @ moe.expert_w1[i] + moe.expert_b1[i])
            out = out.index_put((idx,), h @ moe.expert_w2[i] + moe.expert_b2[i])
    return out.reshape(x.shape)


def test_many_experts_match_loop_reference_including_empty_experts():
    torch.manual_seed(2)
    moe = ExpertFFN(6, 8, 12).double()
    x = torch.randn(4, 7, 8, dtype=torch.float64)
    experts = torch.randint(0, 4, (4, 7))  # experts 4 and 5 receive nothing
    plan = DispatchPlan.from_experts(experts, 6)
    y, gx = _run(lambda t: moe(t, plan), x)
    grads = [p.grad.clone() for p in moe.parameters()]
    moe.zero_grad()
    y_ref, gx_ref = _run(lambda t: _loop_reference(moe, t, experts), x)
    grads_ref = [p.grad for p in moe.parameters()]
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gx, gx_ref)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)
    assert moe.expert_w1.grad is not None
    assert grads[0][4:].abs().sum() == 0 and grads[2][5].abs().sum() == 0


def test_grouped_linear_gradcheck():
    torch.manual_seed(3)
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: grouped_linear(x, w, b, [3, 0, 4]), (x, w, b))


def test_expert_weights_are_stacked_parameters_named_expert():
    moe = ExpertFFN(5, 8, 16)
    shapes = {n: tuple(p.shape) for n, p in moe.named_parameters()}
    assert shapes == {
        'expert_w1': (5, 8, 16), 'expert_b1': (5, 16),
        'expert_w2': (5, 16, 8), 'expert_b2': (5, 8),
    }
    assert not any(isinstance(m, nn.Linear) for m in moe.modules())


def test_dropped_tokens_output_zero_and_do_not_change_kept_ones():
    torch.manual_seed(4)
    moe = ExpertFFN(3, 8, 12).double()
    x = torch.randn(10, 8, dtype=torch.float64)
    experts = torch.randint(0, 3, (10,))
    keep = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    plan = DispatchPlan.from_experts(experts, 3, keep=keep)
    assert plan.dropped == 3 and sum(plan.counts) == 7
    assert set(plan.order[-3:].tolist()) == {2, 4, 8}
    y, gx = _run(lambda t: moe(t, plan), x)
    assert y[~keep].abs().sum() == 0 and gx[~keep].abs().sum() == 0
    full = DispatchPlan.from_experts(experts, 3)
    y_full = moe(x, full).detach()
    torch.testing.assert_close(y[keep], y_full[keep])
