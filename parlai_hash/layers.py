"""Sparse Transformer pieces built on ParlAI's swappable modules.

``SparseFFN`` = a router (which expert) + a dispatch plan (tokens sorted by
expert) + the experts module that runs it. The layer does not know where its
experts live: under ``--expert-parallel`` the module is swapped for a sharded
one with the same call (``parlai_hash.parallel``). The encoder/decoder
subclasses put it in the listed layers and hand every sparse layer the token
ids of the current forward pass (``RoutingContext``).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
from parlai.agents.transformer.modules import (
    TransformerDecoder,
    TransformerEncoder,
    TransformerGeneratorModel,
)
from parlai.nn.checkpoint import checkpoint_wrapper
from parlai.utils.fsdp import fsdp_wrap

from parlai_hash.dispatch import DispatchPlan
from parlai_hash.experts import ExpertFFN, MultiHashExpertFFN
from parlai_hash.options import SparseConfig, check_multihash
from parlai_hash.routing import Route, RoutingContext
from parlai_hash.shared_experts import SharedExperts

#: Builds a router for the sparse layer named e.g. ``dec7``.
RouterFactory = Callable[[str], nn.Module]


class SparseFFN(nn.Module):
    """Drop-in for ``TransformerFFN``: routes each token to k of K experts (k = 1:
    one expert; MultiHash: one expert per segment), plus any always-on shared
    experts (``--shared-experts``), whose output is added.

    ``dim_hidden`` is the layer's FFN size (``--ffn-size``): the routed experts'
    hidden size unless ``config.expert_ffn_size`` sets theirs, and the shared
    experts' unless ``config.shared_expert_size`` does.
    """

    def __init__(
        self,
        config: SparseConfig,
        name: str,
        router: nn.Module,
        dim: int,
        dim_hidden: int,
        relu_dropout: float = 0.0,
        activation: str = 'relu',
    ):
        super().__init__()
        self.name = name
        self.config = config
        self.num_experts = config.num_experts
        self.num_hashes = config.num_hashes
        self.experts_per_token = config.experts_per_token
        self.router = router
        expert_hidden = config.expert_hidden(dim_hidden)
        if config.num_hashes == 1:
            self.experts = ExpertFFN(config.num_experts, dim, expert_hidden, relu_dropout, activation)
        else:
            check_multihash(config.num_hashes, dim, expert_hidden, config.expert_hidden_option)
            self.experts = MultiHashExpertFFN(
                config.num_hashes, config.num_experts, dim, expert_hidden, relu_dropout, activation
            )
        self.experts.set_gemm(config.expert_gemm)
        self.shared: Optional[SharedExperts] = None
        if config.shared_experts:
            self.shared = SharedExperts(config.shared_experts, dim, config.shared_expert_size or dim_hidden,
                                        relu_dropout, activation)
        self.routing: Optional[RoutingContext] = None  # bound by the owning stack
        self.last_route: Optional[Route] = None  # aux loss and stats of the last forward
        #: Real tokens routed to each expert (every k choice, every MultiHash hash),
        #: summed over forwards until ``take_load``. Kept on the layer's device so
        #: counting never waits for the host and a caller fetches every layer's
        #: counts in one copy; not saved (a statistic of the run, not of the model).
        self.register_buffer('load', torch.zeros(config.num_experts, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.routing is None:
            raise RuntimeError(f"{self.name}: no routing context was bound before forward")
        route: Route = self.router(self.routing, x)
        y = self._routed(x, route)
        return y if self.shared is None else y + self.shared(x)

    def _routed(self, x: torch.Tensor, route: Route) -> torch.Tensor:
        """The routed experts' output (0 for tokens no expert computes)."""
        experts = route.experts
        choices = self.config.choices
        expected = (*x.shape[:-1], choices)
        if tuple(experts.shape) != expected:
            raise RuntimeError(
                f"{self.name}: router gave {tuple(experts.shape)} ids for {expected} routes"
            )
        # Padding and rows over capacity are not computed: their FFN output
        # is 0 and the residual carries them.
        real = self.routing.mask
        keep = real.unsqueeze(-1).expand_as(experts)
        if route.keep is not None:
            keep = keep & route.keep
        self.last_route = route
        self._count_load(experts, real)
        # What each plan routes: all k choices at once, or (MultiHash) hash m's segment.
        if self.num_hashes == 1:
            rows = [(experts, keep, choices)]
        else:
            rows = list(zip(experts.unbind(-1), keep.unbind(-1), [1] * choices))
        # ``experts`` computes them wherever its experts live (this process, or
        # other workers under --expert-parallel): the call is the same.
        plans = self._plans(route, lambda: [
            DispatchPlan.from_experts(e, self.num_experts, keep=k, choices=c) for e, k, c in rows])
        if self.num_hashes == 1:
            return self.experts(x, plans[0], route.gates)
        return self.experts(x, plans)

    def _count_load(self, experts: torch.Tensor, real: torch.Tensor) -> None:
        # index_add_, not bincount: bincount reads the largest id back to the
        # host (a sync per layer per decoding step on CUDA); padding adds 0.
        weights = real.unsqueeze(-1).expand_as(experts).reshape(-1).to(self.load.dtype)
        self.load.index_add_(0, experts.detach().reshape(-1).to(torch.long), weights)

    def take_load(self) -> torch.Tensor:
        """Real tokens per expert since the last call (``[K]`` int64 on the layer's
        device; top-k and MultiHash count every choice), and start again from 0."""
        load = self.load.clone()
        self.load.zero_()
        return load

    def _plans(self, route: Route, build: Callable[[], List[DispatchPlan]]) -> List[DispatchPlan]:
        """Plans (one per hash) shared with other layers whose route has the same
        ``plan_key`` in this forward pass, else new.

        Hash routing is known from the token ids alone, so layers sharing a table
        (``--hash-per-layer same``) share one plan per forward pass, and with it
        whatever is derived from it once (``DispatchPlan.derived``: in
        expert-parallel training, the exchange of counts between workers).
        Learned routers decide per layer from the hidden state: no key, always a
        new plan.
        """
        if route.plan_key is None:
            return build()
        if route.plan_key not in self.routing.plans:
            self.routing.plans[route.plan_key] = build()
        return self.routing.plans[route.plan_key]


def take_loads(layers: Mapping[str, SparseFFN]) -> Dict[str, torch.Tensor]:
    """Every layer's ``take_load()`` on the host, fetched in one device-to-host copy."""
    taken = {name: ffn.take_load() for name, ffn in layers.items()}
    if not taken:
        return {}
    fetched = torch.cat(list(taken.values())).cpu()
    return dict(zip(taken, fetched.split([load.numel() for load in taken.values()])))


def sparse_ffn_builder(name: str, config: SparseConfig, router_factory: RouterFactory):
    """A ``feedforward=`` swappable constructor for one sparse layer.

    ParlAI hands it the dense FFN's sizes (``--ffn-size``); the routed experts
    take ``config.expert_ffn_size`` instead where it is set (``SparseFFN``).
    """

    def build(opt, dim=None, dim_hidden=None, relu_dropout=0.0, activation='relu', **kw):
        return SparseFFN(
            config,
            name=name,
            router=router_factory(name),
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
        # Found once: walking every submodule costs ~0.2 ms, paid on each
        # decoding step otherwise. Wrappers (FSDP, activation checkpointing)
        # keep the same SparseFFN objects, and nothing replaces them.
        found = self.__dict__.get('_sparse_ffns')
        if found is None:
            found = {m.name: m for m in self.modules() if isinstance(m, SparseFFN)}  # type: ignore[attr-defined]
            self.__dict__['_sparse_ffns'] = found
        return found

    def bind_routing(self, ctx: RoutingContext) -> None:
        for ffn in self.sparse_ffns().values():
            ffn.routing = ctx


class SparseTransformerDecoder(_SparseStack, TransformerDecoder):
    """ParlAI's decoder with sparse FFNs in the listed layers."""

    def __init__(self, *args, sparse_builders: Mapping[int, Callable], **kwargs):
        self._sparse_builders = dict(sparse_builders)  # read by build_layer in super().__init__
        super().__init__(*args, **kwargs)
        self.forced_labels: Optional[torch.Tensor] = None  # set during decode_forced
        self.predictor: Optional["FrozenPredictor"] = None  # not a submodule: the model owns it

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
        if len(encoder_state) == 3:  # a frozen baseline rides along (predicted hashing)
            *encoder_state, predictor_state = encoder_state
            ctx.predicted_next = self.predictor.predict_next(input, predictor_state)[:, ctx.offset :]
        self.bind_routing(ctx)
        return super().forward(input, tuple(encoder_state), incr_state, **kwargs)


class SparseTransformerEncoder(_SparseStack, TransformerEncoder):
    """ParlAI's encoder with sparse FFNs in the listed layers."""

    def __init__(self, *args, sparse_builders: Mapping[int, Callable], **kwargs):
        self._sparse_builders = dict(sparse_builders)
        super().__init__(*args, **kwargs)
        self.predictor: Optional["FrozenPredictor"] = None  # not a submodule: the model owns it

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
        self.bind_routing(RoutingContext.encoder(input, self.padding_idx))
        states = super().forward(input, positions, segments, **kwargs)
        if self.predictor is not None:
            states = (*states, self.predictor.encode(input))
        return states


class FrozenPredictor(nn.Module):
    """A frozen baseline generator whose argmax next token drives ``predicted`` hashing.

    It is never trained, never in train mode, and never saved into our
    checkpoint (``--hash-predictor-model-file`` is loaded again instead).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def encode(self, tokens: torch.Tensor):
        return self.model.encoder(tokens)

    @torch.no_grad()
    def predict_next(self, decoder_input: torch.Tensor, encoder_state) -> torch.Tensor:
        """``[B, L]``: argmax next token after every prefix of ``decoder_input``.

        Always a full pass over the prefix (no incremental state to keep in
        step with beam reordering): exact in every decoding mode.
        """
        latent, _ = self.model.decoder(decoder_input, encoder_state)
        return self.model.output(latent).argmax(dim=-1)

    def reorder(self, encoder_state, indices):
        return self.model.reorder_encoder_states(encoder_state, indices)


class SparseTransformerModel(TransformerGeneratorModel):
    """Encoder-decoder Transformer whose listed FFNs are mixtures of experts."""

    #: ParlAI's ``--fp16`` calls ``model.half()``; ``--fp16-dtype bfloat16`` sets this.
    half_dtype: torch.dtype = torch.float16

    def half(self):
        return self.to(self.half_dtype)

    @classmethod
    def build(
        cls,
        opt: Mapping,
        dictionary,
        config: SparseConfig,
        router_factory: RouterFactory,
    ) -> "SparseTransformerModel":
        def builders(prefix, layers):
            return {i: sparse_ffn_builder(f'{prefix}{i}', config, router_factory) for i in layers}

        return cls.with_components(
            encoder=partial(
                SparseTransformerEncoder, sparse_builders=builders('enc', config.encoder_layers)
            ),
            decoder=partial(
                SparseTransformerDecoder, sparse_builders=builders('dec', config.decoder_layers)
            ),
        )(opt, dictionary)

    def attach_predictor(self, model: nn.Module) -> None:
        """Give ``predicted`` routers a frozen baseline (kept out of checkpoints)."""
        self.predictor = FrozenPredictor(model)
        # Plain references: registering it under encoder/decoder too would save it.
        object.__setattr__(self.encoder, 'predictor', self.predictor)
        object.__setattr__(self.decoder, 'predictor', self.predictor)
        self._register_state_dict_hook(_drop_predictor_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_predictor_keys)

    def reorder_encoder_states(self, encoder_states, indices):
        if len(encoder_states) == 3:
            enc, mask, pred = encoder_states
            enc, mask = super().reorder_encoder_states((enc, mask), indices)
            if not torch.is_tensor(indices):
                indices = torch.LongTensor(indices).to(enc.device)
            return enc, mask, self.predictor.reorder(pred, indices)
        return super().reorder_encoder_states(encoder_states, indices)

    def sparse_ffns(self) -> Dict[str, SparseFFN]:
        return {**self.encoder.sparse_ffns(), **self.decoder.sparse_ffns()}

    def decode_forced(self, encoder_states, ys):
        # Teacher forcing: let routers that need the next token (the oracle) see
        # the labels. Generation never goes through here, so it never sees them.
        self.decoder.forced_labels = ys
        try:
            return super().decode_forced(encoder_states, ys)
        finally:
            self.decoder.forced_labels = None


def _drop_predictor_keys(module, state_dict, prefix, local_metadata):
    for key in [k for k in state_dict if k.startswith(prefix + 'predictor.')]:
        del state_dict[key]


def _ignore_missing_predictor_keys(module, incompatible_keys):
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not k.startswith('predictor.')]
