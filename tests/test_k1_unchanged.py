"""k = 1 computes exactly what it computed before top-k routing existed, bit for bit.

The references in ``fixtures/k1_reference`` were recorded with the code of that
time, on one CPU thread: layer outputs, every gradient, routes and loads
(``k1_cases``), hash tables, and two tiny trained checkpoints with their
decoder logits. The tests run on one thread too: with more, a matrix product
may sum in another order and differ in the last bit.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from parlai.core.agents import create_agent_from_model_file

from k1_cases import CASES, PAD, TABLE_CASES, build, build_table, inputs, run_case

FIXTURE = Path(__file__).parent / 'fixtures' / 'k1_reference'


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def recorded():
    return torch.load(FIXTURE / 'layers.pt', weights_only=False)


def assert_same_bits(got, want, what):
    if want is None:
        assert got is None, what
        return
    assert got.dtype == want.dtype and got.shape == want.shape, what
    assert torch.equal(got, want), what


@pytest.mark.parametrize('name', CASES)
def test_layer_outputs_gradients_routes_and_load_are_the_recorded_bits(recorded, name):
    case = recorded['cases'][name]
    ffn = build(name)
    ffn.load_state_dict(case['state'])
    got = run_case(name, ffn)
    for key in ('y', 'dx', 'experts', 'gates', 'keep', 'aux', 'load'):
        assert_same_bits(got[key], case[key], f'{name}: {key}')
    assert got['grads'].keys() == case['grads'].keys()
    for param, grad in case['grads'].items():
        assert_same_bits(got['grads'][param], grad, f'{name}: gradient of {param}')


def test_the_capacity_case_drops_tokens():
    """The Switch case exercises capacity: some real tokens are dropped (output 0)."""
    case = torch.load(FIXTURE / 'layers.pt', weights_only=False)['cases']['switch_capacity']
    real = (inputs()[0] != PAD).reshape(-1)
    assert (real & ~case['keep']).any() and case['keep'].any()


@pytest.mark.parametrize('key', TABLE_CASES)
def test_hash_tables_are_the_recorded_tables(recorded, key):
    assert_same_bits(build_table(*key), recorded['tables'][key], str(key))


@pytest.mark.parametrize('model', ['hash_generator', 'switch_generator'])
def test_a_checkpoint_saved_before_top_k_loads_and_computes_the_same_logits(tmp_path, model):
    for name in ('model', 'model.opt', 'model.dict'):
        shutil.copy(FIXTURE / model / name, tmp_path / name)
    saved_opt = json.loads((tmp_path / 'model.opt').read_text())
    assert 'experts_per_token' not in saved_opt and 'hash_gates' not in saved_opt
    agent = create_agent_from_model_file(str(tmp_path / 'model'))
    assert agent.opt['experts_per_token'] == 1
    if model == 'hash_generator':
        assert agent.opt['hash_gates'] == 'none'
    agent.model.eval()
    text = torch.tensor([[5, 6, 7, 8, 9], [10, 4, 6, 0, 0]])
    ys = torch.tensor([[9, 4, 5, 6], [7, 8, 0, 0]])
    with torch.no_grad():
        logits = agent.model.decode_forced(agent.model.encoder(text), ys)[0]
    want = torch.load(FIXTURE / 'logits.pt', weights_only=False)[model]
    assert_same_bits(logits, want, model)
