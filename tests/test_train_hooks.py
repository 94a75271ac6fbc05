"""The hooks into ParlAI's TrainLoop (parlai_hash.train_hooks), on a stand-in loop."""

import types

import pytest

from parlai_hash.train_hooks import extend_train_loop


def _module():
    calls = []

    class TrainLoop:
        def __init__(self, agent, save_every_n_secs=float('inf')):
            self.agent, self.save_every_n_secs = agent, save_every_n_secs

        def _run_eval(self, *args):
            calls.append('eval')
            return 'report'

        def _get_time(self, world):
            return (1.0, 2.0, 3.0, 4.0)  # this worker's own clocks

    return types.SimpleNamespace(TrainLoop=TrainLoop), calls


class Agent:
    def __init__(self, collective=False):
        self.saves_collectively = collective
        self.events = []

    def before_eval(self):
        self.events.append('before')

    def after_eval(self):
        self.events.append('after')


def test_eval_is_wrapped_once_on_every_worker():
    module, calls = _module()
    extend_train_loop('parlai.scripts.train_model', module)
    extend_train_loop('parlai.scripts.train_model', module)  # idempotent
    agent = Agent()
    assert module.TrainLoop(agent)._run_eval() == 'report'
    assert agent.events == ['before', 'after'] and calls == ['eval']


@pytest.mark.parametrize('collective, every, synced', [
    (True, 60.0, True),  # would save on different steps: take the primary's clock
    (True, float('inf'), False),  # no timed saves: nothing to agree on
    (False, 60.0, False),  # local saves: ParlAI's own behaviour
])
def test_timed_saves_use_the_primary_clock_when_saving_is_collective(monkeypatch, collective, every, synced):
    import parlai.utils.distributed as distributed

    module, _ = _module()
    extend_train_loop('parlai.scripts.train_model', module)
    seen = []
    monkeypatch.setattr(distributed, 'sync_object', lambda obj: seen.append(obj) or (9.0, 9.0, 9.0, 9.0))
    times = module.TrainLoop(Agent(collective), every)._get_time(world=None)
    assert (times == (9.0, 9.0, 9.0, 9.0)) is synced
    assert seen == ([(1.0, 2.0, 3.0, 4.0)] if synced else [])


def test_parlai_train_loop_is_hooked_on_import():
    import parlai.scripts.train_model as train_model

    assert getattr(train_model.TrainLoop._run_eval, '_parlai_hash_eval_hook', False)
    assert train_model.TrainLoop._get_time.__qualname__ == 'extend_train_loop.<locals>._get_time'
