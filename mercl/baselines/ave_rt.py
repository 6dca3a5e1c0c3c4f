"""AVE-RT: EEG band power + eGeMAPS audio + luminance/colour-energy video, feature-level fusion,
random tree.

Xing, Zhang, Zhang, Zhang, Wu, Shi, Yu & Zhang, "Exploiting EEG signals and audiovisual
feature fusion for video emotion recognition", IEEE Access 7 (2019) 59844-59861, as the
MERCL paper (section 4.2) describes it: PSD features of five EEG bands, eGeMAPS audio
features (Eyben et al. 2015), visual luminance and colour-energy features, concatenated
and classified by a random tree.

Inputs per row (concatenated):

* EEG: the shards' log10 band power averaged over the segment's sub-windows, (C * 5).
* audio: the 88 eGeMAPSv02 functionals (openSMILE) of the stimulus segment.
* video: :data:`~mercl.baselines.features.VISUAL_NAMES` minus the motion terms (luminance,
  lighting key, colour energy, saturation and their spread over the segment's frames).

A missing audio or video stream is NaN, which scikit-learn's trees route at each split.

The classifier: "random tree" is Weka's ``RandomTree`` (an unpruned tree that considers
``K = int(log2(n_features)) + 1`` randomly chosen features at each node), which is exactly a
scikit-learn ``DecisionTreeClassifier(max_features=K)``; that is the default. ``ExtraTree``
is not used because it also draws the split thresholds at random, which Weka's RandomTree
does not. ``classifier="random_forest"`` bags ``n_estimators`` such trees
(``RandomForestClassifier``), a steadier variant that is not the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from mercl.baselines.base import Baseline
from mercl.baselines.features import VISUAL_NAMES, BaselineFeatures
from mercl.config import FieldProblem, at_least

_VISUAL = [i for i, name in enumerate(VISUAL_NAMES) if not name.startswith("motion")]


def ave_rt_inputs(features: BaselineFeatures, rows: np.ndarray) -> np.ndarray:
    """(n, C*5 + 88 + 7) float32: mean band power, eGeMAPS, visual statistics (NaN where absent)."""
    eeg = features.eeg_psd[rows].mean(axis=1).reshape(len(rows), -1)
    audio, has_audio = features.stimulus("egemaps", rows, "audio")
    video, has_video = features.stimulus("visual", rows, "video")
    video = video[:, _VISUAL]
    audio[~has_audio] = np.nan
    video[~has_video] = np.nan
    return np.concatenate([eeg, audio, video], axis=1).astype(np.float32)


class AveRT(Baseline):
    """AVE-RT (Xing et al. 2019): concatenated EEG/audio/visual features, a random tree."""

    name = "ave_rt"
    modalities = ("video", "audio", "eeg")

    @dataclass
    class Options:
        """classifier: ``random_tree`` (the paper's) or ``random_forest``.
        n_estimators: trees of the forest. min_samples_leaf: Weka's minNum (1).
        max_depth: None = unpruned."""

        classifier: Literal["random_tree", "random_forest"] = "random_tree"
        n_estimators: int = 100
        min_samples_leaf: int = 1
        max_depth: int | None = None

        def validate(self) -> None:
            at_least(self, 1, "n_estimators")
            at_least(self, 1, "min_samples_leaf")
            if self.max_depth is not None and self.max_depth < 1:
                raise FieldProblem("max_depth", f"must be >= 1, got {self.max_depth}")

    def _fit(self, features: BaselineFeatures, rows: np.ndarray, y: np.ndarray) -> None:
        x = ave_rt_inputs(features, rows)
        k = int(np.log2(x.shape[1])) + 1  # Weka RandomTree's default K
        opts = self.options
        if opts.classifier == "random_tree":
            self.model_ = DecisionTreeClassifier(
                max_features=min(k, x.shape[1]),
                min_samples_leaf=opts.min_samples_leaf,
                max_depth=opts.max_depth,
                random_state=self.seed,
            )
        else:
            self.model_ = RandomForestClassifier(
                n_estimators=opts.n_estimators,
                max_features=min(k, x.shape[1]),
                min_samples_leaf=opts.min_samples_leaf,
                max_depth=opts.max_depth,
                random_state=self.seed,
                n_jobs=1,
            )
        self.model_.fit(x, y)

    def _predict_proba(self, features: BaselineFeatures, rows: np.ndarray) -> np.ndarray:
        proba = self.model_.predict_proba(ave_rt_inputs(features, rows))
        out = np.zeros((len(rows), self.n_classes))
        out[:, self.model_.classes_] = proba
        return out
