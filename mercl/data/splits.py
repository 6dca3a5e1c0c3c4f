"""Cross-validation splits over segments: honest (grouped) by default, the paper's leaky one on request.

Modes:

* ``trial`` (default): k-fold over trials; all segments of one (subject, trial) fall on
  the same side, so overlapping neighbouring windows never straddle train and test.
* ``loso``: leave-one-subject-out; each fold holds out every segment of one subject.
* ``segment``: the paper's k-fold over individual segments. Overlapping windows of one
  trial land on both sides, which inflates accuracy: the result carries ``leaky=True``
  and :data:`LEAKY_WARNING`, which every output built on it must print.

Folds are stratified by label where every class has enough members, and seeded.
All functions return index arrays (int64, sorted) into the rows they were given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

from mercl.errors import MerclError

SPLIT_MODES = ("trial", "loso", "segment")
LEAKY_WARNING = (
    "WARNING: segment-level k-fold (the paper's protocol) puts overlapping windows of the same trial "
    "in both training and test folds; its accuracy is inflated and not comparable to trial-grouped "
    "or leave-one-subject-out results"
)


@dataclass(frozen=True)
class Fold:
    """One outer fold: row indices (sorted int64) for training and testing."""

    index: int
    train: np.ndarray
    test: np.ndarray
    held_out_subject: str | None = None


@dataclass
class CrossValidation:
    """The folds of one split mode, plus what the inner split must group by.

    groups: (N,) int64 group id per row used for inner validation splits (a trial id in
    ``trial``/``loso`` modes, the row itself in ``segment`` mode).
    """

    mode: str
    folds: list[Fold]
    groups: np.ndarray
    leaky: bool = False
    warning: str | None = None
    seed: int = 0
    n_folds: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_folds = len(self.folds)

    def __iter__(self):
        return iter(self.folds)

    def __len__(self) -> int:
        return len(self.folds)

    def inner_split(
        self, train_indices: np.ndarray, labels: np.ndarray | None, val_fraction: float = 0.2
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`inner_split` of a fold's training rows, grouped the way this mode groups."""
        return inner_split(train_indices, self.groups, labels, val_fraction, self.seed)


def trial_groups(subjects: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """(N,) int64 id of each row's (subject, trial) pair."""
    keys = np.char.add(np.char.add(np.asarray(subjects).astype(str), "\x00"), np.asarray(trials).astype(str))
    _, ids = np.unique(keys, return_inverse=True)
    return ids.astype(np.int64)


def _can_stratify(labels: np.ndarray | None, groups: np.ndarray, n_splits: int) -> bool:
    """Every class occurs in at least ``n_splits`` distinct groups."""
    if labels is None:
        return False
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        return False
    return all(len(np.unique(groups[labels == c])) >= n_splits for c in classes)


def _grouped_kfold(
    n_splits: int, groups: np.ndarray, labels: np.ndarray | None, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    x = np.zeros(len(groups))
    if _can_stratify(labels, groups, n_splits):
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return list(splitter.split(x, labels, groups))
    splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(x, None, groups))


def make_folds(
    mode: str,
    subjects: np.ndarray,
    trials: np.ndarray,
    labels: np.ndarray | None = None,
    n_folds: int = 4,
    seed: int = 0,
) -> CrossValidation:
    """Outer cross-validation folds over N segment rows.

    subjects, trials: (N,) per-row subject id and trial number; labels: (N,) class ids
    (used for stratification; None for unstratified). ``n_folds`` is ignored by ``loso``.
    """
    if mode not in SPLIT_MODES:
        raise MerclError(f"unknown split mode '{mode}' (choose from {', '.join(SPLIT_MODES)})")
    subjects = np.asarray(subjects).astype(str)
    n = len(subjects)
    groups = trial_groups(subjects, trials)
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} rows, subjects has {n}")
    x = np.zeros(n)
    held: list[str | None]
    if mode == "loso":
        names = np.unique(subjects)
        if len(names) < 2:
            raise MerclError(f"leave-one-subject-out needs at least 2 subjects, the data has {len(names)}")
        pairs = list(LeaveOneGroupOut().split(x, None, subjects))
        held = [str(np.unique(subjects[test])[0]) for _, test in pairs]
    elif mode == "trial":
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise MerclError(
                f"trial-grouped {n_folds}-fold needs at least {n_folds} trials, the data has {n_groups}"
            )
        pairs = _grouped_kfold(n_folds, groups, labels, seed)
        held = [None] * len(pairs)
    else:
        if n < n_folds:
            raise MerclError(
                f"segment-level {n_folds}-fold needs at least {n_folds} segments, the data has {n}"
            )
        rows = np.arange(n)
        if _can_stratify(labels, rows, n_folds):
            pairs = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, labels))
        else:
            pairs = list(KFold(n_folds, shuffle=True, random_state=seed).split(x))
        held = [None] * len(pairs)
        groups = rows.astype(np.int64)
    folds = [
        Fold(i, np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64), h)
        for i, ((tr, te), h) in enumerate(zip(pairs, held, strict=True))
    ]
    leaky = mode == "segment"
    return CrossValidation(
        mode, folds, groups, leaky=leaky, warning=LEAKY_WARNING if leaky else None, seed=seed
    )


def inner_split(
    train_indices: np.ndarray,
    groups: np.ndarray,
    labels: np.ndarray | None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training rows into (inner train, validation), whole groups on each side.

    train_indices: (n,) row indices. groups, labels: either aligned with ``train_indices``
    (length n) or per-row arrays of the whole dataset (indexed by ``train_indices``).
    About ``val_fraction`` of the groups go to validation (stratified when possible).
    Returns two sorted int64 arrays of row indices, a partition of ``train_indices``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise MerclError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    train_indices = np.asarray(train_indices, dtype=np.int64)
    groups = np.asarray(groups)
    if len(groups) != len(train_indices):
        groups = groups[train_indices]
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(train_indices):
            labels = labels[train_indices]
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise MerclError(f"an inner validation split needs at least 2 groups (trials), got {n_groups}")
    n_splits = min(max(2, round(1.0 / val_fraction)), n_groups)
    _, val = _grouped_kfold(n_splits, groups, labels, seed)[0]
    is_val = np.zeros(len(train_indices), dtype=bool)
    is_val[val] = True
    return np.sort(train_indices[~is_val]), np.sort(train_indices[is_val])
