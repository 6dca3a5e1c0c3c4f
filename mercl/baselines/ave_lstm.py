"""AVE-LSTM: one LSTM per modality (MFCC audio, VGG19 video, PCA EEG), decision fusion.

Chen, Ro & Zhu, "Emotion recognition with audio, video, EEG, and EMG: a dataset and
baseline approaches", IEEE Access 10 (2022) 13229-13242, as the MERCL paper (section 4.2)
describes it (without EMG, as in the paper): audio features from MFCCs, video features
from VGG19, EEG features by PCA after bootstrapping, an LSTM per modality, and the final
prediction by fusing the per-modality decisions.

What runs here (everything fitted on the training rows only):

* bootstrapping: the training rows are resampled with replacement to equal class counts
  (each class drawn up to the largest class's count; seeded); all three LSTMs and the
  PCA are fitted on that resample (``bootstrap=False`` uses the rows as they are).
* audio: librosa MFCC sequences (T_m, n_mfcc) of the stimulus segment, standardised.
* video: per frame, VGG19's conv features global-average-pooled (512-d; torchvision
  architecture with a local weights file, else seeded random weights: see
  :mod:`mercl.baselines.features`), standardised.
* EEG: the raw segment (microvolts at ``raw_sfreq``) cut into steps of ``eeg_step_s``;
  each step's C x samples values are projected by a PCA (``pca_components``, whitened)
  fitted on the bootstrapped training steps.
* an LSTM (``hidden`` units) + linear layer per modality, each trained on the rows where
  its modality is present; the fused prediction averages the softmax outputs of the
  modalities present in a row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
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

log = logging.getLogger(__name__)
MODALITY_ORDER = ("audio", "video", "eeg")


class LSTMClassifier(nn.Module):
    """(B, T, D) -> (B, K): one LSTM layer, the last hidden state, a linear layer."""

    def __init__(self, d_in: int, hidden: int, n_classes: int):
        super().__init__()
        self.lstm = nn.LSTM(d_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


def balanced_bootstrap(y: np.ndarray, seed: int) -> np.ndarray:
    """Positions into ``y``: every class resampled with replacement to the largest class's count."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(y)
    target = counts.max()
    picks = [rng.choice(np.flatnonzero(y == c), size=target, replace=True) for c in np.flatnonzero(counts)]
    return np.sort(np.concatenate(picks))


def eeg_steps(raw: np.ndarray, samples_per_step: int) -> np.ndarray:
    """(n, C, S) -> (n, S // step, C * step): consecutive non-overlapping steps, flattened."""
    n, c, s = raw.shape
    t = s // samples_per_step
    x = raw[:, :, : t * samples_per_step].reshape(n, c, t, samples_per_step)
    return x.transpose(0, 2, 1, 3).reshape(n, t, c * samples_per_step)


class AveLSTM(Baseline):
    """AVE-LSTM (Chen et al. 2022): per-modality LSTMs on MFCC / VGG19 / PCA-EEG, averaged softmax."""

    name = "ave_lstm"
    modalities = ("video", "audio", "eeg")

    @dataclass
    class Options(TorchOptions):
        """hidden: LSTM units per modality. pca_components: EEG PCA size per step.
        eeg_step_s: EEG step length in seconds. bootstrap: class-balanced resampling first.
        The paper gives no sizes; 64 units and 20 epochs fit the demo study on a CPU."""

        epochs: int = 20
        hidden: int = 64
        pca_components: int = 32
        eeg_step_s: float = 0.25
        bootstrap: bool = True

        def validate(self) -> None:
            super().validate()
            at_least(self, 1, "hidden")
            at_least(self, 1, "pca_components")
            if self.eeg_step_s <= 0:
                raise FieldProblem("eeg_step_s", f"must be > 0 s, got {self.eeg_step_s}")

    def _step_samples(self, features: BaselineFeatures) -> int:
        return max(
            1, min(int(round(self.options.eeg_step_s * features.raw_sfreq)), features.eeg_raw.shape[-1])
        )

    def _inputs(
        self, features: BaselineFeatures, rows: np.ndarray
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """modality -> (sequence (n, T, D) before scaling, present (n,))."""
        audio, has_audio = features.stimulus("mfcc", rows, "audio")
        video, has_video = features.stimulus("vgg", rows, "video")
        eeg = eeg_steps(features.eeg_raw[rows], self._step_samples(features))
        return {
            "audio": (audio, has_audio),
            "video": (video, has_video),
            "eeg": (eeg, np.ones(len(rows), bool)),
        }

    def _fit(self, features: BaselineFeatures, rows: np.ndarray, y: np.ndarray) -> None:
        opts = self.options
        if opts.bootstrap:
            take = balanced_bootstrap(y, self.seed)
            rows, y = rows[take], y[take]
        inputs = self._inputs(features, rows)
        eeg, _ = inputs["eeg"]
        n_comp = min(opts.pca_components, eeg.shape[-1], eeg.shape[0] * eeg.shape[1])
        self.pca_ = PCA(n_components=n_comp, whiten=True, random_state=self.seed)
        self.pca_.fit(eeg.reshape(-1, eeg.shape[-1]))
        inputs["eeg"] = (self._project(eeg), inputs["eeg"][1])
        self.scalers_: dict[str, Standardizer] = {}
        self.nets_: dict[str, LSTMClassifier] = {}
        for k, modality in enumerate(MODALITY_ORDER):
            x, present = inputs[modality]
            if present.sum() < 2:  # absent altogether (EEG-only recordings) is expected, not a warning
                (log.warning if present.any() else log.debug)(
                    "ave_lstm: %s is present in %d training rows; left out", modality, present.sum())
                continue
            self.scalers_[modality] = Standardizer().fit(x[present])
            with seeded(self.seed + k):
                net = LSTMClassifier(x.shape[-1], opts.hidden, self.n_classes)
            x_scaled = self.scalers_[modality].transform(x[present])
            self.nets_[modality] = train_classifier(net, [x_scaled], y[present], opts, self.seed + k)

    def _project(self, eeg: np.ndarray) -> np.ndarray:
        n, t, d = eeg.shape
        return self.pca_.transform(eeg.reshape(-1, d)).reshape(n, t, -1).astype(np.float32)

    def _predict_proba(self, features: BaselineFeatures, rows: np.ndarray) -> np.ndarray:
        inputs = self._inputs(features, rows)
        inputs["eeg"] = (self._project(inputs["eeg"][0]), inputs["eeg"][1])
        total = np.zeros((len(rows), self.n_classes))
        count = np.zeros(len(rows))
        for modality, net in self.nets_.items():
            x, present = inputs[modality]
            if present.any():
                x = self.scalers_[modality].transform(x[present])
                total[present] += softmax(predict_logits(net, [x], self.options))
                count[present] += 1
        if (count == 0).any():  # no modality usable for a row: uniform scores
            total[count == 0] = 1.0 / self.n_classes
            count[count == 0] = 1
        return total / count[:, None]
