"""``-m switch_generator``: Switch Transformer (learned top-1, or top-k with
``--experts-per-token``) baseline."""

from __future__ import annotations

from typing import Optional

import torch.nn as nn
from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser

from parlai_hash.agents.sparse_agent import SparseGeneratorAgent
from parlai_hash.errors import OptionError
from parlai_hash.routing import SwitchRouter
from parlai_hash.routing.switch_router import TOKEN_TABLES


class SwitchGeneratorAgent(SparseGeneratorAgent):
    """Switch Transformer (Fedus et al., 2021) on the same experts and dispatch as hash."""

    @classmethod
    def add_cmdline_args(
        cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None
    ) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('Switch routing')
        group.add_argument(
            '--load-balance-weight', type=float, default=0.1,
            help='alpha of the load-balancing loss alpha*K*sum_i f_i*P_i, summed over sparse '
            'layers and added to the training loss (reported as lb_loss). Default 0.1, the '
            'paper\'s value for Switch in Tables 1-8, chosen on validation in its Table 9.',
        )
        group.add_argument(
            '--router-bias', type='bool', default=True,
            help='Learned bias on the router logits (the paper\'s appendix B counts one: '
            'K*d + K router parameters).',
        )
        group.add_argument(
            '--token-switch-table', type=str, default='logits', choices=list(TOKEN_TABLES),
            help='With --switch-input token: logits = a learned [V, K] table of router logits '
            '(keeps Token Switch at the paper\'s Table 6 parameter count); embedding = a learned '
            '[V, d] token embedding fed to the router (models trained before this option).',
        )
        group.add_argument(
            '--capacity-factor', type=float, default=1.25,
            help='Training: each expert takes at most ceil(factor*T/K) of the batch\'s T real '
            'tokens (in order); the rest skip the FFN and pass through the residual '
            '(reported as <layer>_dropped). 0 = dropless.',
        )
        group.add_argument(
            '--eval-capacity-factor', type=float, default=0.0,
            help='The same in evaluation and generation; 0 (default) = dropless, so a reply '
            'does not depend on the rest of the batch.',
        )
        group.add_argument(
            '--router-jitter', type=float, default=0.0,
            help='Training: multiply the router input by U(1-eps, 1+eps) noise; eps in [0, 1).',
        )
        group.add_argument(
            '--router-z-loss-weight', type=float, default=0.0,
            help='Weight of the router z-loss, mean(logsumexp(logits)^2).',
        )
        group.add_argument(
            '--switch-input', type=str, default='hidden', choices=['hidden', 'token'],
            help='Route on the hidden state (Switch) or on a separate learned embedding of the '
            'current token (Token Switch, the Hash Layers paper\'s Table 6).',
        )
        return parser

    def build_router(self, name: str) -> nn.Module:
        opt = self.opt
        for option in ('capacity_factor', 'eval_capacity_factor', 'load_balance_weight',
                       'router_jitter', 'router_z_loss_weight'):
            if opt[option] < 0:
                flag = '--' + option.replace('_', '-')
                raise OptionError(flag, f"got {opt[option]}, must not be negative", f"pass {flag} 0 or more")
        if opt['router_jitter'] >= 1:
            raise OptionError(
                '--router-jitter',
                f"got {opt['router_jitter']}, but the noise U(1-eps, 1+eps) must stay positive",
                "pass an eps from 0 (no jitter) up to, not including, 1, such as Switch's 0.01",
            )
        return SwitchRouter(
            dim=opt['embedding_size'],
            num_experts=self.sparse_config.num_experts,
            vocab_size=len(self.dict),
            source=opt['switch_input'],
            capacity_factor=opt['capacity_factor'],
            eval_capacity_factor=opt['eval_capacity_factor'],
            jitter=opt['router_jitter'],
            load_balance_weight=opt['load_balance_weight'],
            z_loss_weight=opt['router_z_loss_weight'],
            bias=opt['router_bias'],
            token_table=opt['token_switch_table'],
            experts_per_token=self.sparse_config.experts_per_token,
        )

    @classmethod
    def upgrade_opt(cls, opt_from_disk: Opt) -> Opt:
        # Models saved before these options existed have no router bias and a
        # [V, d] Token Switch embedding: keep them loadable as they were trained.
        opt_from_disk = super().upgrade_opt(opt_from_disk)
        for option, earlier in (('router_bias', False), ('token_switch_table', 'embedding')):
            if option not in opt_from_disk:
                opt_from_disk[option] = earlier
        return opt_from_disk
