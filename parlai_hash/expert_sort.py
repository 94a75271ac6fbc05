"""Rows grouped by expert: the sort that dispatch, capacity, BASE's auction and
expert parallelism all start from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class ExpertGroups:
    """Rows sorted by expert id, stably (rows of one expert keep their order)."""

    ids: torch.Tensor  # [N] expert id of each row, as given
    order: torch.Tensor  # [N] row indices, expert 0's rows first
    counts: torch.Tensor  # [num_groups] rows per expert id
    _inverse: Optional[torch.Tensor] = field(default=None, repr=False)  # computed when first read

    @property
    def inverse(self) -> torch.Tensor:
        """``[N]`` where each row sits in ``order``."""
        if self._inverse is None:
            inverse = torch.empty_like(self.order)
            inverse[self.order] = torch.arange(self.order.numel(), device=self.order.device)
            self._inverse = inverse
        return self._inverse

    @property
    def rank(self) -> torch.Tensor:
        """``[N]`` each row's position within its expert's group (0 = first row of that expert)."""
        starts = torch.cumsum(self.counts, 0) - self.counts
        return self.inverse - starts[self.ids]


def sort_by_expert(ids: torch.Tensor, num_groups: int) -> ExpertGroups:
    """Group the rows of ``ids`` (any shape, read flat; values in ``[0, num_groups)``)."""
    ids = ids.reshape(-1)
    order = torch.argsort(ids, stable=True)
    counts = torch.bincount(ids, minlength=num_groups)
    return ExpertGroups(ids=ids, order=order, counts=counts)
