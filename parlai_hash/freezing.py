"""``--freeze``: which parameters a fine-tuning run may change (the paper's Table 8).

| mode            | trainable                                                        |
| none            | everything                                                       |
| experts         | everything except the sparse layers' routed expert weights      |
| router          | everything except the learned router (Switch router / Token      |
|                 | Switch embedding / BASE centroids / hash layers' learned gates,  |
|                 | ``--hash-gates learned``); hash tables are fixed buffers anyway  |
| all-but-experts | only the sparse layers' expert weights                           |
| all-but-last    | only the last decoder layer and the output                       |

Shared experts (``--shared-experts``) run on every token like a dense FFN:
they are not routed experts, so ``experts`` leaves them trainable and
``all-but-experts`` freezes them.

Tied embeddings: ParlAI's output projection *is* the token embedding matrix
(``output = h · E^T``), shared with the encoder and decoder inputs. It follows
the output: trainable under ``all-but-last``, frozen under ``all-but-experts``,
untouched by ``experts`` and ``router``. With ``--variant prelayernorm`` the
decoder's final LayerNorm belongs to the output too.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch.nn as nn

from parlai_hash.errors import OptionError

FREEZE_MODES = ('none', 'experts', 'router', 'all-but-experts', 'all-but-last')


def is_expert(name: str) -> bool:
    return '.ffn.experts.' in name


def is_router(name: str) -> bool:
    return '.ffn.router.' in name


def _last_decoder_layer_or_output(n_decoder_layers: int) -> Callable[[str], bool]:
    last = f'decoder.layers.{n_decoder_layers - 1}.'

    def trainable(name: str) -> bool:
        return (
            name.startswith(last)
            or name == 'embeddings.weight'  # the tied output projection
            or name.startswith('decoder.norm_embeddings.')
        )

    return trainable


def trainable_rule(mode: str, n_decoder_layers: int) -> Callable[[str], bool]:
    rules: Dict[str, Callable[[str], bool]] = {
        'none': lambda name: True,
        'experts': lambda name: not is_expert(name),
        'router': lambda name: not is_router(name),
        'all-but-experts': is_expert,
        'all-but-last': _last_decoder_layer_or_output(n_decoder_layers),
    }
    if mode not in rules:
        raise OptionError('--freeze', f"unknown mode {mode!r}", f"choose one of {', '.join(FREEZE_MODES)}")
    return rules[mode]


def apply_freeze(model: nn.Module, mode: str, n_decoder_layers: int) -> Dict[str, int]:
    """Set ``requires_grad``; return parameter counts (trainable, total)."""
    names = [n for n, _ in model.named_parameters()]
    if mode == 'router' and not any(is_router(n) for n in names):
        raise OptionError(
            '--freeze',
            "router: this model's routing has no parameters (hash routing is a fixed table; "
            "only --hash-gates learned adds some)",
            "use --freeze experts, all-but-experts or all-but-last",
        )
    if mode in ('experts', 'all-but-experts') and not any(is_expert(n) for n in names):
        raise OptionError('--freeze', f"{mode}: the model has no expert layers", "use --freeze all-but-last or none")
    keep = trainable_rule(mode, n_decoder_layers)
    trainable = total = 0
    for name, param in model.named_parameters():
        if mode != 'none':
            param.requires_grad_(keep(name))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return {'trainable': trainable, 'total': total}
