"""The temporal encoder: a residual temporal convolutional network (paper section 3.1.2)."""

from __future__ import annotations

from torch import Tensor, nn

from mercl.models.config import TcnConfig


class TemporalBlock(nn.Module):
    """Dilated Conv1d -> BatchNorm1d -> ELU -> Dropout, plus a residual. (B, D_in, T) -> (B, D_out, T).

    'same' padding keeps T; the residual is a 1x1 conv when D_in != D_out.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_dim, out_dim, kernel_size, dilation=dilation, padding="same"),
            nn.BatchNorm1d(out_dim),
            nn.ELU(),
            nn.Dropout(dropout),
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
