"""Classification metrics (sklearn) and the majority-class baseline.

The majority baseline predicts the most frequent class of the TRAINING fold for every
test row: that is the accuracy a model must beat to have learnt anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


@dataclass
class ClassificationMetrics:
    """Scores of one prediction set. ``confusion[i, j]``: rows with true class i predicted j."""

    accuracy: float
    macro_f1: float
    per_class_f1: list[float]
    confusion: np.ndarray  # (n_classes, n_classes) int
    n: int

    def scalars(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{prefix+"accuracy": ..., prefix+"macro_f1": ..., prefix+"f1_class<k>": ...}``."""
        out = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
        out.update({f"{prefix}f1_class{k}": f for k, f in enumerate(self.per_class_f1)})
        return out


def classification_metrics(y_true, y_pred, n_classes: int) -> ClassificationMetrics:
    """Accuracy, macro-F1 over all ``n_classes`` (absent classes count as F1 0 only if predicted).

    y_true, y_pred: (N,) int arrays of class indices in ``range(n_classes)``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    labels = np.arange(n_classes)
    if len(y_true) == 0:
        return ClassificationMetrics(float("nan"), float("nan"), [float("nan")] * n_classes,
                                     np.zeros((n_classes, n_classes), dtype=np.int64), 0)
    # Macro-F1 over the classes that occur in either array (sklearn's default behaviour);
    # per-class F1 over all classes with zero_division=0.
    present = np.union1d(y_true, y_pred)
    macro = f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return ClassificationMetrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(macro),
        per_class_f1=[float(f) for f in per_class],
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        n=int(len(y_true)),
    )


def majority_class(train_labels, n_classes: int) -> int:
    """The most frequent class among the training labels (ties: the smaller index)."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=n_classes)
    return int(np.argmax(counts))


def majority_baseline(train_labels, test_labels, n_classes: int) -> tuple[np.ndarray, ClassificationMetrics]:
    """Predict the training fold's majority class for every test row -> (predictions (N,), metrics)."""
    test_labels = np.asarray(test_labels, dtype=np.int64)
    pred = np.full(len(test_labels), majority_class(train_labels, n_classes), dtype=np.int64)
    return pred, classification_metrics(test_labels, pred, n_classes)
