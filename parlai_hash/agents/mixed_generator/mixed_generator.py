"""``-m mixed_generator``: one model whose sparse layers route differently, layer by layer.

``--layer-routing "hash:0,1,2;switch:8,9,10"`` makes decoder layers 0-2 hash
layers and 8-10 Switch layers (DeepSeek-V4's stack: token-id routing early,
learned top-k late). Each router takes its own agent's options (``--hash-type``,
``--hash-gates``, ``--load-balance-weight``, ...); the experts, k, shared
experts and dispatch are common to every sparse layer (``SparseConfig``).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch.nn as nn
from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser

from parlai_hash.agents.base_generator.base_generator import BaseLayersGeneratorAgent
from parlai_hash.agents.hash_generator.hash_generator import HashGeneratorAgent
from parlai_hash.agents.switch_generator.switch_generator import SwitchGeneratorAgent
from parlai_hash.errors import OptionError
from parlai_hash.options import n_decoder_layers, parse_layer_list

#: Router kind -> the agent whose ``build_router`` makes it.
ROUTER_AGENTS = {'hash': HashGeneratorAgent, 'switch': SwitchGeneratorAgent, 'base': BaseLayersGeneratorAgent}


def parse_layer_routing(spec: str, n_layers: int) -> Dict[int, str]:
    """``"hash:0,1;switch:3"`` -> ``{0: 'hash', 1: 'hash', 3: 'switch'}`` (decoder layers, 0-based)."""
    routing: Dict[int, str] = {}
    for part in filter(None, (p.strip() for p in str(spec or '').split(';'))):
        kind, _, layers = part.partition(':')
        kind = kind.strip()
        if kind not in ROUTER_AGENTS or not layers.strip():
            raise OptionError('--layer-routing', f"{part!r} is not ROUTER:LAYERS",
                              f"write e.g. \"hash:0,1,2;switch:8,9,10\" with routers {', '.join(ROUTER_AGENTS)}")
        for layer in parse_layer_list('--layer-routing', layers, n_layers):
            if layer in routing:
                raise OptionError('--layer-routing', f"decoder layer {layer} is routed twice "
                                  f"({routing[layer]} and {kind})", "give each layer one router")
            routing[layer] = kind
    if not routing:
        raise OptionError('--layer-routing', "no layer is routed",
                          "pass e.g. --layer-routing \"hash:0,1,2;switch:8,9,10\"")
    return routing


class MixedGeneratorAgent(HashGeneratorAgent, SwitchGeneratorAgent, BaseLayersGeneratorAgent):
    """Sparse decoder layers routed by hash, Switch or BASE, each as ``--layer-routing`` says."""

    @classmethod
    def add_cmdline_args(cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        parser.add_argument_group('Mixed routing').add_argument(
            '--layer-routing', type=str, default=None,
            help='Which router each sparse decoder layer uses, ROUTER:LAYERS separated by ";", '
            'routers hash, switch or base, e.g. "hash:0,1,2;switch:8,9,10". These are the '
            'sparse layers (--hash-layers is set from them).',
        )
        return parser

    def build_model(self, states=None):
        opt = self.opt
        self._layer_routing = parse_layer_routing(opt.get('layer_routing'), n_decoder_layers(opt))
        layers = ','.join(map(str, sorted(self._layer_routing)))
        if opt.get('hash_layers') not in (None, layers):
            raise OptionError('--hash-layers', f"got {opt['hash_layers']}, but --layer-routing routes "
                              f"layers {layers}", "leave --hash-layers out: --layer-routing sets it")
        if str(opt.get('hash_encoder_layers') or '').strip():
            raise OptionError('--hash-encoder-layers', "--layer-routing routes decoder layers only",
                              "leave --hash-encoder-layers empty, or use -m hash_generator/switch_generator")
        if (opt.get('multihash') or 1) > 1:
            raise OptionError('--multihash', "MultiHash is a hash layer's split of its FFN; the other "
                              "routers have no such split", "pass --multihash 1 with -m mixed_generator")
        opt['hash_layers'] = layers
        return super().build_model(states)

    def build_router(self, name: str) -> nn.Module:
        kind = self._layer_routing[int(name[len('dec'):])]
        return ROUTER_AGENTS[kind].build_router(self, name)
