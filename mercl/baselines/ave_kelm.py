"""AVE-KELM: audio-visual features + EEG wavelet-packet features, per-modality feature selection,
decision-level fusion of kernel extreme learning machines.

Duan, Ge, Yang & Chen, "Multimodal fusion using kernel-based ELM for video emotion
recognition", Proc. ELM-2015 vol. 1, Springer 2016, pp. 371-381, as the MERCL paper
(section 4.2) describes it: audio-visual features of the clip, EEG features from a
wavelet packet decomposition (WPD), video features selected by double input symmetrical
relevance (DISR; Meyer & Bontempi 2006), EEG features selected by a decision tree, and
kernel ELMs (Huang et al. 2012) fused at the decision level.

What runs here (all fitted on the training rows only):

* audio-visual: the 88 eGeMAPS functionals + the 9 visual statistics (luminance, lighting
  key, colour energy, motion), standardised; DISR keeps ``av_features`` of them. Features
  are discretised into ``n_bins`` training quantile bins. DISR is greedy: the first feature
  maximises the mutual information with the label (scikit-learn ``mutual_info_score`` on the
  bins; the k-NN ``mutual_info_classif`` estimator took ~0.2 s per feature on 2 busy cores);
  each next one maximises ``sum_j I(X_k, X_j; Y) / H(X_k, X_j, Y)`` over the features already
  kept (plug-in entropies on the same bins).
* EEG: log wavelet-packet node energies (C x P), standardised; a decision tree fitted on
  them ranks features by importance and the top ``eeg_features`` are kept.
* one RBF-kernel ELM per modality, ``beta = (K + I / C)^-1 T`` with ``T`` the +-1 coded
  labels, output ``k(x, X) beta``; the fused score is ``(1 - eeg_weight) * f_av + eeg_weight
  * f_eeg`` (rows without audio-visual input use the EEG output alone); ``predict_proba`` is
  the softmax of the fused score (a ranking, not a calibrated probability).

The kernel matrix is n_train x n_train: more than ``max_train`` training rows are
subsampled (stratified, seeded) for the ELMs (not for the selection).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from sklearn.metrics import mutual_info_score
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from mercl.baselines.base import Baseline, Standardizer, softmax
from mercl.baselines.features import BaselineFeatures
from mercl.config import FieldProblem, at_least

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- feature selection


def quantile_bins(x_train: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Per feature, the inner edges of ``n_bins`` quantile bins of the training values."""
    qs = np.linspace(0, 1, n_bins + 1)[1:-1]
    return [np.unique(np.quantile(col, qs)) for col in x_train.T]


def discretise(x: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """(n, d) -> (n, d) int64 bin codes."""
    return np.stack([np.searchsorted(e, col, side="right") for e, col in zip(edges, x.T, strict=True)], 1)


def _entropy(codes: np.ndarray) -> float:
    """Shannon entropy (nats) of one discrete variable given as (n,) int64 codes."""
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def symmetrical_relevance(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """``I(A, B; Y) / H(A, B, Y)`` of discrete codes (0 when the joint entropy is 0)."""
    ab = a * (b.max() + 1) + b
    aby = ab * (y.max() + 1) + y
    h_aby = _entropy(aby)
    if h_aby <= 0:
        return 0.0
    return (_entropy(ab) + _entropy(y) - h_aby) / h_aby


def disr_select(x: np.ndarray, y: np.ndarray, k: int, n_bins: int) -> np.ndarray:
    """Indices of ``k`` features chosen by DISR (Meyer & Bontempi 2006), in selection order.

    x: (n, d) training features, y: (n,) int labels.
    """
    d = x.shape[1]
    k = min(k, d)
    codes = discretise(x, quantile_bins(x, n_bins))
    mi = [mutual_info_score(y, codes[:, j]) for j in range(d)]
    selected = [int(np.argmax(mi))]
    score = np.zeros(d)
    while len(selected) < k:
        last = codes[:, selected[-1]]
        for j in range(d):
            if j not in selected:
                score[j] += symmetrical_relevance(codes[:, j], last, y)
        candidates = np.setdiff1d(np.arange(d), selected)
        selected.append(int(candidates[np.argmax(score[candidates])]))
    return np.asarray(selected, np.int64)


def tree_select(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of the ``k`` most important features of a decision tree fitted on (x, y)."""
    tree = DecisionTreeClassifier(random_state=seed).fit(x, y)
    order = np.argsort(-tree.feature_importances_, kind="stable")
    return np.sort(order[: min(k, x.shape[1])])


# ---------------------------------------------------------------- kernel ELM


class KernelELM:
    """Kernel extreme learning machine (Huang et al. 2012) with an RBF kernel.

    ``fit(x (n, d), y (n,), n_classes)`` solves ``beta = (K + I / C)^-1 T`` (T: +1 for the
    label's column, -1 elsewhere); ``decision_function(x) = k(x, X_train) beta`` -> (m, K).
    gamma None = ``1 / d`` (inputs are standardised).
    """

    def __init__(self, c: float = 1.0, gamma: float | None = None):
        self.c = c
        self.gamma = gamma

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> KernelELM:
        self.x_ = np.asarray(x, np.float64)
        self.gamma_ = self.gamma if self.gamma is not None else 1.0 / max(1, x.shape[1])
        target = -np.ones((len(y), n_classes))
        target[np.arange(len(y)), y] = 1.0
        kernel = rbf_kernel(self.x_, gamma=self.gamma_)
        kernel[np.diag_indices_from(kernel)] += 1.0 / self.c
        self.beta_ = scipy.linalg.solve(kernel, target, assume_a="pos")
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return rbf_kernel(np.asarray(x, np.float64), self.x_, gamma=self.gamma_) @ self.beta_


# ---------------------------------------------------------------- the baseline


def av_inputs(features: BaselineFeatures, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 88 + 9) eGeMAPS + visual statistics, and (n,) whether both streams are present."""
    audio, has_audio = features.stimulus("egemaps", rows, "audio")
    video, has_video = features.stimulus("visual", rows, "video")
    return np.concatenate([audio, video], axis=1), has_audio & has_video


def eeg_inputs(features: BaselineFeatures, rows: np.ndarray) -> np.ndarray:
    """(n, C * P) wavelet-packet log energies."""
    return features.eeg_wpd[rows].reshape(len(rows), -1)


class AveKELM(Baseline):
    """AVE-KELM (Duan et al. 2016): DISR-selected audio-visual + tree-selected WPD EEG features,
    one kernel ELM each, fused at the decision level."""

    name = "ave_kelm"
    modalities = ("video", "audio", "eeg")

    @dataclass
    class Options:
        """av_features / eeg_features: how many features the selections keep.
        n_bins: quantile bins per feature for DISR's entropies.
        c: the ELM's regularisation C. gamma: RBF gamma (None = 1 / n_features).
        eeg_weight: weight of the EEG ELM in the fused score (0-1).
        max_train: at most this many training rows reach the ELMs (kernel is n x n)."""

        av_features: int = 20
        eeg_features: int = 32
        n_bins: int = 5
        c: float = 1.0
        gamma: float | None = None
        eeg_weight: float = 0.5
        max_train: int = 4000

        def validate(self) -> None:
            for name in ("av_features", "eeg_features"):
                if getattr(self, name) < 1:
                    raise FieldProblem(name, f"must be >= 1, got {getattr(self, name)}")
            at_least(self, 2, "n_bins")
            if self.c <= 0:
                raise FieldProblem("c", f"must be > 0, got {self.c}")
            if self.gamma is not None and self.gamma <= 0:
                raise FieldProblem("gamma", f"must be > 0, got {self.gamma}")
            if not 0.0 <= self.eeg_weight <= 1.0:
                raise FieldProblem("eeg_weight", f"must be in [0, 1], got {self.eeg_weight}")
            at_least(self, 10, "max_train")

    def _elm_rows(self, y: np.ndarray) -> np.ndarray:
        """Positions (into the training rows) the ELMs train on: all, or a stratified subsample."""
        n = len(y)
        if n <= self.options.max_train:
            return np.arange(n)
        log.info("ave_kelm: %d training rows, the kernel ELMs use a stratified %d", n, self.options.max_train)
        strat = y if np.bincount(y).min() >= 2 else None
        keep, _ = train_test_split(
            np.arange(n), train_size=self.options.max_train, stratify=strat, random_state=self.seed
        )
        return np.sort(keep)

    def _fit(self, features: BaselineFeatures, rows: np.ndarray, y: np.ndarray) -> None:
        opts = self.options
        sub = self._elm_rows(y)
        # EEG: standardise, decision-tree selection, kernel ELM
        eeg = eeg_inputs(features, rows)
        self.eeg_scaler_ = Standardizer().fit(eeg)
        eeg = self.eeg_scaler_.transform(eeg)
        self.eeg_keep_ = tree_select(eeg, y, opts.eeg_features, self.seed)
        self.eeg_elm_ = KernelELM(opts.c, opts.gamma).fit(eeg[sub][:, self.eeg_keep_], y[sub], self.n_classes)
        # audio-visual: on the training rows that have both streams
        av, present = av_inputs(features, rows)
        self.av_elm_ = None
        if present.sum() >= 2 and len(np.unique(y[present])) >= 2:
            self.av_scaler_ = Standardizer().fit(av[present])
            av = self.av_scaler_.transform(av)
            self.av_keep_ = disr_select(av[present], y[present], opts.av_features, opts.n_bins)
            on = sub[present[sub]]
            self.av_elm_ = KernelELM(opts.c, opts.gamma).fit(av[on][:, self.av_keep_], y[on], self.n_classes)
        else:  # none at all (EEG-only recordings) is expected, not a warning
            (log.warning if present.any() else log.debug)(
                "ave_kelm: %d training rows with audio and video; EEG only", present.sum())

    def _predict_proba(self, features: BaselineFeatures, rows: np.ndarray) -> np.ndarray:
        eeg = self.eeg_scaler_.transform(eeg_inputs(features, rows))[:, self.eeg_keep_]
        score = self.eeg_elm_.decision_function(eeg)
        if self.av_elm_ is not None:
            av, present = av_inputs(features, rows)
            if present.any():
                av = self.av_scaler_.transform(av[present])[:, self.av_keep_]
                w = self.options.eeg_weight
                score[present] = w * score[present] + (1 - w) * self.av_elm_.decision_function(av)
        return softmax(score)
