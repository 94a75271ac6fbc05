"""ParlAI's ``--tensorboard-log true`` works after set-up and records our expert-load metrics."""

import os

from conftest import TINY_MODEL_ARGS
from conftest import run_parlai as parlai


def scalar_tags(logdir) -> set:
    """The scalar tags TensorBoard's scalars dashboard shows for the events in ``logdir``."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return set(events.PluginTagToContent('scalars'))


def test_switch_training_curves_hold_the_per_layer_expert_metrics(tmp_path):
    logdir = tmp_path / 'tb'
    parlai('train_model', '-m', 'switch_generator', '-t', 'integration_tests:nocandidate',
           '-mf', str(tmp_path / 'm'), *TINY_MODEL_ARGS, '--sparse-layers', '1,2',
           '-bs', '4', '--max-train-steps', '4', '-lstep', '2', '-vstep', '2', '-vmt', 'ppl',
           '--skip-generation', 'true', '--validation-max-exs', '8', '--short-final-eval', 'true',
           '--tensorboard-log', 'true', '--tensorboard-logdir', str(logdir),
           env=dict(os.environ, OMP_NUM_THREADS='1'))  # a tiny model: threads only contend
    tags = scalar_tags(logdir)
    for layer in ('dec1', 'dec2'):
        assert {f'{layer}_load_max/train', f'{layer}_load_ent/train', f'{layer}_dropped/train',
                f'{layer}_load_max/valid', f'{layer}_load_ent/valid'} <= tags
    assert {'lb_loss/train', 'lb_loss/valid', 'ppl/train', 'ppl/valid'} <= tags
    assert not (tmp_path / 'm.tensorboard').exists()  # the logdir given was used


def test_default_logdir_is_next_to_the_model_file(tmp_path):
    # What the sweeps rely on: each point's model file sits in its own run folder.
    from parlai.core.logs import TensorboardLogger
    from parlai.core.opt import Opt

    logger = TensorboardLogger(Opt({'tensorboard_logdir': None, 'model_file': str(tmp_path / 'model')}))
    logger.log_metrics('train', 1, {'dec7_load_max': 1.5})
    logger.writer.close()  # tensorboardX writes from a queue; closing drains it
    assert scalar_tags(tmp_path / 'model.tensorboard') == {'dec7_load_max/train'}
