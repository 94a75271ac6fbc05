"""Run one sweep point in this process and write its record.

The runner writes each point as ``<run_dir>/point.json`` (options, exact
arguments, seed); this module trains it with ParlAI's own ``TrainLoop`` and
writes ``record.json`` last. Both the local runner (one subprocess per point,
``python -m parlai_hash.sweeps.worker POINT_JSON``) and SLURM jobs (submitit
pickles :func:`run_point_file`) come here, so every record is made the same way.
With several SLURM tasks (GPUs) it trains data-parallel through ParlAI's
``distributed_train`` set-up, and only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from parlai_hash.io_utils import atomic_write
from parlai_hash.sweeps.records import TRAIN_EVAL_EXAMPLES, environment, git_commit, numeric_report, read_record, train_dropped, valid_curve, write_record


#: Set by the local runner: Ctrl-C is the runner's to act on (it lets this
#: point finish, or on a second Ctrl-C terminates it), not this process's.
RUNNER_STOPS = 'PARLAI_HASH_RUNNER_STOPS'


def leave_interrupts_to_the_runner() -> None:
    """Under the local runner, ignore Ctrl-C: the runner acts on it."""
    if os.environ.get(RUNNER_STOPS):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def write_point_file(path: Path, point: Dict[str, Any]) -> None:
    with atomic_write(path) as f:
        json.dump(point, f, indent=2)
        f.write('\n')


def count_parameters(model: Any, opt: Dict[str, Any]) -> Dict[str, int]:
    """Parameter counts of a built model.

    ``params``: learned parameters (ParlAI's fixed sinusoidal position codes
    are stored as a frozen embedding and are not counted); ``params_trainable``:
    those this run trains (``--freeze`` lowers it); ``expert_params``: inside
    experts; ``active_params``: used per token — each sparse layer runs 1 of
    its K experts (top-k: k of K; MultiHash: 1 of K copies of each segment),
    so (K-k)/K of its expert weights are idle for any one token; shared
    experts always run. With ``--expert-parallel`` a
    worker holds K/W of each layer's experts; the counts are the whole model's.
    """
    from parlai_hash.layers import SparseFFN

    learned = trainable = experts = 0
    fixed_positions = not opt.get('learn_positional_embeddings', False)
    for name, param in model.named_parameters():
        if fixed_positions and name.endswith('position_embeddings.weight'):
            continue
        learned += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    idle = 0.0
    for module in model.modules():
        if isinstance(module, SparseFFN):
            stacked = next(module.experts.parameters())  # [experts held, ...]: K/W under expert parallelism
            held = sum(p.numel() for p in module.experts.parameters())
            in_experts = held * (module.num_experts // stacked.shape[0])
            experts += in_experts
            learned += in_experts - held
            if stacked.requires_grad:
                trainable += in_experts - held
            used = module.experts_per_token  # k of K (MultiHash: 1 of K copies of each segment)
            idle += in_experts * (module.num_experts - used) / module.num_experts
    return {'params': learned, 'params_trainable': trainable, 'expert_params': experts,
            'active_params': int(round(learned - idle))}


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _slurm_tasks() -> int:
    return int(os.environ.get('SLURM_NTASKS', '1')) if 'SLURM_JOB_ID' in os.environ else 1


def slurm_distributed_argv(argv: List[str], tasks: int) -> List[str]:
    """``argv`` plus what ParlAI 1.7.2's SLURM set-up needs and does not read from SLURM.

    Its ``slurm_distributed_context`` takes the world size from
    ``--distributed-world-size`` (unset: the rendezvous fails) and listens on
    ``--port`` (default 61337 for every job, so two jobs sharing a node would
    collide). Given ones are kept; else the task count, and ``MASTER_PORT`` or a
    port derived from the job id.
    """
    extra: List[str] = []
    if '--distributed-world-size' not in argv:
        extra += ['--distributed-world-size', str(tasks)]
    if '--port' not in argv:
        port = os.environ.get('MASTER_PORT') or str(20000 + int(os.environ.get('SLURM_JOB_ID', '0')) % 40000)
        extra += ['--port', port]
    return list(argv) + extra


class _ValidateAtLastStep:
    """Mixin for ParlAI's ``TrainLoop``: validate once more when ``--max-train-steps`` is reached.

    ParlAI 1.7.2 ends training at the step limit without validating — either
    its loop checks the limit before its validation schedule, or (with
    ``--lr-scheduler invsqrt``) the scheduler raises ``StopTrainException``
    inside the last update — so the model it keeps and evaluates is the best
    one up to the last *scheduled* validation (step 400 of 500 with a
    validation every 100): the last steps would be trained and thrown away.
    Validating at the limit (ParlAI keeps that model if it is the best so far)
    makes every point of a sweep use all its steps.
    """

    def train_steps(self):
        from parlai.core.exceptions import StopTrainException

        world = self.world
        parley = world.parley

        def parley_then_validate_at_limit():
            try:
                parley()
            except StopTrainException:
                if self._train_steps + 1 >= self.max_train_steps:
                    # The update of the last step was made; count it as the loop would.
                    self.parleys += 1
                    self._train_steps = self.parleys // self.update_freq
                    self._validate_at_limit(world)
                raise

        world.parley = parley_then_validate_at_limit
        yield from super().train_steps()

    def _get_time(self, world):  # called every step, right before the step-limit check
        times = super()._get_time(world)
        if self._train_steps >= self.max_train_steps:
            self._validate_at_limit(world)
        return times

    def _validate_at_limit(self, world) -> None:
        from parlai.core.exceptions import StopTrainException

        done = self.valid_reports and self.valid_reports[-1].get('train_steps') == self._train_steps
        if done or self._last_valid_steps >= self._train_steps:
            return
        self._last_valid_steps = self._train_steps
        # ParlAI sets these in _get_time (not yet called if the very first step of a
        # resumed run hits the limit); validate() reads them.
        epochs = getattr(self, '_total_epochs', self._preempted_epochs)
        self._total_epochs = epochs
        self._total_exs = int(round(epochs * world.num_examples()))
        world.reset_metrics()
        try:
            self.validate()
        except StopTrainException:
            pass


def _build_dict_before_distributed(opt: Dict[str, Any]) -> None:
    """Build the point's dictionary in this (primary) task, before the workers meet.

    ParlAI refuses to build one inside distributed training ("Dictionaries should
    be pre-built"); ``multiprocessing_train`` users run ``build_dict`` first, a
    sweep point cannot. The other tasks wait for this one at the rendezvous.
    """
    from parlai.scripts.build_dict import build_dict

    if opt.get('dict_file') is None and opt.get('model_file'):
        opt['dict_file'] = opt['model_file'] + '.dict'  # where TrainLoop will look for it
    build_dict(opt, skip_if_built=True)


def _train(argv: list) -> Any:
    """Train with ParlAI's loop; returns the loop (its agent is the best model)."""
    tasks = _slurm_tasks()
    if tasks > 1:
        import parlai.scripts.distributed_train as distributed_train
        import parlai.utils.distributed as distributed_utils
        import parlai.utils.fsdp as fsdp_utils

        class Loop(_ValidateAtLastStep, fsdp_utils.JoinableTrainLoop):
            pass

        opt = distributed_train.setup_args().parse_args(slurm_distributed_argv(argv, tasks))
        if _is_primary():
            _build_dict_before_distributed(opt)
        with distributed_utils.slurm_distributed_context(opt) as opt:
            loop = Loop(opt)
            with fsdp_utils.fsdp_join(loop):
                loop.final_reports = loop.train()
        return loop
    from parlai.scripts.train_model import TrainLoop, setup_args

    class Loop(_ValidateAtLastStep, TrainLoop):  # type: ignore[no-redef]
        pass

    opt = setup_args().parse_args(argv)
    loop = Loop(opt)
    loop.final_reports = loop.train()
    return loop


def best_valid_step(curve: list, metric: str, mode: str) -> Optional[float]:
    """The step of the validation whose model ParlAI kept (the best one)."""
    if not curve:
        return None
    pick = min if mode == 'min' else max
    return pick(curve, key=lambda c: c[metric])['train_steps']


def train_split_report(loop: Any, max_examples: int = TRAIN_EVAL_EXAMPLES) -> Dict[str, float]:
    """The kept model's metrics on the first ``max_examples`` training examples, in evaluation mode.

    Next to the held-out splits this tells the regime a run is in: far below
    valid, the model has memorised its training text (several epochs over a
    small corpus) and held-out orderings may differ from the paper's, which
    trains for under one epoch. ``train:evalmode`` reads the training split in
    order, without shuffling, dropout or updates.
    """
    from parlai.scripts.train_model import load_eval_worlds

    if max_examples <= 0:
        return {}
    worlds = load_eval_worlds(loop.agent, loop.opt, 'train:evalmode')
    return numeric_report(loop._run_eval(worlds, loop.opt, 'train:evalmode', max_exs=max_examples))


def _is_primary() -> bool:
    return int(os.environ.get('SLURM_PROCID', '0')) == 0 if _slurm_tasks() > 1 else True


def run_point_file(point_file: str) -> Optional[Dict[str, Any]]:
    """Train the point described by ``point_file`` unless its record exists.

    Returns the record (None on non-primary SLURM ranks).
    """
    point = json.loads(Path(point_file).read_text(encoding='utf-8'))
    record_file = Path(point['record_file'])
    existing = read_record(record_file)
    if existing is not None:
        return existing
    for dependency, model_file in point.get('dependency_models', {}).items():
        if not Path(model_file).exists():
            raise RuntimeError(f"point {point['name']} needs {dependency}'s model {model_file}, which is missing")
    _seed_everything(point['seed'])
    loop = _train(point['argv'])
    if not _is_primary():
        return None
    valid_report, test_report = loop.final_reports
    train_report = train_split_report(loop)
    trainstats = {'valid_reports': loop.valid_reports, 'train_reports': loop.train_reports,
                  'train_steps': loop._train_steps}
    model = getattr(loop.agent.model, 'module', loop.agent.model)
    curve = valid_curve(trainstats, point['metric'])
    record = {
        'sweep': point['sweep'],
        'scale': point['scale'],
        'point': point['name'],
        'model': point['model'],
        'configuration': point['configuration'],
        'metric': point['metric'],
        'valid': numeric_report(valid_report),
        'test': numeric_report(test_report),
        'train': train_report,
        'train_eval_examples': int(train_report.get('exs', 0)),
        **count_parameters(model, loop.agent.opt),
        'train_steps': int(trainstats['train_steps']),
        'epochs': round(float(getattr(loop, '_total_epochs', 0.0)), 3),
        'train_time_s': round(float(loop.train_time.time()), 1),
        'valid_curve': curve,
        'train_dropped': train_dropped(trainstats),
        'best_valid_step': best_valid_step(curve, point['metric'], loop.agent.opt.get('validation_metric_mode', 'min')),
        'options': point['options'],
        'command': point['command'],
        'argv': point['argv'],
        'seed': point['seed'],
        'depends_on': point.get('depends_on', []),
        'git_commit': git_commit(Path(point.get('repo_root', '.'))),
        'environment': environment(),
    }
    write_record(record_file, record)
    return record


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print('usage: python -m parlai_hash.sweeps.worker RUN_DIR/point.json', file=sys.stderr)
        return 2
    from parlai_hash.errors import OptionError

    leave_interrupts_to_the_runner()
    try:
        run_point_file(argv[0])
    except OptionError as err:  # one line naming the option, as ``parlai`` prints it
        print(f'parlai-hash: error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
