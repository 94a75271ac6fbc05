"""What every sparse generator agent shares: placement options, model, metrics."""

from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn as nn
from parlai.agents.transformer.transformer import (
    TransformerGeneratorAgent,
    _check_positional_embeddings,
)
from parlai.core.metrics import AverageMetric
from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser
from parlai.utils import logging as logger  # ParlAI's log: shown at its --loglevel

from parlai_hash import compat
from parlai_hash.agents.checkpoint_fit import check_checkpoint_fits
from parlai_hash.agents.option_checks import check_training_options
from parlai_hash.errors import OptionError, install_excepthook
from parlai_hash.freezing import FREEZE_MODES, apply_freeze
from parlai_hash.layers import SparseTransformerModel, take_loads
from parlai_hash.metrics import load_metrics
from parlai_hash.options import SparseConfig, n_decoder_layers
from parlai_hash.parallel.agent import ExpertParallelAgentMixin
from parlai_hash.train_hooks import building_train_loop

compat.apply_loaded()
install_excepthook()

#: ``--fp16-dtype``: what ParlAI's ``--fp16`` (``model.half()``) converts to.
HALF_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}

#: ParlAI gives special tokens sentinel counts (~1e9); they are not real frequencies.
_SENTINEL_COUNT = 1_000_000_000


def dictionary_counts(dictionary) -> torch.Tensor:
    """``[len(dict)]`` training-data frequency of each token id (specials: 0)."""
    counts = torch.zeros(len(dictionary), dtype=torch.float64)
    for idx, tok in dictionary.ind2tok.items():
        c = dictionary.freq.get(tok, 0)
        counts[idx] = 0 if c >= _SENTINEL_COUNT else c
    return counts


class SparseGeneratorAgent(ExpertParallelAgentMixin, TransformerGeneratorAgent):
    """A TransformerGeneratorAgent whose listed FFN layers are mixtures of experts.

    Subclasses say how tokens are routed (``build_router``); placement, dispatch
    and expert-load metrics are common, and so is ``--expert-parallel``
    (``ExpertParallelAgentMixin``).
    """

    @classmethod
    def add_cmdline_args(
        cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None
    ) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('Sparse layers')
        group.add_argument(
            '--hash-layers',
            '--sparse-layers',
            type=str,
            default=None,
            help='Decoder layers (0-based) whose FFN is a mixture of experts, e.g. '
            '"7" or "1,3,5,7,9". Default: one late layer (n_decoder_layers - 2).',
        )
        group.add_argument(
            '--hash-encoder-layers',
            '--sparse-encoder-layers',
            type=str,
            default='',
            help='Encoder layers (0-based) that are sparse too; default none.',
        )
        group.add_argument(
            '--num-experts',
            type=int,
            default=16,
            help='Experts (K) in every sparse layer.',
        )
        group.add_argument(
            '--experts-per-token',
            type=int,
            default=1,
            help='Top-k routing: each token goes to k distinct experts and its output is the '
            'gate-weighted sum of theirs (k = 1: one expert, as in the paper).',
        )
        group.add_argument(
            '--shared-experts',
            type=int,
            default=0,
            help='Always-on FFNs in every sparse layer, next to the routed experts: every token '
            'runs all of them and their outputs are added (0: none, as in the paper).',
        )
        group.add_argument(
            '--shared-expert-size',
            type=int,
            default=None,
            help='Hidden size of each shared expert (default: --ffn-size).',
        )
        group.add_argument(
            '--expert-ffn-size',
            type=int,
            default=None,
            help='Hidden size of each routed expert (default, or 0: --ffn-size). Dense FFNs keep '
            '--ffn-size: with top-k and shared experts, k x this + the shared sizes = --ffn-size '
            'gives each token a dense FFN\'s compute.',
        )
        group.add_argument(
            '--freeze',
            type=str,
            default='none',
            choices=list(FREEZE_MODES),
            help='Fine-tuning: parameters kept fixed. experts = the sparse layers\' expert '
            'weights; router = the learned router only; all-but-experts = everything except '
            'the experts; all-but-last = everything except the last decoder layer and the '
            'output (the tied token embeddings count as the output).',
        )
        group.add_argument(
            '--expert-parallel',
            type='bool',
            default=False,
            help='With multiprocessing_train/distributed_train: each of the W workers holds '
            'K/W experts of every sparse layer and tokens travel to their expert by '
            'all_to_all; checkpoints still hold all K experts. Ignored in one process.',
        )
        group.add_argument(
            '--expert-gemm',
            type=str,
            default='auto',
            choices=['auto', 'loop', 'grouped_mm'],
            help='GEMM kernel over expert-sorted tokens. auto: torch\'s grouped GEMM where it has '
            'its fused kernel (CUDA SM90/SM100, bfloat16, sizes multiples of 8), else one GEMM '
            'per expert.',
        )
        group.add_argument(
            '--fp16-dtype',
            type=str,
            default='float16',
            choices=['float16', 'bfloat16'],
            help='With --fp16 true: the half-precision type ParlAI converts the model to. '
            'bfloat16 has float32\'s range (no overflow) and lets --expert-gemm auto use '
            'the grouped GEMM on CUDA.',
        )
        return parser

    def __init__(self, opt: Opt, shared=None):
        # Before the model is built: a bad combination of ParlAI's training
        # options stops here with one line, not at the first validation.
        # Only for training: a model file loaded by eval_model keeps its options.
        if shared is None and building_train_loop():
            check_training_options(opt)
        super().__init__(opt, shared)

    @classmethod
    def upgrade_opt(cls, opt_from_disk: Opt) -> Opt:
        # Models saved before top-k routing sent each token to one expert.
        opt_from_disk = super().upgrade_opt(opt_from_disk)
        if 'experts_per_token' not in opt_from_disk:
            opt_from_disk['experts_per_token'] = 1
        if 'shared_experts' not in opt_from_disk:  # nor shared experts
            opt_from_disk['shared_experts'] = 0
        if 'expert_ffn_size' not in opt_from_disk:  # and routed experts were --ffn-size wide
            opt_from_disk['expert_ffn_size'] = None
        return opt_from_disk

    def build_router(self, name: str) -> nn.Module:
        raise NotImplementedError

    def _get_init_model(self, opt: Opt, shared):
        # ParlAI ignores an --init-model that does not exist and trains from
        # scratch: a fine-tuning run (--freeze ...) would look normal and be wrong.
        path = opt.get('init_model')
        model_file = opt.get('model_file')
        if (not shared and path and not os.path.isfile(path)
                and not (model_file and os.path.isfile(model_file))):
            raise OptionError('--init-model', f"{path} does not exist",
                              "give the path of a trained model file, or leave --init-model out "
                              "to train from scratch")
        return super()._get_init_model(opt, shared)

    def build_model(self, states=None):
        _check_positional_embeddings(self.opt)
        #: Sizes of every sparse layer, read from opt once here; routers read it too.
        self.sparse_config = SparseConfig.from_opt(self.opt)
        model = SparseTransformerModel.build(self.opt, self.dict, self.sparse_config, self.build_router)
        model.half_dtype = HALF_DTYPES[self.opt.get('fp16_dtype', 'float16')]
        if (self.opt.get('fp16') and model.half_dtype == torch.bfloat16
                and self.opt.get('ddp_backend', 'ddp') in ('zero2', 'zero3')):
            raise OptionError('--fp16-dtype', "bfloat16 is not applied under --ddp-backend "
                              f"{self.opt['ddp_backend']} (ParlAI's FSDP casts to float16 itself)",
                              "use --ddp-backend ddp, or --fp16-dtype float16")
        if self.opt['embedding_type'] != 'random':
            self._copy_embeddings(model.encoder.embeddings.weight, self.opt['embedding_type'])
        mode = self.opt.get('freeze', 'none')
        counts = apply_freeze(model, mode, n_decoder_layers(self.opt))
        if mode != 'none':
            logger.info(
                f"--freeze {mode}: {counts['trainable']:,} of {counts['total']:,} parameters trainable"
            )
        self.shard_for_training(model)
        return model

    def _bare_model(self) -> nn.Module:
        return getattr(self.model, 'module', self.model)  # unwrap DDP

    def _sparse_ffns(self):
        return self._bare_model().sparse_ffns()

    def compute_loss(self, batch, return_output=False):
        layers = self._sparse_ffns()
        # The loads report this batch's teacher-forced tokens: drop what earlier
        # forwards counted (generation, recomputed activation checkpoints).
        for ffn in layers.values():
            ffn.take_load()
        out = super().compute_loss(batch, return_output=return_output)
        loss, output = out if return_output else (out, None)
        aux_total = None
        for name, load in take_loads(layers).items():  # one device-to-host copy for all layers
            for key, metric in load_metrics(name, load).items():
                self.global_metrics.add(key, metric)
        for name, ffn in layers.items():
            route = ffn.last_route
            if route is None:
                continue
            for stat, value in route.stats.items():
                self.global_metrics.add(f'{name}_{stat}', AverageMetric(value))
            if route.aux_loss is not None:
                aux_total = route.aux_loss if aux_total is None else aux_total + route.aux_loss
        if aux_total is not None:
            # Its own metric: loss and ppl stay the language-model numbers,
            # comparable with hash models; only the optimised loss includes it.
            self.global_metrics.add('lb_loss', AverageMetric(aux_total.item()))
            loss = loss + aux_total.to(loss.dtype)
        return (loss, output) if return_output else loss

    def load_state_dict(self, state_dict):
        check_checkpoint_fits(state_dict, self._bare_model().state_dict(), self.sparse_config.num_experts)
        return super().load_state_dict(state_dict)
