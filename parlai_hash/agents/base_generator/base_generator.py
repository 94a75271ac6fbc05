"""``-m base_generator``: the BASE layers baseline (Balanced Assignment of Sparse Experts)."""

from __future__ import annotations

from typing import Optional

import torch.nn as nn
from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser

from parlai_hash.agents.sparse_agent import SparseGeneratorAgent
from parlai_hash.errors import OptionError
from parlai_hash.routing import BalancedAssignmentRouter


class BaseLayersGeneratorAgent(SparseGeneratorAgent):
    """BASE layers (Lewis et al., 2021) on the same experts and dispatch as hash."""

    @classmethod
    def add_cmdline_args(
        cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None
    ) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('BASE routing')
        group.add_argument(
            '--base-auction-eps', type=float, default=1e-2,
            help='Auction precision, relative to the batch\'s affinity range: the training '
            'assignment is within T*eps*range of the optimal balanced one.',
        )
        return parser

    def build_router(self, name: str) -> nn.Module:
        if self.sparse_config.experts_per_token != 1:
            raise OptionError(
                '--experts-per-token',
                "BASE layers' balanced assignment gives each token one expert",
                "pass --experts-per-token 1 (top-k routing: -m hash_generator or switch_generator)",
            )
        eps = self.opt['base_auction_eps']
        if not eps > 0:
            raise OptionError('--base-auction-eps', f"got {eps}", "pass a small positive value such as 0.01")
        return BalancedAssignmentRouter(self.opt['embedding_size'], self.sparse_config.num_experts,
                                        auction_eps=eps)


#: ParlAI's loader finds ``-m base_generator`` (and models saved with it) as this
#: module's ``BaseGeneratorAgent``: the class name it derives from the agent name.
BaseGeneratorAgent = BaseLayersGeneratorAgent
