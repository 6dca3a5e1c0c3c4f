"""The majority-class baseline: every row gets the most frequent class of the training rows."""

from __future__ import annotations

import numpy as np

from mercl.baselines.base import Baseline
from mercl.baselines.features import BaselineFeatures


class Majority(Baseline):
    """Predicts the training rows' most frequent class (ties: the smallest label).

    ``predict_proba`` gives every row the training class frequencies.
    """

    name = "majority"
    modalities = ()

    def _fit(self, features: BaselineFeatures, rows: np.ndarray, y: np.ndarray) -> None:
        self.prior_ = np.bincount(y, minlength=len(self.classes_)) / len(y)

    def _predict_proba(self, features: BaselineFeatures, rows: np.ndarray) -> np.ndarray:
        return np.tile(self.prior_, (len(rows), 1))
