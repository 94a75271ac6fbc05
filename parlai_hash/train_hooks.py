"""A hook around ParlAI's evaluation loop, for agents that need one.

``TrainLoop._run_eval`` runs on every worker, for each periodic validation and
the final valid/test evaluations. An agent that defines ``before_eval()`` /
``after_eval()`` gets them called around it, on every worker: expert-parallel
training gathers its experts there, so evaluation needs no collectives.
"""

from __future__ import annotations

from types import ModuleType

_MARK = '_parlai_hash_eval_hook'


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
