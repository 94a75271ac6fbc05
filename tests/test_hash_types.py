"""Every hash type routes on exactly the feature it names, in every decoding mode."""

import pytest
import torch

from parlai_hash.errors import OptionError
from parlai_hash.routing import HASH_TYPES, HashRouter, RoutingContext, TableInputs
from parlai_hash.routing.hash_functions import START_EXPERT

V, K, L, NPOS = 40, 8, 9, 32
PAD = 0

# Which inputs each type may depend on, for the position p being routed:
# ('hist', offset) = history[p + offset]; 'next' = label at p; 'pred' = prediction at p;
# 'pos' = the position itself.
FEATURES = {
    'random': [('hist', 0)],
    'balanced': [('hist', 0)],
    'clustered': [('hist', 0)],
    'dispersed': [('hist', 0)],
    'bigram': [('hist', -1), ('hist', 0)],
    'previous': [('hist', -1)],
    'position': ['pos'],
    'oracle': ['next'],
    'predicted': ['pred'],
}


def test_every_registered_type_has_a_property_test():
    assert set(FEATURES) == set(HASH_TYPES)


def make_router(hash_type, seed=5, num_hashes=1):
    gen = torch.Generator().manual_seed(0)
    inputs = TableInputs(
        vocab_size=V, n_positions=NPOS,
        token_counts=torch.rand(V, generator=gen) * 100,
        embeddings=torch.randn(V, 6, generator=gen),
    )
    return HashRouter(hash_type, K, seed, HashRouter.build_tables(hash_type, K, seed, inputs, num_hashes))


def route(router, history, labels, preds, p, mode):
    """Expert of position p, by a full teacher-forced pass or an incremental step."""
    if mode == 'forced':
        ctx = RoutingContext.full(history, PAD, next_tokens=labels)
        ctx.predicted_next = preds
        return router(ctx).experts[0, p, 0].item()
    ctx = RoutingContext.incremental(history[:, : p + 1], PAD)
    ctx.predicted_next = preds[:, p : p + 1]
    return router(ctx).experts[0, 0, 0].item()


def random_tokens(gen, n):
    return torch.randint(1, V, (1, n), generator=gen)


@pytest.mark.parametrize('hash_type', sorted(FEATURES))
@pytest.mark.parametrize('mode', ['forced', 'incremental'])
@pytest.mark.parametrize('p', [0, L // 2, L - 1])
def test_route_depends_only_on_the_named_feature(hash_type, mode, p):
    router = make_router(hash_type)
    gen = torch.Generator().manual_seed(p)
    history, labels, preds = random_tokens(gen, L), random_tokens(gen, L), random_tokens(gen, L)
    if hash_type == 'oracle' and mode == 'incremental':
        with pytest.raises(OptionError, match='--hash-type'):
            route(router, history, labels, preds, p, mode)
        return
    expert = route(router, history, labels, preds, p, mode)
    feats = FEATURES[hash_type]
    keep_hist = {p + off for kind, off in (f for f in feats if isinstance(f, tuple))}

    # Everything else changes: the route must not.
    for trial in range(5):
        h2, l2, p2 = random_tokens(gen, L), random_tokens(gen, L), random_tokens(gen, L)
        for i in keep_hist:
            if 0 <= i < L:
                h2[0, i] = history[0, i]
        if 'next' in feats:
            l2[0, p] = labels[0, p]
        if 'pred' in feats:
            p2[0, p] = preds[0, p]
        assert route(router, h2, l2, p2, p, mode) == expert, (hash_type, mode, p, trial)

    # The feature changes: for some value, the route does.
    if feats == ['pos']:
        others = {route(router, history, labels, preds, q, mode) for q in range(L)}
        assert len(others) > 1
        return
    if hash_type == 'previous' and p == 0:
        assert expert == START_EXPERT  # no previous token: the fixed start expert
        return
    changed = False
    for value in range(1, V):
        h2, l2, p2 = history.clone(), labels.clone(), preds.clone()
        for i in keep_hist:
            if 0 <= i < L:
                h2[0, i] = value
        if 'next' in feats:
            l2[0, p] = value
        if 'pred' in feats:
            p2[0, p] = value
        changed |= route(router, h2, l2, p2, p, mode) != expert
    assert changed, f"{hash_type} never changed its route when its feature changed"


@pytest.mark.parametrize('hash_type', sorted(t for t in FEATURES if t != 'oracle'))
def test_incremental_routes_equal_teacher_forced_routes(hash_type):
    router = make_router(hash_type)
    gen = torch.Generator().manual_seed(1)
    history, labels, preds = random_tokens(gen, L), random_tokens(gen, L), random_tokens(gen, L)
    forced = [route(router, history, labels, preds, p, 'forced') for p in range(L)]
    stepwise = [route(router, history, labels, preds, p, 'incremental') for p in range(L)]
    assert forced == stepwise


def test_dispersed_splits_clusters_that_clustered_keeps_together():
    clustered, dispersed = make_router('clustered'), make_router('dispersed')
    clusters = clustered.table[0]
    for c in clusters.unique():
        members = (clusters == c).nonzero().squeeze(1)
        spread = dispersed.table[0][members]
        assert len(spread.unique()) == min(K, members.numel())


def test_multihash_routes_one_expert_per_hash_with_different_tables():
    router = make_router('random', num_hashes=3)
    assert router.table.shape == (3, V)
    assert not torch.equal(router.table[0], router.table[1])
    ctx = RoutingContext.full(torch.randint(1, V, (2, 5)), PAD)
    assert router(ctx).experts.shape == (2, 5, 3)


def test_bigram_hash_stays_in_range_for_large_ids():
    router = make_router('bigram')
    ctx = RoutingContext.full(torch.tensor([[2**20, 2**21 - 1, 7, 2**20 + 5]]), PAD)
    experts = router(ctx).experts
    assert experts.min() >= 0 and experts.max() < K
