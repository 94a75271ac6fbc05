"""Routing: hash tables, the registry, the context seen in each decoding mode."""

import pytest
import torch

from parlai_hash.errors import OptionError
from parlai_hash.metrics import expert_load
from parlai_hash.routing import HASH_TYPES, HashRouter, RoutingContext, TableInputs, make_hash_function


def inputs(vocab, counts=None, n_positions=64):
    return TableInputs(vocab_size=vocab, n_positions=n_positions, token_counts=counts)


def zipf_counts(vocab=5000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    counts = 1e6 / torch.arange(1, vocab + 1, dtype=torch.float64)
    return counts[torch.randperm(vocab, generator=gen)]


def table_load(table, counts, k):
    load = torch.zeros(k, dtype=torch.float64).index_add_(0, table, counts)
    return expert_load(load.tolist())


def test_registry_has_foundation_types():
    assert {'random', 'balanced'} <= set(HASH_TYPES)


def test_random_table_is_seeded_and_in_range():
    a = make_hash_function('random', 16, seed=1).build_table(inputs(1000))
    b = make_hash_function('random', 16, seed=1).build_table(inputs(1000))
    c = make_hash_function('random', 16, seed=2).build_table(inputs(1000))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < 16 and a.shape == (1000,)
    assert len(set(a.tolist())) == 16


def test_balanced_is_more_even_than_random_on_zipf():
    counts = zipf_counts()
    k = 32
    balanced = make_hash_function('balanced', k, 0).build_table(inputs(len(counts), counts))
    random = make_hash_function('random', k, 0).build_table(inputs(len(counts)))
    lb, lr = table_load(balanced, counts, k), table_load(random, counts, k)
    assert lb['max'] < lr['max'] and lb['entropy'] > lr['entropy']
    # The top token alone is ~11% of traffic: no table can beat that bound.
    top_share = (counts.max() / counts.sum()).item()
    assert lb['max'] == pytest.approx(max(top_share * k, 1.0), rel=0.05)


def test_balanced_spreads_unseen_tokens():
    # With no counts at all, each token takes the candidate with fewer tokens:
    # two random choices keep 125 per expert within a few (at most 5 over 60 seeds).
    table = make_hash_function('balanced', 8, 0).build_table(inputs(1000, torch.zeros(1000)))
    per_expert = torch.bincount(table, minlength=8)
    assert per_expert.max() - per_expert.min() <= 8
    # Unseen tokens spread over every expert, not only the lightest ones.
    counts = torch.zeros(1000, dtype=torch.float64)
    counts[:10] = 5
    table = make_hash_function('balanced', 8, 0).build_table(inputs(1000, counts))
    unseen = torch.bincount(table[10:], minlength=8)
    assert unseen.min() > 0 and unseen.max() - unseen.min() <= 8


def test_unknown_hash_type_names_the_option():
    with pytest.raises(OptionError, match='--hash-type'):
        make_hash_function('nope', 4, 0)


def test_router_table_is_a_buffer_and_routes_current_tokens():
    router = HashRouter('random', 4, 3, HashRouter.build_tables('random', 4, 3, inputs(50)))
    assert 'table' in dict(router.named_buffers())
    assert 'table' in router.state_dict()
    history = torch.tensor([[1, 7, 9, 11], [1, 3, 0, 0]])
    full = router(RoutingContext.full(history, pad_idx=0))
    assert torch.equal(full.experts, router.table[0][history].unsqueeze(-1))  # [B, T, k=1]
    assert full.gates is None and full.keep is None
    step = router(RoutingContext.incremental(history[:, :3], pad_idx=0))
    assert torch.equal(step.experts, router.table[0][history[:, 2:3]].unsqueeze(-1))


def test_context_in_incremental_mode():
    history = torch.tensor([[5, 6, 7]])
    ctx = RoutingContext.incremental(history, pad_idx=0)
    assert ctx.tokens.tolist() == [[7]]
    assert ctx.positions.tolist() == [[2]]
    full = RoutingContext.full(history, pad_idx=6)
    assert full.positions.tolist() == [[0, 1, 2]]
    assert full.mask.tolist() == [[True, False, True]]


def test_expert_load_summary():
    assert expert_load([5, 5, 5, 5]) == {'max': 1.0, 'entropy': pytest.approx(1.0), 'unused': 0.0}
    skew = expert_load([8, 0, 0, 0])
    assert skew['max'] == 4.0 and skew['entropy'] == 0.0 and skew['unused'] == 3.0
