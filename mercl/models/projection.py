"""The projection W_m into the shared contrastive space (paper eq. 2)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Projection(nn.Module):
    """z_m = normalise(mean_t(W_m h_m)). (B, T, width) -> (B, embed_dim), unit L2 norm."""

    def __init__(self, width: int, embed_dim: int):
        super().__init__()
        self.linear = nn.Linear(width, embed_dim)

    def forward(self, h: Tensor) -> Tensor:
        """(B, T, width) -> (B, embed_dim)."""
        return F.normalize(self.linear(h).mean(dim=1), dim=-1)
