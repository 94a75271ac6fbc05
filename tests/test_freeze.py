"""Fine-tuning with frozen parts (the paper's Table 8) from a pretrained checkpoint."""

import pytest
import torch
from parlai.core.agents import create_agent_from_model_file
from parlai.scripts.train_model import TrainModel

from parlai_hash.errors import OptionError
from parlai_hash.freezing import is_expert, is_router

COMMON = dict(task='integration_tests:nocandidate', n_layers=2, embedding_size=16, ffn_size=32,
              n_heads=2, num_experts=4, sparse_layers='0,1', batchsize=4, learningrate=1e-2,
              optimizer='adam', skip_generation=True, validation_metric='ppl',
              validation_max_exs=8, short_final_eval=True)


# One tensor, three names in the state dict: the tied output projection.
TIED_OUTPUT = ('embeddings.weight', 'encoder.embeddings.weight', 'decoder.embeddings.weight')


def train(model_file, model, steps, **extra):
    kw = dict(COMMON, model=model, model_file=str(model_file), max_train_steps=steps,
              validation_every_n_steps=steps)
    kw.update(extra)
    return TrainModel.main(**kw)


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp('pretrained')
    torch.manual_seed(0)
    paths = {}
    for model in ('hash_generator', 'switch_generator'):
        paths[model] = str(root / model)
        train(paths[model], model, 6)
    return paths


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


@pytest.mark.parametrize('model, mode, frozen', [
    ('hash_generator', 'experts', is_expert),
    ('hash_generator', 'all-but-experts', lambda n: not is_expert(n)),
    ('hash_generator', 'all-but-last',
     lambda n: not (n.startswith('decoder.layers.1.') or n in TIED_OUTPUT)),
    ('switch_generator', 'router', is_router),
    ('switch_generator', 'experts', is_expert),
])
def test_frozen_parameters_stay_bit_identical_and_have_no_optimizer_state(
        tmp_path, pretrained, model, mode, frozen):
    out = tmp_path / 'finetuned'
    train(out, model, 4, init_model=pretrained[model], freeze=mode)
    before, after = load(pretrained[model]), load(str(out))
    frozen_names = [n for n in after['model'] if frozen(n) and 'router.table' not in n
                    and after['model'][n].is_floating_point()]
    trainable_names = [n for n in after['model'] if not frozen(n) and after['model'][n].is_floating_point()
                       and 'position_embeddings' not in n]
    assert frozen_names and trainable_names
    for n in frozen_names:
        assert torch.equal(before['model'][n], after['model'][n]), f'{n} changed under --freeze {mode}'
    assert any(not torch.equal(before['model'][n], after['model'][n]) for n in trainable_names)
    agent = create_agent_from_model_file(str(out), {'freeze': mode})
    n_trainable = sum(1 for p in agent.model.parameters() if p.requires_grad)
    n_in_optimizer = sum(len(g['params']) for g in after['optimizer']['param_groups'])
    assert n_in_optimizer == n_trainable
    assert len(after['optimizer']['state']) <= n_trainable


def test_fine_tuning_keeps_the_pretrained_routing_table(tmp_path, pretrained):
    out = tmp_path / 'finetuned'
    train(out, 'hash_generator', 2, init_model=pretrained['hash_generator'], freeze='experts',
          hash_seed=999, hash_type='random')
    before, after = load(pretrained['hash_generator']), load(str(out))
    tables = [k for k in before['model'] if k.endswith('router.table')]
    assert tables
    for k in tables:
        assert torch.equal(before['model'][k], after['model'][k])


def test_load_balance_weight_can_change_at_fine_tune_time(tmp_path, pretrained):
    out = tmp_path / 'finetuned'
    agent = create_agent_from_model_file(pretrained['switch_generator'],
                                         {'load_balance_weight': 0.0, 'model_file': str(out)})
    routers = [f.router for f in agent.model.sparse_ffns().values()]
    assert routers and all(r.load_balance_weight == 0.0 for r in routers)


def test_freeze_router_of_a_hash_model_names_the_option(tmp_path, pretrained):
    with pytest.raises(OptionError, match='^--freeze: router'):
        train(tmp_path / 'x', 'hash_generator', 1, init_model=pretrained['hash_generator'],
              freeze='router')
