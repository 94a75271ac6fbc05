"""One-expert-per-token layers whose outputs were recorded before top-k routing existed.

``tests/fixtures/k1_reference/layers.pt`` holds, for each case below, the
layer's state and what the code of that time computed from it (outputs, every
gradient, the routes, the load) and a few hash tables; ``test_k1_unchanged``
rebuilds each case with today's code and asserts the same bits. The cases use
only constructor arguments that existed then.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch

from parlai_hash.options import SparseConfig
from parlai_hash.layers import SparseFFN
from parlai_hash.routing import (BalancedAssignmentRouter, HashRouter, RoutingContext, SwitchRouter,
                                 TableInputs)
from parlai_hash.routing.hash_router import make_hash_function

D, H, K, V, PAD = 8, 16, 4, 30, 0

CASES = ('hash_balanced', 'multihash', 'switch_capacity', 'switch_eval', 'token_switch',
         'base_train', 'base_eval')

#: (hash type, experts, seed) of the recorded tables.
TABLE_CASES = (('random', 5, 0), ('balanced', 5, 1), ('balanced', 8, 2), ('random', 8, 3))


def zipf_counts(vocab: int) -> torch.Tensor:
    counts = 1000.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    counts[:3] = 0  # special tokens
    return counts


def table_inputs(vocab: int = V) -> TableInputs:
    return TableInputs(vocab_size=vocab, n_positions=64, token_counts=zipf_counts(vocab))


def build_table(hash_type: str, num_experts: int, seed: int) -> torch.Tensor:
    return make_hash_function(hash_type, num_experts, seed).build_table(table_inputs(60))


def build(name: str) -> SparseFFN:
    """The layer of a case, freshly initialised (the test loads the recorded state into it)."""
    if name == 'hash_balanced':
        table = HashRouter.build_tables('balanced', K, 7, table_inputs())
        return SparseFFN(SparseConfig(K), 'dec0', HashRouter('balanced', K, 7, table), D, H, activation='gelu')
    if name == 'multihash':
        table = HashRouter.build_tables('random', K, 5, table_inputs(), num_hashes=2)
        return SparseFFN(SparseConfig(K, num_hashes=2), 'dec0', HashRouter('random', K, 5, table), D, H)
    if name in ('switch_capacity', 'switch_eval'):
        router = SwitchRouter(D, K, V, capacity_factor=0.6, load_balance_weight=0.1, z_loss_weight=0.01)
        return SparseFFN(SparseConfig(K), 'dec0', router, D, H)
    if name == 'token_switch':
        return SparseFFN(SparseConfig(K), 'dec0', SwitchRouter(D, K, V, source='token', capacity_factor=1.0), D, H)
    if name in ('base_train', 'base_eval'):
        return SparseFFN(SparseConfig(K), 'dec0', BalancedAssignmentRouter(D, K), D, H)
    raise KeyError(name)


def inputs(seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens with padding, hidden states and the gradient arriving at the output."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (3, 7), generator=g)
    tokens[0, 5:] = PAD
    tokens[2, 3:] = PAD
    return tokens, torch.randn(3, 7, D, generator=g), torch.randn(3, 7, D, generator=g)


def run_case(name: str, ffn: SparseFFN) -> Dict[str, object]:
    """Forward and backward of one case; what the fixture records."""
    ffn.train(not name.endswith('_eval'))
    tokens, x, grad_out = inputs()
    x = x.clone().requires_grad_(True)
    ffn.routing = RoutingContext.full(tokens, PAD)
    y = ffn(x)
    route = ffn.last_route
    loss = (y * grad_out).sum()
    if route.aux_loss is not None:
        loss = loss + route.aux_loss
    ffn.zero_grad()
    loss.backward()
    return {
        'y': y.detach(),
        'dx': x.grad,
        'grads': {n: p.grad.clone() for n, p in ffn.named_parameters() if p.grad is not None},
        'experts': route.experts.reshape(-1),
        'gates': None if route.gates is None else route.gates.detach().reshape(-1),
        'keep': None if route.keep is None else route.keep.reshape(-1),
        'aux': None if route.aux_loss is None else route.aux_loss.detach(),
        'load': ffn.take_load(),
    }
