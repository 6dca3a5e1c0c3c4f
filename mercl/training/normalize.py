"""Input normalisation with statistics from the training rows only.

EEG band-PSD features get a mean and std per (channel, band); log-Mel spectrograms a mean
and std per Mel band. Both are computed on the training fold (never on validation or test
rows) and applied to batches as they stream by: ``batch = stats.apply(batch)``.

A frozen audio backbone (a pretrained VGGish) has its own fixed input convention and its
features are cached once per stimulus segment for every fold, so log-Mel normalisation is
fitted only when the audio encoder is trained (``audio=None`` otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

EPS = 1e-6


@dataclass
class NormStats:
    """eeg_mean/eeg_std: (C, n_bands); audio_mean/audio_std: (n_mels,) or None (not normalised)."""

    eeg_mean: np.ndarray
    eeg_std: np.ndarray
    audio_mean: np.ndarray | None = None
    audio_std: np.ndarray | None = None

    def apply(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalise ``eeg`` (B, T_e, C, n_bands) and, when fitted, ``audio`` (B, T_a, n_mels)."""
        batch = dict(batch)
        if "eeg" in batch:
            eeg = batch["eeg"]
            mean = torch.as_tensor(self.eeg_mean, dtype=eeg.dtype, device=eeg.device)
            std = torch.as_tensor(self.eeg_std, dtype=eeg.dtype, device=eeg.device)
            batch["eeg"] = (eeg - mean) / std
        if self.audio_mean is not None and "audio" in batch:
            audio = batch["audio"]
            mean = torch.as_tensor(self.audio_mean, dtype=audio.dtype, device=audio.device)
            std = torch.as_tensor(self.audio_std, dtype=audio.dtype, device=audio.device)
            normed = (audio - mean) / std
            if "present" in batch:  # missing audio stays exactly zero
                normed = normed * batch["present"][:, 1].to(normed.dtype)[:, None, None]
            batch["audio"] = normed
        return batch

    __call__ = apply

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (lists), for checkpoints and run directories."""
        return {k: (None if v is None else np.asarray(v).tolist()) for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormStats:
        return cls(**{k: (None if v is None else np.asarray(v, dtype=np.float32)) for k, v in data.items()})


def _mean_std(values: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    # float64 accumulation: sums over ~1e7 float32 values lose digits otherwise
    mean = values.mean(axis=axes, dtype=np.float64)
    std = values.std(axis=axes, dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, EPS).astype(np.float32)


def fit_normalization(eeg: np.ndarray, audio: np.ndarray | None = None) -> NormStats:
    """Statistics of the TRAINING rows.

    eeg: (N, T_e, C, n_bands) features of the training rows -> mean/std per (C, band).
    audio: (M, T_a, n_mels) log-Mel of the distinct stimulus segments the training rows
        use, with audio present (None: audio is not normalised) -> mean/std per Mel band.
    """
    if len(eeg) == 0:
        raise ValueError("cannot fit normalisation statistics on zero training rows")
    eeg_mean, eeg_std = _mean_std(np.asarray(eeg), (0, 1))
    audio_mean = audio_std = None
    if audio is not None and len(audio):
        audio_mean, audio_std = _mean_std(np.asarray(audio), (0, 1))
    return NormStats(eeg_mean, eeg_std, audio_mean, audio_std)
