"""``-m hash_generator``: a Transformer whose sparse FFNs route by hashing tokens."""

from __future__ import annotations

import os
import zlib
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from parlai.agents.transformer.modules import get_n_positions_from_options
from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser
from parlai.utils import logging as logger  # ParlAI's log: shown at its --loglevel

from parlai_hash.agents.sparse_agent import SparseGeneratorAgent, dictionary_counts
from parlai_hash.errors import OptionError
from parlai_hash.routing import (HASH_GATES, HASH_TYPES, HashRouter, TableInputs, hash_function_class,
                                 make_hash_function)
from parlai_hash.routing.hash_gates import check_hash_gates
from parlai_hash.token_counts import count_training_tokens, counts_are_informative


def _tokens_of(dictionary) -> List[str]:
    """A ParlAI dictionary's tokens in id order."""
    return [dictionary.ind2tok[i] for i in range(len(dictionary))]


def _saved_tokens(dict_file: str) -> Optional[List[str]]:
    """The tokens of a dictionary saved by ParlAI, in id order (its file lists them
    so), or None if there is no such file."""
    from parlai.core.dict import unescape

    if not os.path.isfile(dict_file):
        return None
    with open(dict_file, encoding='utf-8') as f:
        # as DictionaryAgent.load reads it
        return [unescape(line.strip().split('\t')[0]) for line in f if line.strip()]


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
            help='What each token is routed on: random/balanced (current token, random or '
            'frequency-balanced table), bigram (previous and current token), previous '
            '(previous token), position (its position), oracle (the next token: teacher '
            'forcing only), predicted (a baseline\'s predicted next token), clustered / '
            'dispersed (k-means clusters of a baseline\'s token embeddings).',
        )
        group.add_argument(
            '--hash-gates',
            type=str,
            default='none',
            choices=list(HASH_GATES),
            help='With --experts-per-token k > 1 (random and balanced tables of k distinct '
            'experts per token): how much of each expert\'s output a token takes. none: the '
            'output as is (the paper; k = 1 only); uniform: 1/k each; learned: a learned '
            'linear scorer over all experts, read at the table\'s k experts, sqrt(softplus) and '
            'normalised to sum to 1. The table alone decides which experts run.',
        )
        group.add_argument('--hash-seed', type=int, default=42, help='Seed of the hash tables.')
        group.add_argument(
            '--hash-count-examples',
            type=int,
            default=100_000,
            help='For --hash-type balanced with a dictionary that has no real counts (a '
            'byte-level BPE loads with every count 1): how many training examples to count '
            'token frequencies on.',
        )
        group.add_argument(
            '--hash-per-layer',
            type=str,
            default='same',
            choices=['same', 'different'],
            help='With several sparse layers: one table for all (same) or an independent '
            'table per layer (different, seeded per layer).',
        )
        group.add_argument(
            '--multihash',
            type=int,
            default=1,
            help='MultiHash: N hashes, each picking one of K copies of 1/N of the FFN '
            '(N must divide --embedding-size and the experts\' hidden size, --expert-ffn-size '
            'or else --ffn-size). 1 = plain hash layer.',
        )
        group.add_argument(
            '--hash-predictor-model-file',
            type=str,
            default=None,
            help='For --hash-type predicted: a trained generator with the same dictionary; '
            'its argmax next token is hashed. Frozen, and loaded again (not saved) on reload.',
        )
        group.add_argument(
            '--hash-cluster-model-file',
            type=str,
            default=None,
            help='For --hash-type clustered/dispersed: a trained model with the same dictionary '
            'whose token embeddings are clustered (k-means, K clusters). Needed only to build '
            'the table; a reloaded model uses its saved table.',
        )
        return parser

    # ------------------------------------------------------------ building

    def build_model(self, states=None):
        opt = self.opt
        function = hash_function_class(opt['hash_type'])
        if opt['multihash'] < 1:
            raise OptionError('--multihash', f"got {opt['multihash']}", "use 1 (no MultiHash) or more")
        if not function.generatable and (opt.get('interactive_mode') or not opt.get('skip_generation')):
            raise OptionError(
                '--hash-type',
                f"{opt['hash_type']} routes on the next token, known only under teacher forcing, "
                "so it cannot generate (interactive, beam search, --skip-generation false)",
                "train and evaluate it with --skip-generation true (it is an upper-bound analysis)",
            )
        if function.needs_predictor and str(opt.get('hash_encoder_layers') or '').strip():
            raise OptionError(
                '--hash-encoder-layers',
                "predicted hashing predicts the decoder's next token, so it has nothing to "
                "route on in the encoder",
                "leave --hash-encoder-layers empty, or use another --hash-type",
            )
        self._tables: Dict[int, torch.Tensor] = {}
        self._table_inputs: Optional[TableInputs] = None
        self._tables_from_checkpoint = self._checkpoint_has_router_tables()
        model = super().build_model(states)
        if function.needs_predictor:
            model.attach_predictor(self._load_predictor())
        return model

    @classmethod
    def upgrade_opt(cls, opt_from_disk: Opt) -> Opt:
        # Models saved before --hash-gates used each expert's output ungated.
        opt_from_disk = super().upgrade_opt(opt_from_disk)
        if 'hash_gates' not in opt_from_disk:
            opt_from_disk['hash_gates'] = 'none'
        return opt_from_disk

    def build_router(self, name: str) -> nn.Module:
        opt = self.opt
        self._check_top_k()
        seed = self._layer_seed(name)
        if seed not in self._tables:
            self._tables[seed] = self._make_tables(seed, name)
        config = self.sparse_config
        return HashRouter(opt['hash_type'], config.num_experts, seed, self._tables[seed],
                          experts_per_token=config.experts_per_token, gates=opt['hash_gates'],
                          dim=opt['embedding_size'])

    def _check_top_k(self) -> None:
        """Before any table is built (a balanced one may count the training data)."""
        opt = self.opt
        check_hash_gates(opt['hash_gates'], self.sparse_config.experts_per_token)
        config = self.sparse_config
        make_hash_function(opt['hash_type'], config.num_experts, 0, config.experts_per_token)
        if self.sparse_config.num_hashes > 1 and opt['hash_gates'] != 'none':
            raise OptionError('--multihash', "MultiHash routes each segment to one expert, ungated; "
                              f"it does not combine with --hash-gates {opt['hash_gates']}",
                              "pass --multihash 1, or --hash-gates none")

    def _layer_seed(self, name: str) -> int:
        seed = self.opt['hash_seed']
        if self.opt['hash_per_layer'] == 'different':
            seed += zlib.crc32(name.encode()) % 100_003
        return seed

    def _make_tables(self, seed: int, name: str) -> torch.Tensor:
        hash_type, n = self.opt['hash_type'], self.sparse_config.num_hashes
        num_experts, per_token = self.sparse_config.num_experts, self.sparse_config.experts_per_token
        inputs = self._inputs()
        if self._tables_from_checkpoint:
            return HashRouter.placeholder_tables(hash_type, num_experts, inputs, n, per_token)
        tables = HashRouter.build_tables(hash_type, num_experts, seed, inputs, n, per_token)
        # Only to describe the table: uniform gates need no parameters (nor random draws).
        router = HashRouter(hash_type, num_experts, seed, tables, per_token,
                            'none' if per_token == 1 else 'uniform')
        logger.info(router.describe(name, inputs.token_counts))
        return tables

    def _inputs(self) -> TableInputs:
        """What table builders need, loaded only for the types that use it."""
        if self._table_inputs is None:
            function = hash_function_class(self.opt['hash_type'])
            building = not self._tables_from_checkpoint
            counts = dictionary_counts(self.dict)
            if building and function.needs_counts and not counts_are_informative(counts):
                counts = count_training_tokens(self.opt, self.dict, self.opt['hash_count_examples'])
            self._table_inputs = TableInputs(
                vocab_size=len(self.dict),
                n_positions=get_n_positions_from_options(self.opt),
                token_counts=counts,
                embeddings=self._cluster_embeddings() if building and function.needs_embeddings else None,
            )
        return self._table_inputs

    def _checkpoint_has_router_tables(self) -> bool:
        """Will load_state_dict fill our tables? Then building them is wasted work."""
        path, _ = self._get_init_model(self.opt, None)
        if path is None or not os.path.isfile(path):
            return False
        try:
            state = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
        except RuntimeError:
            state = torch.load(path, map_location='cpu', weights_only=False)
        return any(k.endswith('router.table') for k in state.get('model', {}))

    def _cluster_embeddings(self) -> torch.Tensor:
        path = self._existing_file('--hash-cluster-model-file', self.opt.get('hash_cluster_model_file'))
        state = torch.load(path, map_location='cpu', weights_only=False)
        emb = state.get('model', {}).get('embeddings.weight')
        if emb is None:
            raise OptionError(
                '--hash-cluster-model-file',
                f"{path} has no token embeddings (model key embeddings.weight)",
                "point it at a trained ParlAI transformer model file",
            )
        self._check_vocab('--hash-cluster-model-file', emb.shape[0], _saved_tokens(path + '.dict'))
        num_experts = self.sparse_config.num_experts
        if num_experts > emb.shape[0]:
            raise OptionError('--num-experts', f"k-means cannot make {num_experts} clusters "
                              f"of {emb.shape[0]} token embeddings",
                              f"use at most {emb.shape[0]} experts, or another --hash-type")
        return emb

    def _load_predictor(self) -> nn.Module:
        from parlai.core.agents import create_agent_from_model_file

        path = self._existing_file(
            '--hash-predictor-model-file', self.opt.get('hash_predictor_model_file')
        )
        # Evaluation mode (no optimizer), on this worker's device. Under
        # distributed training ParlAI still wraps its model in DDP: unwrap it.
        overrides = {'datapath': self.opt.get('datapath'), 'datatype': 'valid',
                     'gpu': self.opt.get('gpu', -1), 'no_cuda': self.opt.get('no_cuda', False)}
        baseline = create_agent_from_model_file(path, overrides)
        self._check_vocab('--hash-predictor-model-file', len(baseline.dict), _tokens_of(baseline.dict))
        return getattr(baseline.model, 'module', baseline.model)

    def _existing_file(self, option: str, path: Optional[str]) -> str:
        if not path:
            raise OptionError(
                option,
                f"--hash-type {self.opt['hash_type']} needs a trained baseline model",
                f"pass {option} /path/to/model (a generator trained with the same dictionary)",
            )
        if not os.path.isfile(path):
            raise OptionError(option, f"{path} does not exist", "give the path of a trained model file")
        return path

    def _check_vocab(self, option: str, size: int, tokens: Optional[List[str]] = None) -> None:
        """The baseline's token ids must mean the same words as ours: same size and,
        where its token list is known, the same tokens in the same order."""
        if size != len(self.dict):
            raise OptionError(
                option,
                f"its dictionary has {size} tokens but this model's has {len(self.dict)}",
                "train the baseline with the same --dict-file",
            )
        if tokens is None or len(tokens) != size:
            return  # its token list is unknown, or not read as ParlAI reads it: size only
        ours = _tokens_of(self.dict)
        differ = next((i for i, (a, b) in enumerate(zip(tokens, ours)) if a != b), None)
        if differ is not None:
            raise OptionError(
                option,
                f"its dictionary has other tokens or another order than this model's (id {differ}: "
                f"{tokens[differ]!r} there, {ours[differ]!r} here), so its token ids mean other words",
                "train the baseline with the same --dict-file",
            )
