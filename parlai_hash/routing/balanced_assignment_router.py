"""BASE layers (Lewis et al., 2021, "Balanced Assignment of Sparse Experts"):
balanced assignment in training, greedy at inference."""

from __future__ import annotations

import torch
import torch.nn as nn

from parlai_hash.routing.assignment import balanced_assignment
from parlai_hash.routing.context import RoutingContext
from parlai_hash.routing.route import Route


class BalancedAssignmentRouter(nn.Module):
    """Each expert has a learned centroid c_e; affinity = h · c_e.

    Training: the batch's real tokens are assigned by a balanced linear
    assignment (each expert gets T/K of them, ±1 when K does not divide T)
    maximising total affinity. Inference: each token takes its best expert, so
    a reply does not depend on the rest of the batch. The expert output is
    scaled by σ(h · c_e), so the layer computes h + σ(h·c_e)·expert(h) with the
    Transformer's residual, as in the BASE paper.
    """

    def __init__(self, dim: int, num_experts: int, auction_eps: float = 1e-2):
        super().__init__()
        self.num_experts = num_experts
        self.auction_eps = auction_eps
        self.centroids = nn.Parameter(torch.empty(num_experts, dim))
        nn.init.normal_(self.centroids, 0, dim**-0.5)

    def forward(self, ctx: RoutingContext, hidden: torch.Tensor) -> Route:
        scores = torch.matmul(hidden.float(), self.centroids.float().t())  # [B, T, K]
        if self.training:
            real = ctx.mask
            experts = scores.argmax(dim=-1)
            experts[real] = balanced_assignment(scores[real], eps=self.auction_eps)
        else:
            experts = scores.argmax(dim=-1)
        experts = experts.unsqueeze(-1)  # one choice per token
        chosen = scores.gather(-1, experts)
        return Route(experts=experts, gates=torch.sigmoid(chosen).to(hidden.dtype))
