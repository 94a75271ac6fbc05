"""Sparse Transformer pieces built on ParlAI's swappable modules.

``SparseFFN`` = a router (which expert) + ``ExpertFFN`` (the dispatch). The
encoder/decoder subclasses put it in the listed layers and hand every sparse
layer the token ids of the current forward pass (``RoutingContext``).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Dict, Mapping, Optional

import torch
import torch.nn as nn
from parlai.agents.transformer.modules import (
    TransformerDecoder,
    TransformerEncoder,
    TransformerGeneratorModel,
)
from parlai.nn.checkpoint import checkpoint_wrapper
from parlai.utils.fsdp import fsdp_wrap

from parlai_hash.dispatch import DispatchPlan, ExpertFFN
from parlai_hash.routing import RoutingContext

#: Builds a router for the sparse layer named e.g. ``dec7``.
RouterFactory = Callable[[str], nn.Module]


class SparseFFN(nn.Module):
    """Drop-in for ``TransformerFFN``: routes each token to one of K experts."""

    def __init__(
        self,
        opt: Mapping,
        name: str,
        router: nn.Module,
        num_experts: int,
        dim: int,
        dim_hidden: int,
        relu_dropout: float = 0.0,
        activation: str = 'relu',
        **kwargs,
    ):
        super().__init__()
        self.name = name
        self.num_experts = num_experts
        self.router = router
        self.experts = ExpertFFN(num_experts, dim, dim_hidden, relu_dropout, activation)
        self.routing: Optional[RoutingContext] = None  # bound by the owning stack
        self.last_load: Optional[torch.Tensor] = None  # tokens per expert, last forward

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.routing is None:
            raise RuntimeError(f"{self.name}: no routing context was bound before forward")
        experts = self.router(self.routing, x)
        if experts.shape != x.shape[:-1]:
            raise RuntimeError(
                f"{self.name}: router gave {tuple(experts.shape)} ids for "
                f"{tuple(x.shape[:-1])} tokens"
            )
        # Padding is not computed: its FFN output is 0 and the residual carries it.
        real = self.routing.mask
        with torch.no_grad():
            self.last_load = torch.bincount(
                experts[real], minlength=self.num_experts
            ).cpu()
        plan = DispatchPlan.from_experts(experts, self.num_experts, keep=real)
        return self.experts(x, plan)


def sparse_ffn_builder(name: str, num_experts: int, router_factory: RouterFactory):
    """A ``feedforward=`` swappable constructor for one sparse layer."""

    def build(opt, dim=None, dim_hidden=None, relu_dropout=0.0, activation='relu', **kw):
        return SparseFFN(
            opt,
            name=name,
            router=router_factory(name),
            num_experts=num_experts,
            dim=dim or opt['embedding_size'],
            dim_hidden=dim_hidden or opt['ffn_size'],
            relu_dropout=relu_dropout,
            activation=activation,
        )

    return build


class _SparseStack:
    """Shared by the sparse encoder and decoder: which layers are sparse, binding."""

    _sparse_builders: Dict[int, Callable]

    def _layer_class(self, index: int):
        builder = self._sparse_builders.get(index)
        layer_cls = self.swappables.layer  # type: ignore[attr-defined]
        if builder is None:
            return layer_cls
        return layer_cls.with_components(feedforward=builder)

    def sparse_ffns(self) -> Dict[str, SparseFFN]:
        return {m.name: m for m in self.modules() if isinstance(m, SparseFFN)}  # type: ignore[attr-defined]

    def bind_routing(self, ctx: RoutingContext) -> None:
        for ffn in self.sparse_ffns().values():
            ffn.routing = ctx


class SparseTransformerDecoder(_SparseStack, TransformerDecoder):
    """ParlAI's decoder with sparse FFNs in the listed layers."""

    def __init__(self, *args, sparse_builders: Mapping[int, Callable], **kwargs):
        self._sparse_builders = dict(sparse_builders)  # read by build_layer in super().__init__
        super().__init__(*args, **kwargs)
        self.forced_labels: Optional[torch.Tensor] = None  # set during decode_forced

    def build_layer(self, index: int):
        return self._layer_class(index)(
            self.opt,
            attention_dropout=self.opt.get('attention_dropout', 0.0),
            relu_dropout=self.opt.get('relu_dropout', 0.0),
            dropout=self.opt.get('dropout', 0.0),
            activation=self.activation,
            variant=self.variant,
        )

    def forward(self, input, encoder_state, incr_state=None, **kwargs):
        # ParlAI passes the whole prefix even when decoding incrementally and
        # slices the newest token itself; route on that same token.
        if incr_state is not None:
            ctx = RoutingContext.incremental(input, self.pad_idx)
        else:
            ctx = RoutingContext.full(input, self.pad_idx, self.forced_labels)
        self.bind_routing(ctx)
        return super().forward(input, encoder_state, incr_state, **kwargs)


class SparseTransformerEncoder(_SparseStack, TransformerEncoder):
    """ParlAI's encoder with sparse FFNs in the listed layers."""

    def __init__(self, *args, sparse_builders: Mapping[int, Callable], **kwargs):
        self._sparse_builders = dict(sparse_builders)
        super().__init__(*args, **kwargs)

    def build_layers(self) -> nn.ModuleList:
        layers = nn.ModuleList()
        for index in range(self.n_layers):
            layer = self._layer_class(index)(
                self.opt,
                attention_dropout=self.opt.get('attention_dropout', 0.0),
                relu_dropout=self.opt.get('relu_dropout', 0.0),
                dropout=self.dropout_frac,
                variant=self.variant,
                activation=self.activation,
            )
            if self.opt.get('checkpoint_activations'):
                layer = checkpoint_wrapper(layer)
            layers.append(fsdp_wrap(layer))
        return layers

    def forward(self, input, positions=None, segments=None, **kwargs):
        self.bind_routing(RoutingContext.full(input, self.padding_idx))
        return super().forward(input, positions, segments, **kwargs)


class SparseTransformerModel(TransformerGeneratorModel):
    """Encoder-decoder Transformer whose listed FFNs are mixtures of experts."""

    @classmethod
    def build(
        cls,
        opt: Mapping,
        dictionary,
        num_experts: int,
        decoder_layers,
        encoder_layers,
        router_factory: RouterFactory,
    ) -> "SparseTransformerModel":
        def builders(prefix, layers):
            return {
                i: sparse_ffn_builder(f'{prefix}{i}', num_experts, router_factory)
                for i in layers
            }

        return cls.with_components(
            encoder=partial(
                SparseTransformerEncoder, sparse_builders=builders('enc', encoder_layers)
            ),
            decoder=partial(
                SparseTransformerDecoder, sparse_builders=builders('dec', decoder_layers)
            ),
        )(opt, dictionary)

    def sparse_ffns(self) -> Dict[str, SparseFFN]:
        return {m.name: m for m in self.modules() if isinstance(m, SparseFFN)}

    def decode_forced(self, encoder_states, ys):
        # Teacher forcing: let routers that need the next token (the oracle) see
        # the labels. Generation never goes through here, so it never sees them.
        self.decoder.forced_labels = ys
        try:
            return super().decode_forced(encoder_states, ys)
        finally:
            self.decoder.forced_labels = None
