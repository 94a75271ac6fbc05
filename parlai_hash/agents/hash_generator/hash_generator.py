"""``-m hash_generator``: a Transformer whose sparse FFNs route by hashing tokens."""

from __future__ import annotations

from typing import Optional

import torch.nn as nn
from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser

from parlai_hash.agents.sparse_agent import SparseGeneratorAgent, dictionary_counts
from parlai_hash.routing import HASH_TYPES, HashRouter


class HashGeneratorAgent(SparseGeneratorAgent):
    """Hash Layers (Roller et al., 2021) in ParlAI's TransformerGeneratorAgent."""

    @classmethod
    def add_cmdline_args(
        cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None
    ) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('Hash routing')
        group.add_argument(
            '--hash-type',
            type=str,
            default='balanced',
            choices=sorted(HASH_TYPES),
            help='How tokens map to experts: random (fixed random expert per token) '
            'or balanced (greedy by training-data frequency, most frequent first).',
        )
        group.add_argument(
            '--hash-seed',
            type=int,
            default=42,
            help='Seed of the random hash table.',
        )
        return parser

    def build_router(self, name: str) -> nn.Module:
        counts = dictionary_counts(self.dict) if self.opt['hash_type'] == 'balanced' else None
        return HashRouter(
            self.opt['hash_type'],
            self.opt['num_experts'],
            vocab_size=len(self.dict),
            seed=self.opt['hash_seed'],
            token_counts=counts,
            name=name,
        )
