"""Expert-load metrics reported in ParlAI's train/valid logs."""

from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch
from parlai.core.metrics import Metric


def expert_load(counts: Sequence[int]) -> Dict[str, float]:
    """Summaries of tokens per expert.

    ``max``: the busiest expert's share over the mean share (1.0 = perfect
    balance, K = everything on one expert). ``entropy``: of the token shares,
    divided by log K (1.0 = perfect balance). ``unused``: experts with no token.
    """
    total = float(sum(counts))
    k = len(counts)
    if total <= 0 or k == 0:
        return {'max': 0.0, 'entropy': 0.0, 'unused': float(k)}
    shares = [c / total for c in counts]
    entropy = -sum(s * math.log(s) for s in shares if s > 0)
    return {
        'max': max(shares) * k,
        'entropy': entropy / math.log(k) if k > 1 else 1.0,
        'unused': float(sum(1 for c in counts if c == 0)),
    }


class ExpertLoadMetric(Metric):
    """Sums token counts per expert over the report window, then summarises.

    Adding counts (not averaging per-batch summaries) makes the logged value
    describe the whole window, and keeps it exact under distributed sync.
    """

    __slots__ = ('_counts', '_stat')

    def __init__(self, counts: Sequence[int], stat: str):
        self._counts: Tuple[int, ...] = tuple(int(c) for c in counts)
        self._stat = stat

    @property
    def is_global(self) -> bool:
        return True

    def __add__(self, other: "ExpertLoadMetric") -> "ExpertLoadMetric":
        if other is None:
            return self
        if len(other._counts) != len(self._counts):
            return other
        return ExpertLoadMetric(
            [a + b for a, b in zip(self._counts, other._counts)], self._stat
        )

    def value(self) -> float:
        return expert_load(self._counts)[self._stat]


def load_metrics(name: str, counts: torch.Tensor) -> Dict[str, ExpertLoadMetric]:
    """ParlAI metrics for one sparse layer, e.g. ``dec7_load_max``."""
    values = counts.tolist()
    return {
        f'{name}_load_max': ExpertLoadMetric(values, 'max'),
        f'{name}_load_ent': ExpertLoadMetric(values, 'entropy'),
    }
