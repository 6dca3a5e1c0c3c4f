"""Classification metrics and the majority-class baseline.

Accuracy and F1 follow scikit-learn's definitions (``accuracy_score``, ``f1_score`` with
``zero_division=0``, ``confusion_matrix``; tests compare them on random labels) but are
computed here from one confusion matrix: they run after every epoch in every training
worker, where importing scikit-learn would cost each process ~0.7 s.

The majority baseline predicts the most frequent class of the TRAINING fold for every
test row: that is the accuracy a model must beat to have learnt anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRIVIAL_BASELINES = ("majority", "clip-majority")  # printed beside every model score


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
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be two (N,) arrays, got {y_true.shape} and {y_pred.shape}")
    if len(y_true) == 0:
        return ClassificationMetrics(float("nan"), float("nan"), [float("nan")] * n_classes,
                                     np.zeros((n_classes, n_classes), dtype=np.int64), 0)
    outside = (y_true < 0) | (y_true >= n_classes) | (y_pred < 0) | (y_pred >= n_classes)
    if outside.any():
        raise ValueError(f"class indices must lie in range({n_classes}), got "
                         f"{sorted(set(y_true[outside].tolist()) | set(y_pred[outside].tolist()))[:5]}")
    confusion = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    hits = np.diag(confusion)
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (true count + predicted count); 0 where both are 0
    support = confusion.sum(axis=1) + confusion.sum(axis=0)
    per_class = np.divide(2.0 * hits, support, out=np.zeros(n_classes), where=support > 0)
    # macro-F1 over the classes that occur in either array (sklearn's default behaviour)
    present = support > 0
    return ClassificationMetrics(
        accuracy=float(hits.sum() / len(y_true)),
        macro_f1=float(per_class[present].mean()),
        per_class_f1=[float(f) for f in per_class],
        confusion=confusion,
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


def clip_majority_predictions(train_labels, train_stimuli, test_stimuli, n_classes: int) -> np.ndarray:
    """For each test row, the majority label of the SAME clip among the training rows (other
    viewers); the global training majority where the clip is not in training or has no clip
    (ties: the smaller index). (N_test,) int64.

    This is pure clip memory: no signal of the test row is used. Under folds that hold clips
    out it equals the majority baseline by construction.
    """
    from mercl.data.protocols import has_clip

    train_labels = np.asarray(train_labels, dtype=np.int64)
    train_stimuli = np.asarray(train_stimuli).astype(str)
    test_stimuli = np.asarray(test_stimuli).astype(str)
    pred = np.full(len(test_stimuli), majority_class(train_labels, n_classes), dtype=np.int64)
    usable = has_clip(train_stimuli)
    for clip in np.unique(test_stimuli[has_clip(test_stimuli)]):
        seen = usable & (train_stimuli == clip)
        if seen.any():
            pred[test_stimuli == clip] = majority_class(train_labels[seen], n_classes)
    return pred


def clip_majority_baseline(
    train_labels, train_stimuli, test_stimuli, test_labels, n_classes: int
) -> tuple[np.ndarray, ClassificationMetrics]:
    """:func:`clip_majority_predictions` for every test row -> (predictions (N,), metrics)."""
    pred = clip_majority_predictions(train_labels, train_stimuli, test_stimuli, n_classes)
    return pred, classification_metrics(np.asarray(test_labels, dtype=np.int64), pred, n_classes)
