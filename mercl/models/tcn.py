"""The temporal encoder: a residual temporal convolutional network (paper section 3.1.2)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mercl.models.config import TcnConfig
from mercl.models.dropout import Dropout


class SameDilatedConv1d(nn.Conv1d):
    """A 'same'-padded dilated Conv1d that leaves out the taps which, at the input's length,
    only ever read the zero padding: with 3 taps at dilation 8 on 7 steps the two outer taps
    never reach a real step, so the block is a 1x1 conv there. The output (and every
    gradient) is the full convolution's; the FLOPs and time of the dead taps are saved.
    (B, D_in, T) -> (B, D_out, T); the parameters are the full kernel's.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, dilation: int):
        super().__init__(in_dim, out_dim, kernel_size, dilation=dilation, padding="same")

    def forward(self, x: Tensor) -> Tensor:
        (k,), (d,) = self.kernel_size, self.dilation
        half = k // 2
        reach = min(half, (x.shape[-1] - 1) // d)  # outer taps within T - 1 steps of the centre
        if k % 2 == 0 or reach == half:
            return super().forward(x)
        weight = self.weight[..., half - reach: half + reach + 1]
        return F.conv1d(x, weight, self.bias, dilation=d, padding=reach * d)


class TemporalBlock(nn.Module):
    """Dilated Conv1d -> BatchNorm1d -> ELU -> Dropout, plus a residual. (B, D_in, T) -> (B, D_out, T).

    'same' padding keeps T; the residual is a 1x1 conv when D_in != D_out.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            SameDilatedConv1d(in_dim, out_dim, kernel_size, dilation),
            nn.BatchNorm1d(out_dim),
            nn.ELU(),
            Dropout(dropout),
        )
        self.residual = nn.Identity() if in_dim == out_dim else nn.Conv1d(in_dim, out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) + self.residual(x)


class ResidualTCN(nn.Module):
    """One :class:`TemporalBlock` per dilation (default 1, 2, 4, 8). (B, T, D_in) -> (B, T, width)."""

    def __init__(self, in_dim: int, width: int, cfg: TcnConfig):
        super().__init__()
        dims = [in_dim] + [width] * len(cfg.dilations)
        self.blocks = nn.Sequential(
            *(
                TemporalBlock(d_in, d_out, cfg.kernel_size, dilation, cfg.dropout)
                for d_in, d_out, dilation in zip(dims[:-1], dims[1:], cfg.dilations, strict=True)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D_in) -> (B, T, width)."""
        return self.blocks(x.transpose(1, 2)).transpose(1, 2)
