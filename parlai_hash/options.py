"""Where the sparse layers go: parsing and validating the placement options.

Shared by every sparse agent (hash, and the learned-routing baselines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from parlai_hash.errors import OptionError


def parse_layer_list(option: str, value: Any, n_layers: int) -> Tuple[int, ...]:
    """Parse ``"7"`` or ``"1,3,5"`` (0-based) and check every index exists."""
    if value is None:
        return ()
    if isinstance(value, int):
        items = [value]
    else:
        text = str(value).strip()
        if text in ('', 'none'):
            return ()
        items = []
        for part in text.split(','):
            try:
                items.append(int(part))
            except ValueError:
                raise OptionError(
                    option,
                    f"{part.strip()!r} is not a layer index",
                    "give 0-based indices separated by commas, e.g. 1,3,5",
                ) from None
    bad = [i for i in items if not 0 <= i < n_layers]
    if bad:
        raise OptionError(
            option,
            f"layer {bad[0]} does not exist (the model has {n_layers} layers, 0..{n_layers - 1})",
            f"use indices from 0 to {n_layers - 1} or add layers",
        )
    if len(set(items)) != len(items):
        raise OptionError(option, "a layer is listed twice", "list each layer once")
    return tuple(sorted(items))


def check_multihash(num_hashes: int, embedding_size: int, ffn_size: int,
                    hidden_option: str = '--ffn-size') -> None:
    """MultiHash splits each token's vector into ``num_hashes`` equal slices, on
    both sides of the expert FFN, so it must divide both sizes. ``ffn_size`` is
    the routed experts' hidden size, set by ``hidden_option`` (``--ffn-size``, or
    ``--expert-ffn-size`` when that sizes the experts)."""
    sizes = (('--embedding-size', embedding_size), (hidden_option, ffn_size))
    for what, size in sizes:
        if size % num_hashes:
            both = ' and '.join(f'{flag} {value}' for flag, value in sizes)
            both_divisible = math.gcd(embedding_size, ffn_size)
            common = [d for d in range(2, both_divisible + 1) if both_divisible % d == 0]
            if common:
                fix = (f"pick a number of hashes that divides both {both}, "
                       f"such as {', '.join(map(str, common[:4]))}")
            else:
                fix = f"no number of hashes above 1 divides both {both}: use --multihash 1"
            raise OptionError('--multihash', f"{num_hashes} hashes do not divide {what} {size}", fix)


_warned_expert_parallel = False


def warn_if_expert_parallel_unused(opt: Mapping[str, Any]) -> None:
    """``--expert-parallel`` shards experts over workers; one process has none.

    Only when this command asked for it: a model trained expert-parallel keeps
    ``expert_parallel: true`` in its saved opt, and evaluating it in one process
    is normal. Once per process (train_model builds the agent again for its final
    evaluation).
    """
    global _warned_expert_parallel
    override = opt.get('override')
    asked = override.get('expert_parallel') if override is not None else opt.get('expert_parallel')
    if not asked or _warned_expert_parallel:
        return
    from parlai.utils import logging
    from parlai.utils.distributed import is_distributed

    if not is_distributed():
        _warned_expert_parallel = True
        logging.warning(
            '--expert-parallel true has no effect in a single process: it shards the experts '
            'over the workers of multiprocessing_train/distributed_train; here every expert '
            'stays in this process'
        )


def n_decoder_layers(opt: Mapping[str, Any]) -> int:
    n = opt.get('n_decoder_layers', -1)
    return n if n is not None and n > 0 else opt['n_layers']


def n_encoder_layers(opt: Mapping[str, Any]) -> int:
    n = opt.get('n_encoder_layers', -1)
    return n if n is not None and n > 0 else opt['n_layers']


def default_decoder_layer(n_layers: int) -> int:
    """One late layer: the last but one (the paper found late layers best)."""
    return max(n_layers - 2, 0)


def check_experts_per_token(experts_per_token: Any, num_experts: int, num_hashes: int) -> None:
    """k distinct experts per token: 1 <= k <= K, and not with MultiHash."""
    k = experts_per_token
    if not isinstance(k, int) or k < 1:
        raise OptionError('--experts-per-token', f"got {k!r}, need at least 1",
                          "pass --experts-per-token 1 (one expert per token) or more")
    if k > num_experts:
        raise OptionError('--experts-per-token',
                          f"{k} distinct experts per token, but --num-experts is {num_experts}",
                          f"pass --experts-per-token {num_experts} or less, or more --num-experts")
    if k > 1 and num_hashes > 1:
        raise OptionError('--multihash', f"MultiHash routes each segment to one expert; it does not "
                          f"combine with --experts-per-token {k}",
                          "pass --multihash 1, or --experts-per-token 1")


def check_shared_experts(count: Any, size: Any) -> None:
    """``--shared-experts S`` (S >= 0) each of ``--shared-expert-size`` hidden units (>= 1, or unset)."""
    if not isinstance(count, int) or count < 0:
        raise OptionError('--shared-experts', f"got {count!r}, need 0 or more",
                          "pass --shared-experts 0 (none, as in the paper) or a positive count")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise OptionError('--shared-expert-size', f"got {size!r}, need a positive hidden size",
                          "pass e.g. --shared-expert-size 512, or leave it out to use --ffn-size")


def check_expert_ffn_size(size: Any) -> Optional[int]:
    """``--expert-ffn-size``: the routed experts' hidden size; unset or 0 means ``--ffn-size``.

    Returns the size, or None for the default.
    """
    if size is None or size == 0:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OptionError('--expert-ffn-size', f"got {size!r}, need a positive hidden size",
                          "pass e.g. --expert-ffn-size 128, or 0 (or leave it out) to use --ffn-size")
    return size


@dataclass(frozen=True)
class SparseConfig:
    """What every sparse layer of a model is, decided once from ``opt`` when the model is built.

    Agents build it (``from_opt``) and hand it down: layers, dispatch and routers
    read their sizes from here, never from ``opt``.
    """

    num_experts: int
    decoder_layers: Tuple[int, ...] = ()
    encoder_layers: Tuple[int, ...] = ()
    experts_per_token: int = 1  # k: top-k routing
    num_hashes: int = 1  # MultiHash N: one expert per segment
    shared_experts: int = 0  # always-on FFNs added to the routed output
    shared_expert_size: Optional[int] = None  # hidden size of each; None: the layer's --ffn-size
    expert_gemm: str = 'auto'
    #: Hidden size of each routed expert; None: the layer's --ffn-size. Its own
    #: option so that top-k layers can match a dense FFN's compute (k·D' + D_s = D)
    #: without shrinking the dense FFNs of the other layers.
    expert_ffn_size: Optional[int] = None

    def expert_hidden(self, ffn_size: int) -> int:
        """Hidden size of each routed expert in a layer whose FFN size is ``ffn_size``."""
        return self.expert_ffn_size or ffn_size

    @property
    def expert_hidden_option(self) -> str:
        """The option that sets the routed experts' hidden size (for error messages)."""
        return '--expert-ffn-size' if self.expert_ffn_size else '--ffn-size'

    @property
    def choices(self) -> int:
        """Expert ids per token: k, or MultiHash's N segments."""
        return self.num_hashes if self.num_hashes > 1 else self.experts_per_token

    @classmethod
    def from_opt(cls, opt: Mapping[str, Any]) -> "SparseConfig":
        num_experts = opt.get('num_experts')
        if not isinstance(num_experts, int) or num_experts < 1:
            raise OptionError(
                '--num-experts',
                f"got {num_experts!r}, need at least 1 expert",
                "pass a positive integer such as --num-experts 16",
            )
        n_dec = n_decoder_layers(opt)
        dec = opt.get('hash_layers')
        decoder_layers = (
            (default_decoder_layer(n_dec),)
            if dec is None
            else parse_layer_list('--hash-layers', dec, n_dec)
        )
        encoder_layers = parse_layer_list(
            '--hash-encoder-layers', opt.get('hash_encoder_layers'), n_encoder_layers(opt)
        )
        if not decoder_layers and not encoder_layers:
            raise OptionError(
                '--hash-layers',
                "no sparse layer is left",
                "name at least one decoder layer, or use -m transformer/generator for a dense model",
            )
        # Before any router is built (hash tables may count the training data).
        num_hashes = opt.get('multihash') or 1
        expert_ffn_size = check_expert_ffn_size(opt.get('expert_ffn_size'))
        if num_hashes > 1:
            check_multihash(num_hashes, opt['embedding_size'], expert_ffn_size or opt['ffn_size'],
                            '--expert-ffn-size' if expert_ffn_size else '--ffn-size')
        experts_per_token = opt.get('experts_per_token', 1)
        check_experts_per_token(experts_per_token, num_experts, num_hashes)
        shared, shared_size = opt.get('shared_experts') or 0, opt.get('shared_expert_size')
        check_shared_experts(shared, shared_size)
        warn_if_expert_parallel_unused(opt)
        return cls(num_experts, decoder_layers, encoder_layers, experts_per_token, num_hashes, shared,
                   shared_size, opt.get('expert_gemm') or 'auto', expert_ffn_size)

