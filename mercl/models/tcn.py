"""The temporal encoder: a residual temporal convolutional network (paper section 3.1.2).

The network runs in the (B, T, D) layout its input and output have: each dilated
convolution is one matmul over the taps that can reach a real step (an im2col of at most
``kernel_size`` shifted copies), BatchNorm sees (B*T, D) rows. On a CPU, convolution over
the 4-7 steps of a 4 s segment ran these shapes at a fraction of matmul speed, plus two
layout copies per network (``bench/train.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mercl.models.config import TcnConfig
from mercl.models.dropout import Dropout
from mercl.models.elu import ELU


class SameDilatedConv1d(nn.Conv1d):
    """A 'same'-padded dilated Conv1d applied to (B, T, D_in) -> (B, T, D_out), as a matmul.

    The parameters are ``nn.Conv1d``'s (weight (D_out, D_in, k)), and the output and every
    gradient are those of ``F.conv1d(x.transpose(1, 2), weight, bias, dilation, padding="same")``
    transposed back. Taps that at the input's length only ever read the zero padding (with 3
    taps at dilation 8 on 7 steps, the two outer ones) are left out: that block is a 1x1 conv
    there.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, dilation: int = 1):
        super().__init__(in_dim, out_dim, kernel_size, dilation=dilation, padding="same")

    def forward(self, x: Tensor) -> Tensor:
        (k,), (d,) = self.kernel_size, self.dilation
        steps = x.shape[1]
        left = d * (k - 1) // 2  # 'same' padding puts the odd one of an even kernel's padding on the right
        offsets = [j * d - left for j in range(k)]
        live = [j for j, o in enumerate(offsets) if -steps < o < steps]  # taps that reach a real step
        if not live:  # an even kernel on a single step: every tap reads padding
            return F.linear(x, self.weight[:, :, 0] * 0.0, self.bias)
        weight = self.weight[:, :, live[0]: live[-1] + 1]  # (D_out, D_in, n_live): the live taps are contiguous
        if len(live) == 1 and offsets[live[0]] == 0:
            return F.linear(x, weight.squeeze(2), self.bias)
        lo, hi = offsets[live[0]], offsets[live[-1]]
        start = max(0, -lo)
        padded = F.pad(x, (0, 0, start, max(0, hi)))  # zeros before and after along T
        taps = torch.cat([padded[:, start + offsets[j]: start + offsets[j] + steps] for j in live], dim=2)
        return F.linear(taps, weight.permute(0, 2, 1).reshape(weight.shape[0], -1), self.bias)


class TemporalBlock(nn.Module):
    """Dilated Conv1d -> BatchNorm1d -> ELU -> Dropout, plus a residual. (B, T, D_in) -> (B, T, D_out).

    'same' padding keeps T; the residual is a 1x1 conv when D_in != D_out.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            SameDilatedConv1d(in_dim, out_dim, kernel_size, dilation),
            nn.BatchNorm1d(out_dim),  # per feature over (B, T), as on (B, D, T)
            ELU(),
            Dropout(dropout),
        )
        self.residual = nn.Identity() if in_dim == out_dim else SameDilatedConv1d(in_dim, out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        conv, norm, act, drop = self.net
        h = conv(x)
        h = drop(act(norm(h.flatten(0, 1)))).view_as(h)
        return h + self.residual(x)


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
        return self.blocks(x)
