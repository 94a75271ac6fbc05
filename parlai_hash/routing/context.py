"""What a router may look at for the tokens of one forward pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

#: Stands for "no token here" (the token before position 0, after the last).
NO_TOKEN = -1


@dataclass
class RoutingContext:
    """Token ids of one forward pass, in a form that is right in every mode.

    ``history`` holds every token id known so far (``[B, L]``); the forward
    pass processes positions ``offset .. L-1``. Under teacher forcing and in
    the first generation step ``offset`` is 0; in incremental decoding ParlAI
    feeds only the newest position, so ``offset = L - 1`` and routers still see
    the true token and its predecessors rather than a stale position.
    """

    history: torch.Tensor
    offset: int
    pad_idx: int
    #: ``[B, L]``: the token each position of ``history`` must predict. Only
    #: under teacher forcing (labels) or in the encoder (the input itself).
    next_tokens: Optional[torch.Tensor] = None
    #: ``[B, T]``: a frozen baseline's predicted next token for the positions
    #: processed now (``predicted`` hashing only).
    predicted_next: Optional[torch.Tensor] = None
    #: Dispatch plans built in this forward pass, for layers whose routing is
    #: the same (hash layers sharing one table): built once, reused.
    plans: Dict[Any, Any] = field(default_factory=dict)

    @classmethod
    def full(
        cls, tokens: torch.Tensor, pad_idx: int, next_tokens: Optional[torch.Tensor] = None
    ) -> "RoutingContext":
        return cls(history=tokens, offset=0, pad_idx=pad_idx, next_tokens=next_tokens)

    @classmethod
    def incremental(cls, history: torch.Tensor, pad_idx: int) -> "RoutingContext":
        return cls(history=history, offset=history.size(1) - 1, pad_idx=pad_idx)

    @classmethod
    def encoder(cls, tokens: torch.Tensor, pad_idx: int) -> "RoutingContext":
        """The encoder sees its whole input at once: the next token is known."""
        following = torch.full_like(tokens, pad_idx)
        following[:, :-1] = tokens[:, 1:]
        return cls.full(tokens, pad_idx, next_tokens=following)

    @property
    def tokens(self) -> torch.Tensor:
        """``[B, T]`` ids of the positions processed now."""
        return self.history[:, self.offset :]

    @property
    def previous_tokens(self) -> torch.Tensor:
        """``[B, T]`` id of the token before each processed one (``NO_TOKEN`` at 0)."""
        before = self.history[:, max(self.offset - 1, 0) : -1]
        if self.offset == 0:
            start = torch.full_like(self.history[:, :1], NO_TOKEN)
            before = torch.cat([start, before], dim=1)
        return before

    @property
    def upcoming_tokens(self) -> Optional[torch.Tensor]:
        """``[B, T]`` the true next token of each processed position, if known."""
        if self.next_tokens is None:
            return None
        return self.next_tokens[:, self.offset :]

    @property
    def positions(self) -> torch.Tensor:
        """``[B, T]`` absolute positions of the tokens processed now."""
        b, length = self.history.shape
        pos = torch.arange(self.offset, length, device=self.history.device)
        return pos.unsqueeze(0).expand(b, -1)

    @property
    def mask(self) -> torch.Tensor:
        """``[B, T]`` True for real tokens, False for padding."""
        return self.tokens != self.pad_idx
