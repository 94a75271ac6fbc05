"""Does a checkpoint fit the model these options build? One line naming the option if not.

Without this, resuming or fine-tuning with other sparse options (``--num-experts``,
``--hash-layers``, ``--expert-ffn-size``, another agent or hash type) stops in
torch's ``load_state_dict`` with a list of size mismatches and missing keys.
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Set, Tuple

import torch

from parlai_hash.errors import OptionError

_EXPERT_KEY = re.compile(r'^(encoder|decoder)\.layers\.(\d+)\.ffn\.experts\.')
_EXPERT_W1 = re.compile(r'\.ffn\.experts\.expert_w1(\.\d+)?$')
#: ``[K, D', ...]`` in every expert kind (MultiHash: each segment reads the whole hidden vector).
_EXPERT_W2 = re.compile(r'\.ffn\.experts\.expert_w2(\.\d+)?$')
#: ParlAI's dense FFN: ``lin1.weight`` is ``[--ffn-size, d]``.
_DENSE_LIN1 = re.compile(r'^(encoder|decoder)\.layers\.\d+\.ffn\.lin1\.weight$')
_LAYER_OPTION = {'decoder': '--hash-layers', 'encoder': '--hash-encoder-layers'}
_FRESH = 'or use a fresh --model-file (and no --init-model)'


def expert_layers(keys) -> Dict[str, List[int]]:
    """Stack -> indices of the layers whose FFN holds experts."""
    found: Dict[str, Set[int]] = {'encoder': set(), 'decoder': set()}
    for key in keys:
        match = _EXPERT_KEY.match(key)
        if match:
            found[match.group(1)].add(int(match.group(2)))
    return {stack: sorted(layers) for stack, layers in found.items()}


def _routing_state(keys) -> Set[str]:
    return {key.split('.ffn.router.', 1)[1] for key in keys if '.ffn.router.' in key}


def _describe(layers: Dict[str, List[int]]) -> str:
    parts = [f"{stack} layers {','.join(map(str, idx))}" for stack, idx in layers.items() if idx]
    return ' and '.join(parts) or 'no layer (a dense model)'


def _shared_shape(state: Mapping[str, torch.Tensor]) -> Tuple[int, int]:
    """(S, hidden size) of the shared experts, (0, 0) without."""
    shapes = {tuple(v.shape) for k, v in state.items() if k.endswith('.ffn.shared.w1')}
    (count, _, size), = shapes or {(0, 0, 0)}
    return count, size


def _hidden_sizes(state: Mapping[str, torch.Tensor], pattern: re.Pattern, dim: int) -> List[int]:
    return sorted({int(v.shape[dim]) for k, v in state.items() if pattern.search(k)})


def _check_ffn_sizes(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> None:
    """The dense FFNs' hidden size (``--ffn-size``), then the routed experts' (``--expert-ffn-size``)."""
    theirs, ours = _hidden_sizes(state, _DENSE_LIN1, 0), _hidden_sizes(own, _DENSE_LIN1, 0)
    if theirs and ours and theirs != ours:
        raise OptionError('--ffn-size', f"the checkpoint's dense FFNs have {'/'.join(map(str, theirs))} hidden "
                          f"units, these options {'/'.join(map(str, ours))}",
                          f"pass --ffn-size {theirs[0]} as it was trained")
    theirs, ours = _hidden_sizes(state, _EXPERT_W2, 1), _hidden_sizes(own, _EXPERT_W2, 1)
    if theirs and ours and theirs != ours:
        raise OptionError('--expert-ffn-size', f"the checkpoint's routed experts have "
                          f"{'/'.join(map(str, theirs))} hidden units, these options {'/'.join(map(str, ours))}",
                          f"pass --expert-ffn-size {theirs[0]} as it was trained")


def _check_shared_experts(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> None:
    (theirs, their_size), (ours, our_size) = _shared_shape(state), _shared_shape(own)
    if theirs != ours:
        raise OptionError('--shared-experts', f"the checkpoint's sparse layers have {theirs} shared experts, "
                          f"these options {ours}", f"pass --shared-experts {theirs} as it was trained")
    if their_size != our_size:
        raise OptionError('--shared-expert-size', f"the checkpoint's shared experts have {their_size} hidden "
                          f"units, these options {our_size}", f"pass --shared-expert-size {their_size}")


def check_checkpoint_fits(
    state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], num_experts: int
) -> None:
    """Raise an OptionError if ``state`` (a checkpoint's model) cannot load into a
    model whose state dict is ``own`` with ``num_experts`` experts per layer."""
    theirs, ours = expert_layers(state), expert_layers(own)
    if theirs != ours:
        if not any(theirs.values()):
            raise OptionError(
                '--init-model', "the checkpoint is a dense model (no expert layers), these "
                f"options put experts in {_describe(ours)}",
                f"train the sparse model from scratch, {_FRESH}",
            )
        stack = 'decoder' if theirs['decoder'] != ours['decoder'] else 'encoder'
        wanted = ','.join(map(str, theirs[stack])) or "''"
        raise OptionError(
            _LAYER_OPTION[stack], f"the checkpoint has experts in {_describe(theirs)}, these "
            f"options in {_describe(ours)}",
            f"pass {_LAYER_OPTION[stack]} {wanted} as it was trained, {_FRESH}",
        )
    counts = sorted({int(value.shape[0]) for key, value in state.items() if _EXPERT_W1.search(key)})
    if counts and counts != [num_experts]:
        raise OptionError(
            '--num-experts', f"the checkpoint has {'/'.join(map(str, counts))} experts per sparse "
            f"layer, these options {num_experts}",
            f"pass --num-experts {counts[0]} as it was trained, {_FRESH}",
        )
    _check_ffn_sizes(state, own)
    _check_shared_experts(state, own)
    theirs_routing, ours_routing = _routing_state(state), _routing_state(own)
    if theirs_routing ^ ours_routing == {'router_bias'}:
        # Switch models trained before the router had a bias.
        had = 'router_bias' in theirs_routing
        raise OptionError(
            '--router-bias', f"the checkpoint's router {'has' if had else 'has no'} bias, these "
            f"options build one {'without' if had else 'with'}",
            f"pass --router-bias {'true' if had else 'false'} as it was trained",
        )
    if {'token_logits.weight', 'token_embedding.weight'} <= theirs_routing ^ ours_routing:
        had = 'logits' if 'token_logits.weight' in theirs_routing else 'embedding'
        raise OptionError(
            '--token-switch-table', f"the checkpoint's Token Switch router uses a {had} table",
            f"pass --token-switch-table {had} as it was trained",
        )
    if theirs_routing ^ ours_routing == {'gate.weight'}:
        had = 'gate.weight' in theirs_routing
        raise OptionError(
            '--hash-gates', f"the checkpoint's hash layers {'have' if had else 'have no'} learned "
            f"gates, these options build {'none' if had else 'them'}",
            "pass --hash-gates learned as it was trained" if had
            else "pass the --hash-gates it was trained with (none or uniform; its .opt file)",
        )
    if theirs_routing != ours_routing:
        raise OptionError(
            '--model', f"the checkpoint's routers hold {sorted(theirs_routing)}, the routers these "
            f"options build hold {sorted(ours_routing)}: it was trained with another agent "
            "(-m) or routing option (--hash-type, --multihash, --switch-input)",
            f"use the options it was trained with (its .opt file), {_FRESH}",
        )
    for key, value in state.items():
        if not (key.endswith('router.table') and key in own and own[key].shape != value.shape):
            continue
        # Top-k tables are [N, V, k]; one expert per token, [N, V].
        theirs_k, ours_k = (t.shape[2] if t.dim() == 3 else 1 for t in (value, own[key]))
        if theirs_k != ours_k:
            raise OptionError(
                '--experts-per-token', f"the checkpoint's routing table ({key}) gives {theirs_k} "
                f"expert(s) per token, these options {ours_k}",
                f"pass --experts-per-token {theirs_k} as it was trained",
            )
        # Token-indexed tables have one entry per dictionary token.
        raise OptionError(
            '--dict-file or --hash-type',
            f"the checkpoint's routing table ({key}) has shape {tuple(value.shape)}, these "
            f"options build {tuple(own[key].shape)}: it was built for a dictionary of another "
            "size or another hash type",
            "use the dictionary (its .dict file) and --hash-type it was trained with",
        )
