"""VE-BiLSTM: feature-level fusion of video and EEG in a two-layer bidirectional LSTM.

Ogawa, Sasaka, Maeda & Haseyama, "Favorite video classification based on multimodal
bidirectional LSTM", IEEE Access 6 (2018) 61401-61409, as the MERCL paper (section 4.2)
describes it: per time step a 1024-d video feature and a 1024-d EEG feature are
concatenated and fed to a BiLSTM with 1024 hidden units, then a BiLSTM with 256; a
softmax layer reads the concatenated last forward and backward hidden states of the
second layer.

What the 1024-d features are here (the paper does not say): each is a trainable linear
layer (+ ReLU) applied per time step, to

* video: the segment's frames average-pooled to ``frame_pool`` x ``frame_pool`` RGB
  (3 * 16 * 16 = 768 values by default, in [0, 1]),
* EEG: the sub-window's band power (C * 5 log10 values), standardised with the training
  rows' statistics.

The time axis is the EEG's sub-windows (T_e steps); step i shows video frame
``floor(i * T_v / T_e)``. A row whose clip has no video gets zero frames.

Defaults are the paper's sizes (1024-d inputs, 1024 and 256 units), meant for a GPU
(``device="auto"``). On the 2-core dev machine (busy) one epoch over the demo study's 432
training rows took 41 s at those sizes; :data:`mercl.baselines.CPU_OPTIONS` (128-d inputs,
128 and 64 units, 20 epochs) fitted it in 13 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mercl.baselines.base import (
    Baseline,
    Standardizer,
    TorchOptions,
    predict_logits,
    seeded,
    softmax,
    train_classifier,
)
from mercl.baselines.features import BaselineFeatures
from mercl.config import FieldProblem, at_least


class BiLSTMNet(nn.Module):
    """(B, T, Dv) video + (B, T, De) EEG -> (B, K) logits."""

    def __init__(
        self, video_in: int, eeg_in: int, dim: int, hidden: list[int], n_classes: int, dropout: float
    ):
        super().__init__()
        self.video = nn.Sequential(nn.Linear(video_in, dim), nn.ReLU())
        self.eeg = nn.Sequential(nn.Linear(eeg_in, dim), nn.ReLU())
        self.lstm1 = nn.LSTM(2 * dim, hidden[0], batch_first=True, bidirectional=True)
        self.lstm2 = nn.LSTM(2 * hidden[0], hidden[1], batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden[1], n_classes)

    def forward(self, video: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.video(video), self.eeg(eeg)], dim=-1)  # (B, T, 2 * dim)
        x, _ = self.lstm1(x)
        _, (h, _) = self.lstm2(self.drop(x))  # h: (2, B, hidden[1]) forward, backward
        return self.head(self.drop(torch.cat([h[0], h[1]], dim=-1)))


def _sequences(features: BaselineFeatures, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """video (n, T_e, 3*p*p) frames on the EEG time axis, eeg (n, T_e, C*B) band power."""
    eeg = features.eeg_psd[rows]
    n, t_e = eeg.shape[:2]
    frames, _ = features.stimulus("frames", rows, "video")  # (n, T_v, 3, p, p), zeros if absent
    t_v = frames.shape[1]
    pick = np.minimum(np.arange(t_e) * t_v // t_e, t_v - 1)
    return frames[:, pick].reshape(n, t_e, -1), eeg.reshape(n, t_e, -1)


class VeBiLSTM(Baseline):
    """VE-BiLSTM (Ogawa et al. 2018): video + EEG per step, two BiLSTM layers, softmax."""

    name = "ve_bilstm"
    modalities = ("video", "eeg")

    @dataclass
    class Options(TorchOptions):
        """input_dim: width of each modality's per-step feature (paper: 1024).
        hidden: units of the two BiLSTM layers (paper: 1024, 256). dropout: before each
        BiLSTM output (0 = none)."""

        input_dim: int = 1024
        hidden: list[int] = field(default_factory=lambda: [1024, 256])
        dropout: float = 0.0

        def validate(self) -> None:
            super().validate()
            at_least(self, 1, "input_dim")
            if len(self.hidden) != 2 or min(self.hidden) < 1:
                raise FieldProblem("hidden", f"needs two positive layer sizes, got {self.hidden}")
            if not 0.0 <= self.dropout < 1.0:
                raise FieldProblem("dropout", f"must be in [0, 1), got {self.dropout}")

    def _fit(self, features: BaselineFeatures, rows: np.ndarray, y: np.ndarray) -> None:
        video, eeg = _sequences(features, rows)
        self.scaler_ = Standardizer().fit(eeg)
        opts = self.options
        with seeded(self.seed):
            self.net_ = BiLSTMNet(
                video.shape[-1], eeg.shape[-1], opts.input_dim, opts.hidden, self.n_classes, opts.dropout
            )
        train_classifier(self.net_, [video, self.scaler_.transform(eeg)], y, opts, self.seed)

    def _predict_proba(self, features: BaselineFeatures, rows: np.ndarray) -> np.ndarray:
        video, eeg = _sequences(features, rows)
        return softmax(predict_logits(self.net_, [video, self.scaler_.transform(eeg)], self.options))
