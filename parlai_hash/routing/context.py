"""What a router may look at for the tokens of one forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class RoutingContext:
    """Token ids of one forward pass, in a form that is right in every mode.

    ``history`` holds every token id known so far (``[B, L]``); the forward
    pass processes positions ``offset .. L-1``. Under teacher forcing and in
    the first generation step ``offset`` is 0; in incremental decoding ParlAI
    feeds only the newest position, so ``offset = L - 1`` and routers still see
    the true token (and its predecessors) rather than a stale position.
    """

    history: torch.Tensor
    offset: int
    pad_idx: int
    # The token each position must predict (teacher forcing only); None while generating.
    next_tokens: Optional[torch.Tensor] = None

    @classmethod
    def full(
        cls, tokens: torch.Tensor, pad_idx: int, next_tokens: Optional[torch.Tensor] = None
    ) -> "RoutingContext":
        return cls(history=tokens, offset=0, pad_idx=pad_idx, next_tokens=next_tokens)

    @classmethod
    def incremental(cls, history: torch.Tensor, pad_idx: int) -> "RoutingContext":
        return cls(history=history, offset=history.size(1) - 1, pad_idx=pad_idx)

    @property
    def tokens(self) -> torch.Tensor:
        """``[B, T]`` ids of the positions processed now."""
        return self.history[:, self.offset :]

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
