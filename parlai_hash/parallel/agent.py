"""``--expert-parallel`` in a ParlAI agent: the hooks around ParlAI's training.

``ExpertParallelAgentMixin`` goes before ParlAI's ``TorchGeneratorAgent`` in an
agent's bases. ``build_model`` calls ``shard_for_training(model)`` once; when
the run is not expert-parallel every hook below is ParlAI's own behaviour.
"""

from __future__ import annotations

from typing import Optional

from parlai.utils import logging as logger  # ParlAI's log: shown at its --loglevel

from parlai_hash.errors import OptionError
from parlai_hash.parallel.training import ExpertParallel


class ExpertParallelAgentMixin:
    """Saving, updating, evaluating and resuming with experts sharded over the workers."""

    #: Set by ``shard_for_training``; None unless this process trains expert-parallel
    #: (agents copied for batch worlds share the model and never set it).
    expert_parallel: Optional[ExpertParallel] = None
    _gathered_experts = None
    _gathered_optimizer = None

    def shard_for_training(self, model) -> None:
        """Shard ``model``'s experts if this process trains with ``--expert-parallel``."""
        self.expert_parallel = ExpertParallel.for_training(self.opt, model)
        if self.expert_parallel is not None:
            logger.info(f"--expert-parallel: {self.expert_parallel.experts_per_worker} experts "
                        f"per worker on {self.expert_parallel.world} workers")

    @property
    def saves_collectively(self) -> bool:
        """Saving gathers sharded experts on every worker (parlai_hash.train_hooks)."""
        return self.expert_parallel is not None

    def before_eval(self) -> None:
        """Called on every worker around ParlAI's eval loop (parlai_hash.train_hooks)."""
        if self.expert_parallel is not None:
            self.expert_parallel.gather_for_eval()

    def after_eval(self) -> None:
        if self.expert_parallel is not None:
            self.expert_parallel.release_eval()

    def _gather_for_checkpoint(self) -> None:
        """All K experts and their optimizer state, on every rank (collectives)."""
        self._gathered_experts = self.expert_parallel.gather_experts()
        if getattr(self, 'optimizer', None) is not None:
            self._gathered_optimizer = self.expert_parallel.gather_optimizer_state(
                self.optimizer, self.optimizer.state_dict())

    def save(self, path=None):
        if self.expert_parallel is None:
            return super().save(path)
        self._gather_for_checkpoint()
        try:
            return super().save(path)
        finally:
            self._gathered_experts = self._gathered_optimizer = None

    def save_nonprimary(self, path=None):
        if self.expert_parallel is not None:
            self._gather_for_checkpoint()  # the primary's save gathers too
            self._gathered_experts = self._gathered_optimizer = None
        return super().save_nonprimary(path)

    def state_dict(self):
        states = super().state_dict()
        if self._gathered_experts:
            states['model'].update(self._gathered_experts)
        if self._gathered_optimizer is not None and 'optimizer' in states:
            states['optimizer'] = self._gathered_optimizer
        return states

    def load_state_dict(self, state_dict):
        if self.expert_parallel is not None:
            self.expert_parallel.shard_state_dict(state_dict)  # checkpoints hold all K experts
        return super().load_state_dict(state_dict)

    def init_optim(self, params, optim_states=None, saved_optim_type=None, is_finetune=False):
        reset = super().init_optim(params, optim_states, saved_optim_type, is_finetune)
        if self.expert_parallel is not None and optim_states and not reset:
            # Checkpoints hold every expert's optimizer state: keep this rank's.
            self.expert_parallel.shard_optimizer_state(self.optimizer)
        return reset

    def _fake_forward_backward_pass(self):
        # ParlAI's answer to an out-of-memory batch: skip it, and run a dummy
        # batch to keep DDP's all-reduces in step. Expert-parallel workers would
        # be mid-way through the batch's token exchanges, so the dummy batch's
        # exchanges would pair with another rank's gradient-norm all-reduce: a
        # hang or garbage. Stop instead.
        if self.expert_parallel is not None:
            raise OptionError(
                '--batchsize',
                'a worker ran out of memory in expert-parallel training, where workers cannot '
                'skip a batch on their own (every step exchanges tokens between all of them)',
                'lower -bs or --truncate, or use more workers, and resume from the checkpoint',
            )
        return super()._fake_forward_backward_pass()

    def update_params(self):
        if self.expert_parallel is None:
            return super().update_params()
        if self.opt.get('update_freq', 1) > 1 and self._number_grad_accum != 0:
            return  # accumulating: ParlAI's update returns here too
        with self.expert_parallel.update(self.optimizer):
            super().update_params()
