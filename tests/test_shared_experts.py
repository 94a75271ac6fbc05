"""``--shared-experts``: always-on FFNs added to a sparse layer's routed output."""

import pytest
import torch
import torch.nn.functional as F

from parlai_hash.errors import OptionError
from parlai_hash.layers import SparseFFN
from parlai_hash.options import SparseConfig, check_shared_experts
from parlai_hash.routing import HashRouter, RoutingContext
from parlai_hash.routing.hash_functions import TableInputs
from parlai_hash.shared_experts import SharedExperts

D, H, K, V = 6, 10, 4, 20


def test_shared_experts_are_the_sum_of_s_dense_ffns_with_their_gradients():
    torch.manual_seed(0)
    shared = SharedExperts(3, D, H, activation='gelu').double()
    x = torch.randn(2, 5, D, dtype=torch.float64, requires_grad=True)
    y = shared(x)
    reference = sum(
        F.linear(F.gelu(F.linear(x, shared.w1[s].T, shared.b1[s, 0])), shared.w2[s].T, shared.b2[s, 0])
        for s in range(3))
    assert torch.allclose(y, reference, atol=1e-12)
    grads = torch.autograd.grad(y.square().sum(), [x, shared.w1, shared.b2])
    ref_grads = torch.autograd.grad(reference.square().sum(), [x, shared.w1, shared.b2])
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, atol=1e-10)


def test_a_sparse_layer_adds_the_shared_output_to_the_routed_one():
    torch.manual_seed(1)
    table = HashRouter.build_tables('random', K, 3, TableInputs(vocab_size=V, n_positions=8))
    config = SparseConfig(K, shared_experts=2, shared_expert_size=7)
    ffn = SparseFFN(config, 'dec0', HashRouter('random', K, 3, table), D, H).double()
    assert ffn.shared.w1.shape == (2, D, 7)
    tokens = torch.tensor([[3, 4, 5, 0]])
    x = torch.randn(1, 4, D, dtype=torch.float64)
    ffn.routing = RoutingContext.full(tokens, 0)
    y = ffn(x)
    route = ffn.router(ffn.routing, x)
    routed = ffn._routed(x, route)
    assert torch.allclose(y, routed + ffn.shared(x))
    assert torch.equal(routed[0, 3], torch.zeros(D, dtype=torch.float64))  # padding: no routed expert
    assert not torch.equal(y[0, 3], routed[0, 3])  # ... but the shared experts run on every position


def test_without_shared_experts_the_layer_has_none():
    table = HashRouter.build_tables('random', K, 3, TableInputs(vocab_size=V, n_positions=8))
    ffn = SparseFFN(SparseConfig(K), 'dec0', HashRouter('random', K, 3, table), D, H)
    assert ffn.shared is None and not any('shared' in n for n, _ in ffn.named_parameters())


@pytest.mark.parametrize('count, size, option', [(-1, None, '--shared-experts'), (1, 0, '--shared-expert-size'),
                                                 ('2', None, '--shared-experts')])
def test_bad_shared_expert_options_name_the_option(count, size, option):
    with pytest.raises(OptionError, match=option):
        check_shared_experts(count, size)
