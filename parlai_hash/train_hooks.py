"""Hooks into ParlAI's training loop, for agents that need them.

* ``TrainLoop._run_eval`` runs on every worker, for each periodic validation
  and the final valid/test evaluations. An agent that defines ``before_eval()``
  / ``after_eval()`` gets them called around it, on every worker:
  expert-parallel training gathers its experts there, so evaluation needs no
  collectives.
* ``TrainLoop._get_time`` decides when ``--save-every-n-secs`` saves. ParlAI
  syncs the workers' clocks only when another time-based option is set, so
  each worker may otherwise save at a different step. That is harmless when
  saving is local, but an agent whose ``saves_collectively`` is true (expert
  parallelism gathers its experts when saving) would hang there: for it, every
  worker takes the primary's clock.
* ``TrainLoop.__init__`` creates the agent: while it runs,
  ``building_train_loop()`` is true, so expert parallelism shards experts only
  for training, not for ``multiprocessing_eval``.
"""

from __future__ import annotations

from types import ModuleType

_MARK = '_parlai_hash_eval_hook'
_building_train_loop = False


def building_train_loop() -> bool:
    """True while a ``TrainLoop`` is being built (it creates the agent): how an agent
    tells training from evaluation. Its options cannot: an agent loaded from a
    model file for ``multiprocessing_eval`` keeps the file's ``datatype: train``."""
    return _building_train_loop


def extend_train_loop(name: str, module: ModuleType) -> None:
    loop = module.TrainLoop
    original = loop._run_eval
    if getattr(original, _MARK, False):
        return

    def _run_eval(self, *args, **kwargs):
        before = getattr(self.agent, 'before_eval', None)
        if before is not None:
            before()
        try:
            return original(self, *args, **kwargs)
        finally:
            after = getattr(self.agent, 'after_eval', None)
            if after is not None:
                after()

    _run_eval.__doc__ = original.__doc__
    setattr(_run_eval, _MARK, True)
    loop._run_eval = _run_eval

    original_time = loop._get_time

    def _get_time(self, world):
        times = original_time(self, world)
        if getattr(self.agent, 'saves_collectively', False) and self.save_every_n_secs < float('inf'):
            from parlai.utils.distributed import sync_object

            times = sync_object(times)  # the primary's clock: every worker saves on the same step
        return times

    _get_time.__doc__ = original_time.__doc__
    loop._get_time = _get_time

    original_init = loop.__init__

    def __init__(self, *args, **kwargs):
        global _building_train_loop
        outer, _building_train_loop = _building_train_loop, True
        try:
            original_init(self, *args, **kwargs)
        finally:
            _building_train_loop = outer

    __init__.__doc__ = original_init.__doc__
    loop.__init__ = __init__
