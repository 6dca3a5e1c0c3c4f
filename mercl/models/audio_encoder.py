"""The audio spatial encoder f_a: a VGGish-architecture CNN on log-Mel patches."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mercl.errors import InputFileError, MerclError
from mercl.models.config import AudioEncoderConfig
from mercl.models.weights import load_local_weights

# VGGish (Hershey et al. 2017): conv widths in units of the first block's width, None = max-pool.
VGGISH_LAYOUT = (1, None, 2, None, 4, 4, None, 8, 8, None)
# The public weights in torchvggish's layout (AudioSet-trained, ported from TensorFlow).
VGGISH_RELEASE = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"


class VggishSpatialEncoder(nn.Module):
    """f_a: VGGish on ``patch_frames``-long log-Mel patches. (B, T_frames, n_mels) -> (B, T_a, embed_dim).

    The frame axis is cut into T_a = ceil(T_frames / patch_frames) patches, the last one
    padded by repeating its final frame. Each patch (1, patch_frames, n_mels) goes through
    VGGish's conv3x3-ReLU blocks (width x 1-2-4-4-8-8, four 2x2 max-pools) and three FC
    layers (64 * width wide, then embed_dim), ReLU after each as in VGGish. A pool halves
    the Mel axis only while it still has >= 2 bins (20 Mel bands: 20-10-5-3-2), so small
    Mel counts are pooled in time only. With width=64, n_mels=64 and embed_dim=128 the
    parameter names and shapes are those of torchvggish (``features.*``, ``embeddings.*``),
    so its release file (:data:`VGGISH_RELEASE`) loads from ``cfg.weights`` and the encoder
    computes what torchvggish's ``VGG`` does on a (1, 96, 64) patch (conv3x3-ReLU blocks and
    2x2 max-pools, then the (frames, mels, channels) flattening and three FC-ReLU layers).

    Weights: the whole file loads when its ``embeddings.*`` fit, i.e. for VGGish's input
    (64 Mel bands x 96-frame patches: the prepare config's ``audio.preset: vggish``, which
    also gives VGGish's 25 ms / 10 ms STFT and log scale) or for a file saved from an encoder
    of this same shape. For any other input only the conv stack ``features.*`` loads (its
    shapes do not depend on the input size); the FC layers stay random and the log says so
    (``random_layers`` lists them).
    """

    def __init__(self, cfg: AudioEncoderConfig, n_mels: int):
        super().__init__()
        self.cfg = cfg
        self.n_mels = n_mels
        self.feature_dim = cfg.embed_dim
        layers: list[nn.Module] = []
        channels, frames, mels = 1, cfg.patch_frames, n_mels
        for step in VGGISH_LAYOUT:
            if step is None:
                pool_mel = 2 if mels >= 2 else 1
                layers.append(nn.MaxPool2d((2, pool_mel), stride=(2, pool_mel), ceil_mode=True))
                frames, mels = math.ceil(frames / 2), math.ceil(mels / pool_mel)
            else:
                layers += [nn.Conv2d(channels, step * cfg.width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = step * cfg.width
        self.features = nn.Sequential(*layers)
        hidden = 64 * cfg.width
        self.embeddings = nn.Sequential(
            nn.Linear(channels * frames * mels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, cfg.embed_dim),
            nn.ReLU(inplace=True),
        )
        if cfg.weights is not None and not Path(cfg.weights).expanduser().exists():
            raise InputFileError(
                Path(cfg.weights).expanduser(),
                f"no such weights file for the VGGish audio encoder (torchvggish's release: {VGGISH_RELEASE})",
            )
        self.random_layers = load_local_weights(
            self, cfg.weights, "VGGish audio encoder", ignore_prefixes=("pproc.",), core_prefixes=("features.",)
        )
        self.frozen = cfg.freeze
        if self.frozen:
            self.requires_grad_(False)

    def patches(self, audio: Tensor) -> Tensor:
        """(B, T_frames, n_mels) -> (B, T_a, patch_frames, n_mels), the last patch edge-padded."""
        size = self.cfg.patch_frames
        pad = -audio.shape[1] % size
        if pad:
            audio = F.pad(audio.transpose(1, 2), (0, pad), mode="replicate").transpose(1, 2)
        return audio.unflatten(1, (-1, size))

    def forward(self, audio: Tensor) -> Tensor:
        """(B, T_frames, n_mels) log-Mel -> (B, T_a, embed_dim)."""
        if audio.dim() != 3 or audio.shape[2] != self.n_mels:
            raise MerclError(
                f"batch 'audio' must be (B, T_frames, {self.n_mels}), got shape {tuple(audio.shape)}"
            )
        patches = self.patches(audio.float())
        batch, steps = patches.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            x = self.features(patches.flatten(0, 1).unsqueeze(1))  # (N, C, frames, mels)
            x = x.permute(0, 2, 3, 1).flatten(1)  # torchvggish flattens as (frames, mels, C)
            x = self.embeddings(x)
        return x.reshape(batch, steps, -1)

    def n_patches(self, n_frames: int) -> int:
        """T_a for an input of ``n_frames`` STFT frames."""
        return math.ceil(n_frames / self.cfg.patch_frames)
