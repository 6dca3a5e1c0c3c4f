"""The EEG spatial encoder f_e: EEG Conformer's convolutional stem, without self-attention."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mercl.errors import MerclError
from mercl.models.config import EegEncoderConfig
from mercl.models.dropout import Dropout
from mercl.models.elu import ELU


class EegSpatialEncoder(nn.Module):
    """f_e: Conformer-style temporal-then-spatial convolution on band-PSD sequences.

    (B, T_e, C, n_bands) -> (B, T_e, channels_out).

    EEG Conformer (Song et al. 2022) starts with a temporal conv (1 x 25 over samples), a
    spatial conv (C x 1 over electrodes), BatchNorm, ELU, average pooling, dropout and a
    1x1 projection, then self-attention. Here the input is already a sequence of band powers,
    so the stem is adapted: the frequency bands are the input channels of a temporal conv
    (1 x kernel over the T_e steps, 'same' padding), a spatial conv over the C electrodes
    follows, then BatchNorm, ELU, dropout and the 1x1 projection (all computed as matmuls, see
    :meth:`forward`). There is no pooling, so
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
            nn.Conv2d(n_bands, width, (1, kernel), padding="same"),  # temporal: bands -> width, over T_e
            nn.Conv2d(width, width, (n_channels, 1)),  # spatial: over all C electrodes at once
            nn.BatchNorm1d(width),  # per feature over (B, T_e), as BatchNorm2d on (B, width, 1, T_e)
            ELU(),
            Dropout(cfg.dropout),
        )
        self.projection = nn.Conv2d(width, width, 1)

    def forward(self, eeg: Tensor) -> Tensor:
        """(B, T_e, C, n_bands) -> (B, T_e, channels_out).

        The convolutions run as matmuls in the input's own (B, T_e, C, ...) layout, with the
        Conv2d parameters above: the temporal conv on im2col rows of (n_bands x kernel) taps,
        the spatial conv (its kernel covers every electrode) and the 1x1 projection as linear
        maps. CPU convolution ran these shapes at a fraction of matmul speed and needed two
        layout copies (pre-training step of the ``small`` config: ~27 of ~83 ms on one thread).
        """
        if eeg.dim() != 4 or eeg.shape[2:] != (self.n_channels, self.n_bands):
            raise MerclError(
                f"batch 'eeg' must be (B, T_e, {self.n_channels}, {self.n_bands}), got shape {tuple(eeg.shape)}"
            )
        temporal, spatial, norm, act, drop = self.stem
        b, t, c, bands = eeg.shape
        k = temporal.kernel_size[1]
        x = F.pad(eeg.float(), (0, 0, 0, 0, (k - 1) // 2, k // 2))  # 'same' zero padding along T_e
        taps = x.unfold(1, k, 1)  # (B, T_e, C, n_bands, k)
        h = F.linear(taps.reshape(b * t * c, bands * k), temporal.weight.reshape(temporal.out_channels, -1),
                     temporal.bias)  # (B*T_e*C, width)
        w_spatial = spatial.weight.squeeze(3).transpose(1, 2).reshape(spatial.out_channels, -1)  # (out, C*in)
        h = F.linear(h.view(b * t, c * temporal.out_channels), w_spatial, spatial.bias)  # (B*T_e, width)
        h = drop(act(norm(h)))
        h = F.linear(h, self.projection.weight.flatten(1), self.projection.bias)  # 1x1 conv
        return h.view(b, t, -1)
