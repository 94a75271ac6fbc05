"""Checks of ParlAI's own options that would otherwise fail late, with a traceback.

Run by our agents when a training loop builds them, so that a run stops with
one line before it trains rather than at its first validation.
"""

from __future__ import annotations

from parlai.core.metrics import ALL_METRICS
from parlai.core.opt import Opt

from parlai_hash.errors import OptionError

#: ParlAI's switches for periodic validation during training.
_VALIDATION_EVERY = ('validation_every_n_secs', 'validation_every_n_steps', 'validation_every_n_epochs')


def validates_during_training(opt: Opt) -> bool:
    """Whether ParlAI's train loop will run validations (-vtim, -vstep, -veps)."""
    return any((opt.get(key) or -1) > 0 for key in _VALIDATION_EVERY)


def check_validation_metric(opt: Opt) -> None:
    """Refuse a validation metric that --skip-generation true never computes.

    ParlAI's text metrics (accuracy, f1, bleu-*, rouge-*, *distinct-*) are
    computed from generated replies; without them the first validation stops
    with ``KeyError: 'accuracy'`` inside ParlAI's train loop.
    """
    metric = opt.get('validation_metric') or ''
    if not (opt.get('skip_generation') and validates_during_training(opt)):
        return
    if metric.split('/')[-1] not in ALL_METRICS:  # 'task/metric' in multi-task runs
        return
    raise OptionError(
        '--validation-metric',
        f"'{metric}' is computed from generated replies, which --skip-generation true turns off "
        "(the first validation would stop with a KeyError)",
        "pass -vmt ppl (or loss, token_acc), or --skip-generation false",
    )


def check_training_options(opt: Opt) -> None:
    """Every check of this module, for an agent a training loop is building."""
    check_validation_metric(opt)
