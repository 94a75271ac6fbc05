"""The Switch router as the paper counts it (a bias: K*d + K parameters), Token
Switch as a [V, K] table of logits (Table 6's counts), and models saved before
either still load and route as they were trained."""

import json

import pytest
import torch
from parlai.core.agents import create_agent, create_agent_from_model_file
from parlai.core.params import ParlaiParser

from parlai_hash.agents.checkpoint_fit import check_checkpoint_fits
from parlai_hash.errors import OptionError
from parlai_hash.routing import RoutingContext, SwitchRouter

D, K, V = 8, 4, 30


def test_router_bias_is_zero_at_start_and_moves_the_choice():
    router = SwitchRouter(D, K, V)
    assert router.router_bias.shape == (K,) and torch.all(router.router_bias == 0)
    assert sum(p.numel() for p in router.parameters()) == K * D + K
    tokens = torch.randint(1, V, (2, 5))
    with torch.no_grad():
        router.router_bias[2] = 100.0
    assert torch.all(router(RoutingContext.full(tokens, 0), torch.randn(2, 5, D)).experts == 2)
    assert SwitchRouter(D, K, V, bias=False).router_bias is None


def test_token_switch_reads_its_logits_from_a_vocabulary_table():
    router = SwitchRouter(D, K, V, source='token')
    assert [n for n, _ in router.named_parameters()] == ['token_logits.weight']
    assert router.token_logits.weight.shape == (V, K)
    tokens = torch.randint(1, V, (2, 5))
    route = router(RoutingContext.full(tokens, 0), torch.randn(2, 5, D))
    assert torch.equal(route.experts, router.token_logits.weight[tokens].argmax(-1, keepdim=True))
    earlier = SwitchRouter(D, K, V, source='token', token_table='embedding', bias=False)
    assert {n for n, _ in earlier.named_parameters()} == {'token_embedding.weight', 'router_weight'}


def _train_tiny(tmp_path, name, *extra):
    args = ['-m', 'switch_generator', '-t', 'integration_tests:nocandidate', '-mf', str(tmp_path / name),
            '--n-layers', '2', '--embedding-size', '16', '--ffn-size', '32', '--n-heads', '2',
            '--num-experts', '4', '-bs', '4', *extra]
    agent = create_agent(ParlaiParser(True, True).parse_args(args))
    agent.save(str(tmp_path / name))
    return agent


@pytest.mark.parametrize('extra, dropped', [
    (['--router-bias', 'false'], ['router_bias']),
    (['--router-bias', 'false', '--switch-input', 'token', '--token-switch-table', 'embedding'],
     ['router_bias', 'token_switch_table']),
])
def test_a_model_saved_before_these_options_loads_as_trained(tmp_path, extra, dropped):
    agent = _train_tiny(tmp_path, 'old', *extra)
    opt_file = tmp_path / 'old.opt'
    saved = json.loads(opt_file.read_text())
    for key in dropped:
        del saved[key]  # what an older version wrote
    opt_file.write_text(json.dumps(saved))
    again = create_agent_from_model_file(str(tmp_path / 'old'))
    assert again.opt['router_bias'] is False
    theirs = {k: v for k, v in again.model.state_dict().items() if '.router.' in k}
    ours = {k: v for k, v in agent.model.state_dict().items() if '.router.' in k}
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)


def test_fine_tuning_an_old_switch_checkpoint_names_the_option():
    def state(*names):
        return {f'decoder.layers.1.ffn.router.{n}': torch.zeros(1) for n in names}

    with pytest.raises(OptionError, match='--router-bias: .* pass --router-bias false'):
        check_checkpoint_fits(state('router_weight'), state('router_weight', 'router_bias'), 4)
    with pytest.raises(OptionError, match='--token-switch-table: .* pass --token-switch-table embedding'):
        check_checkpoint_fits(state('token_embedding.weight', 'router_weight'), state('token_logits.weight'), 4)


def test_switch_defaults_are_the_papers():
    from parlai.scripts.train_model import setup_args

    opt = setup_args().parse_args(['-m', 'switch_generator', '-t', 'integration_tests'])
    assert opt['load_balance_weight'] == 0.1  # Tables 1-8; chosen in Table 9
    assert opt['router_bias'] is True and opt['token_switch_table'] == 'logits'
