"""The EEG spatial encoder f_e: EEG Conformer's convolutional stem, without self-attention."""

from __future__ import annotations

from torch import Tensor, nn

from mercl.errors import MerclError
from mercl.models.config import EegEncoderConfig


class EegSpatialEncoder(nn.Module):
    """f_e: Conformer-style temporal-then-spatial convolution on band-PSD sequences.

    (B, T_e, C, n_bands) -> (B, T_e, channels_out).

    EEG Conformer (Song et al. 2022) starts with a temporal conv (1 x 25 over samples), a
    spatial conv (C x 1 over electrodes), BatchNorm, ELU, average pooling, dropout and a
    1x1 projection, then self-attention. Here the input is already a sequence of band powers,
    so the stem is adapted: the frequency bands are the input channels of a temporal conv
    (1 x kernel over the T_e steps, 'same' padding), a spatial conv over the C electrodes
    follows, then BatchNorm, ELU, dropout and the 1x1 projection. There is no pooling, so
    each of the T_e steps keeps its feature vector; the self-attention is dropped as the
    paper says. The kernel is capped at 2*T_e - 1 taps: longer taps would only ever
    multiply the zero padding.
    """

    def __init__(self, cfg: EegEncoderConfig, n_channels: int, n_bands: int, n_steps: int | None = None):
        super().__init__()
        self.n_channels, self.n_bands = n_channels, n_bands
        self.feature_dim = cfg.channels_out
        kernel = cfg.kernel if n_steps is None else min(cfg.kernel, 2 * n_steps - 1)
        width = cfg.channels_out
        self.stem = nn.Sequential(
            nn.Conv2d(n_bands, width, (1, kernel), padding="same"),
            nn.Conv2d(width, width, (n_channels, 1)),
            nn.BatchNorm2d(width),
            nn.ELU(),
            nn.Dropout(cfg.dropout),
        )
        self.projection = nn.Conv2d(width, width, 1)

    def forward(self, eeg: Tensor) -> Tensor:
        """(B, T_e, C, n_bands) -> (B, T_e, channels_out)."""
        if eeg.dim() != 4 or eeg.shape[2:] != (self.n_channels, self.n_bands):
            raise MerclError(
                f"batch 'eeg' must be (B, T_e, {self.n_channels}, {self.n_bands}), got shape {tuple(eeg.shape)}"
            )
        x = eeg.float().permute(0, 3, 2, 1)  # (B, n_bands, C, T_e)
        x = self.projection(self.stem(x))  # (B, width, 1, T_e)
        return x.squeeze(2).transpose(1, 2)
