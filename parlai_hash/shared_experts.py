"""``--shared-experts``: always-on FFNs next to a sparse layer's routed experts.

Every token runs all S of them and their outputs are added to the routed
output (as in DeepSeek's MoE layers). Stored stacked like the routed experts,
``[S, d, D_s]`` and ``[S, D_s, d]``, and run as one batched GEMM over S.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from parlai_hash.experts import activation_function, init_expert_weights


class SharedExperts(nn.Module):
    """S dense FFNs of hidden size ``dim_hidden`` each; output = the sum of theirs."""

    def __init__(self, count: int, dim: int, dim_hidden: int, relu_dropout: float = 0.0,
                 activation: str = 'relu'):
        super().__init__()
        self.count, self.dim, self.dim_hidden = count, dim, dim_hidden
        self.nonlinear = activation_function(activation)
        self.relu_dropout = nn.Dropout(p=relu_dropout)
        self.w1 = nn.Parameter(torch.empty(count, dim, dim_hidden))
        self.b1 = nn.Parameter(torch.empty(count, 1, dim_hidden))
        self.w2 = nn.Parameter(torch.empty(count, dim_hidden, dim))
        self.b2 = nn.Parameter(torch.empty(count, 1, dim))
        init_expert_weights(self.w1, self.b1, self.w2, self.b2, dim, dim_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(1, -1, self.dim).expand(self.count, -1, -1)  # [S, N, d]
        h = self.relu_dropout(self.nonlinear(torch.baddbmm(self.b1, flat, self.w1)))
        return torch.baddbmm(self.b2, h, self.w2).sum(0).reshape(x.shape)
