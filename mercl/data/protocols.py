"""Evaluation protocols, in one place: their names and help text, the default, the folds and inner splits.

Every command (``mercl evaluate``, ``train``, ``experiment``) and the search (``tuning``) take
their protocol names, the default's spelling (``auto``) and the fold makers from here.

Protocols:

* ``stimulus``: k-fold over stimulus clips; every segment of a clip, for every viewer, falls on
  one side. The question it answers: how well does the model do on content it never saw?
  Default for data whose clips are shared across subjects (DEAP, SEED, the demo study).
* ``subject-stimulus``: held-out viewers x held-out clips. Subjects and clips are each cut into
  k groups; fold i tests subject group i on clip group i and trains only on the other subjects
  watching the other clips. Rows that share a subject OR a clip with the test side are left out
  of training (``Fold.dropped`` counts them). Answers: a new person watching new content.
* ``trial``: k-fold over trials; all segments of one (subject, trial) fall on the same side, so
  overlapping neighbouring windows never straddle train and test. With clips shared across
  subjects every test clip is in training through other viewers ("clips shared with training").
* ``subject``: leave-one-subject-out; each fold holds out every segment of one subject.
  Also "clips shared with training" when every subject watched the same clips.
* ``segment``: the paper's k-fold over individual segments. Overlapping windows of one trial
  land on both sides, which inflates accuracy: the result carries ``leaky=True`` and
  :data:`LEAKY_WARNING`, which every output built on it must print.

Folds are stratified by label where every class has enough members (by the clip's majority
label for the stimulus modes), and seeded. All functions return index arrays (int64, sorted)
into the rows they were given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

from mercl.errors import MerclError

PROTOCOLS = ("stimulus", "subject-stimulus", "trial", "subject", "segment")
DEFAULT_PROTOCOL = "auto"  # the data's honest default (:func:`default_protocol`)
PROTOCOL_TEXT = {
    "stimulus": "stimulus-held-out {k}-fold (every viewer of a test clip on the test side)",
    "subject-stimulus": "held-out subjects x held-out clips, {k} folds",
    "trial": "trial-grouped {k}-fold",
    "subject": "leave-one-subject-out",
    "segment": "segment-level {k}-fold (LEAKY)",
}
PROTOCOL_HELP = (
    "stimulus (whole clips held out: new content), subject-stimulus (new people on new clips), "
    "trial (held-out trials; clips shared with training), subject (leave-one-subject-out), "
    "segment (the paper's LEAKY segment k-fold); auto (the default): stimulus when every clip "
    "was watched by two or more subjects, else trial"
)
STIMULUS_MODES = ("stimulus", "subject-stimulus")
NO_STIMULUS = ("", "none", "nan")  # stimulus ids that mean "this trial had no clip" (e.g. UEA recordings)
LEAKY_WARNING = (
    "WARNING: segment-level k-fold (the paper's protocol) puts overlapping windows of the same trial "
    "in both training and test folds; its accuracy is inflated and not comparable to trial-grouped "
    "or leave-one-subject-out results"
)
CLIP_SHARED_WARNING = (
    "clips shared with training: every subject watched the same clips, so each test clip is also in "
    "training through other viewers and a model can score by remembering the clip; the stimulus "
    "protocol holds clips out"
)


def _check_protocol(name: str) -> None:
    if name not in PROTOCOLS:
        raise MerclError(f"unknown protocol '{name}' (choose from {', '.join(PROTOCOLS)})")


@dataclass(frozen=True)
class Fold:
    """One outer fold: row indices (sorted int64) for training and testing.

    dropped: rows on neither side (``subject-stimulus``: they share a subject or a clip with the
    test side); held_out_subject: the subject of a ``subject`` fold.
    """

    index: int
    train: np.ndarray
    test: np.ndarray
    held_out_subject: str | None = None
    dropped: int = 0


@dataclass
class CrossValidation:
    """The folds of one split mode, plus what the inner split must group by.

    groups: (N,) int64 group id per row used for inner validation splits (a trial id in
    ``trial``/``subject`` modes, a clip id in ``stimulus`` modes, the row itself in ``segment`` mode).
    subject_ids: (N,) int64 subject id per row (used by the ``subject-stimulus`` inner split).
    clip_shared: the data's clips are shared across subjects and this mode does not hold them out.
    """

    mode: str
    folds: list[Fold]
    groups: np.ndarray
    leaky: bool = False
    warning: str | None = None
    seed: int = 0
    subject_ids: np.ndarray | None = None
    clip_shared: bool = False
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
        """(inner train, validation) rows of a fold's training rows, held out the way this mode holds out.

        ``stimulus``: whole clips go to validation; ``subject-stimulus``: validation is held-out
        subjects on held-out clips and inner training drops rows sharing either with it (so the
        two sides are disjoint but need not cover ``train_indices``); other modes: whole groups,
        a partition of ``train_indices``.
        """
        if self.mode == "subject-stimulus":
            return crossed_inner_split(train_indices, self.subject_ids, self.groups, labels, val_fraction, self.seed)
        return inner_split(train_indices, self.groups, labels, val_fraction, self.seed)


def trial_groups(subjects: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """(N,) int64 id of each row's (subject, trial) pair."""
    keys = np.char.add(np.char.add(np.asarray(subjects).astype(str), "\x00"), np.asarray(trials).astype(str))
    _, ids = np.unique(keys, return_inverse=True)
    return ids.astype(np.int64)


def _codes(values: np.ndarray) -> np.ndarray:
    _, ids = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return ids.astype(np.int64)


def has_clip(stimuli: np.ndarray) -> np.ndarray:
    """(N,) bool: the row's trial had a real stimulus clip (not ``none``/empty)."""
    s = np.char.lower(np.char.strip(np.asarray(stimuli).astype(str)))
    return ~np.isin(s, NO_STIMULUS)


def shared_stimuli(subjects: np.ndarray, stimuli: np.ndarray) -> bool:
    """True when the data has clips and every clip was watched by at least 2 subjects."""
    subjects, stimuli = np.asarray(subjects).astype(str), np.asarray(stimuli).astype(str)
    real = has_clip(stimuli)
    if not real.any():
        return False
    clips = np.unique(stimuli[real])
    return all(len(np.unique(subjects[real & (stimuli == c)])) >= 2 for c in clips)


def clips_per_class(stimuli: np.ndarray, labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """(n_classes,) how many clips have each class as their majority label (ties: smaller class)."""
    stimuli, labels = np.asarray(stimuli).astype(str), np.asarray(labels).astype(np.int64)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    keep = has_clip(stimuli)
    counts = np.zeros(n_classes, dtype=np.int64)
    for clip in np.unique(stimuli[keep]):
        counts[np.bincount(labels[keep & (stimuli == clip)], minlength=n_classes).argmax()] += 1
    return counts


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


def _group_folds(groups: np.ndarray, labels: np.ndarray | None, n_splits: int, seed: int) -> list[np.ndarray]:
    """Cut the distinct values of ``groups`` into ``n_splits`` sets of group ids.

    With labels, stratified by each group's majority label: every class's groups are shuffled
    and dealt round-robin over the folds, continuing where the previous class stopped, so each
    fold gets at most ceil(n_c / k) groups of class c and the folds' sizes differ by at most one
    group (scikit-learn's StratifiedKFold clusters a class into few folds when it has fewer
    groups than folds: 4 clips per class in 5 folds put one fold's test side all in one class).
    """
    ids = np.unique(groups)
    rng = np.random.default_rng(seed)
    if labels is None:
        return [np.sort(part) for part in np.array_split(rng.permutation(ids), n_splits)]
    labels = np.asarray(labels).astype(np.int64)
    n_classes = int(labels.max()) + 1
    major = np.array([np.bincount(labels[groups == g], minlength=n_classes).argmax() for g in ids])
    folds: list[list] = [[] for _ in range(n_splits)]
    position = 0
    for c in rng.permutation(np.unique(major)):
        for g in rng.permutation(ids[major == c]):
            folds[position % n_splits].append(g)
            position += 1
    return [np.sort(np.asarray(f, dtype=ids.dtype)) for f in folds]


def _require_stimuli(mode: str, subjects: np.ndarray, stimuli: np.ndarray | None) -> np.ndarray:
    if stimuli is None:
        raise MerclError(f"the {mode} protocol needs each row's stimulus id")
    stimuli = np.asarray(stimuli).astype(str)
    if not shared_stimuli(subjects, stimuli):
        why = ("the data has no stimulus clips" if not has_clip(stimuli).any()
               else "its clips are not each watched by 2 or more subjects")
        raise MerclError(f"the {mode} protocol holds out clips shared across subjects, but {why}; "
                         "use --protocol trial or subject")
    if not has_clip(stimuli).all():
        raise MerclError(f"the {mode} protocol needs a stimulus clip for every trial; "
                         f"{int((~has_clip(stimuli)).sum())} rows have none")
    return stimuli


def _check_training_classes(mode: str, folds: list[Fold], labels: np.ndarray | None, n_folds: int,
                            stimuli: np.ndarray) -> None:
    """Refuse folds whose training side lacks a class the data has; say what k would work."""
    if labels is None:
        return
    labels = np.asarray(labels).astype(np.int64)
    classes = np.unique(labels)
    for fold in folds:
        missing = np.setdiff1d(classes, labels[fold.train])
        if len(missing):
            per_class = clips_per_class(stimuli, labels)
            k = int(max(2, min(per_class[c] for c in classes)))
            raise MerclError(
                f"{mode} {n_folds}-fold: fold {fold.index}'s training side has no rows of class "
                f"{', '.join(map(str, missing))}; the data has {'/'.join(str(int(per_class[c])) for c in classes)} "
                f"clips per class (by each clip's majority label); use --folds {k} or fewer, or --protocol trial")


def make_folds(
    mode: str,
    subjects: np.ndarray,
    trials: np.ndarray,
    labels: np.ndarray | None = None,
    n_folds: int = 4,
    seed: int = 0,
    stimuli: np.ndarray | None = None,
) -> CrossValidation:
    """Outer cross-validation folds over N segment rows.

    subjects, trials: (N,) per-row subject id and trial number; labels: (N,) class ids
    (used for stratification; None for unstratified); stimuli: (N,) per-row clip id (needed by
    the stimulus modes; elsewhere it only decides whether clips are shared with training).
    ``n_folds`` is ignored by ``subject``.
    """
    _check_protocol(mode)
    subjects = np.asarray(subjects).astype(str)
    n = len(subjects)
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} rows, subjects has {n}")
    groups = trial_groups(subjects, trials)
    subject_ids = _codes(subjects)
    held: list[str | None] = [None] * n_folds
    dropped = [0] * n_folds
    if mode in STIMULUS_MODES:
        stimuli = _require_stimuli(mode, subjects, stimuli)
        groups = _codes(stimuli)
        pairs, dropped = _stimulus_pairs(mode, groups, subject_ids, labels, n_folds, seed)
    elif mode == "subject":
        pairs, held = _subject_pairs(subjects)
        dropped = [0] * len(pairs)
    elif mode == "trial":
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise MerclError(
                f"trial-grouped {n_folds}-fold needs at least {n_folds} trials, the data has {n_groups}"
            )
        pairs = _grouped_kfold(n_folds, groups, labels, seed)
    else:
        pairs = _segment_pairs(n, labels, n_folds, seed)
        groups = np.arange(n, dtype=np.int64)
    folds = [
        Fold(i, np.sort(tr).astype(np.int64), np.sort(te).astype(np.int64), h, d)
        for i, ((tr, te), h, d) in enumerate(zip(pairs, held, dropped, strict=True))
    ]
    if mode in STIMULUS_MODES:
        _check_training_classes(mode, folds, labels, n_folds, stimuli)
    leaky = mode == "segment"
    clip_shared = mode in ("trial", "subject") and stimuli is not None and shared_stimuli(subjects, stimuli)
    warning = LEAKY_WARNING if leaky else CLIP_SHARED_WARNING if clip_shared else None
    return CrossValidation(mode, folds, groups, leaky=leaky, warning=warning, seed=seed,
                           subject_ids=subject_ids, clip_shared=clip_shared)


def _stimulus_pairs(mode: str, clips: np.ndarray, subject_ids: np.ndarray, labels: np.ndarray | None,
                    n_folds: int, seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[int]]:
    """(train, test) row pairs of ``stimulus`` / ``subject-stimulus`` and, per fold, the rows left
    out of training for sharing a subject or a clip with the test side. clips: (N,) clip codes."""
    n, dropped = len(clips), [0] * n_folds
    n_clips = len(np.unique(clips))
    if n_clips < n_folds:
        raise MerclError(f"{mode} {n_folds}-fold needs at least {n_folds} clips, the data has {n_clips}")
    clip_sets = _group_folds(clips, labels, n_folds, seed)
    if mode == "stimulus":
        return [(np.flatnonzero(~np.isin(clips, c)), np.flatnonzero(np.isin(clips, c))) for c in clip_sets], dropped
    n_subjects = len(np.unique(subject_ids))
    if n_subjects < n_folds:
        raise MerclError(f"subject-stimulus {n_folds}-fold needs at least {n_folds} subjects, "
                         f"the data has {n_subjects}")
    subject_sets = _group_folds(subject_ids, None, n_folds, seed)
    pairs = []
    for i, (clip_set, people) in enumerate(zip(clip_sets, subject_sets, strict=True)):
        in_clips, in_people = np.isin(clips, clip_set), np.isin(subject_ids, people)
        pairs.append((np.flatnonzero(~in_clips & ~in_people), np.flatnonzero(in_clips & in_people)))
        dropped[i] = int(n - (~in_clips & ~in_people).sum() - (in_clips & in_people).sum())
    return pairs, dropped


def _subject_pairs(subjects: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str | None]]:
    """Leave-one-subject-out (train, test) pairs and each fold's held-out subject."""
    names = np.unique(subjects)
    if len(names) < 2:
        raise MerclError(f"leave-one-subject-out needs at least 2 subjects, the data has {len(names)}")
    pairs = list(LeaveOneGroupOut().split(np.zeros(len(subjects)), None, subjects))
    return pairs, [str(np.unique(subjects[test])[0]) for _, test in pairs]


def _segment_pairs(n: int, labels: np.ndarray | None, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The paper's segment-level k-fold (LEAKY): rows dealt regardless of trial, stratified when possible."""
    if n < n_folds:
        raise MerclError(f"segment-level {n_folds}-fold needs at least {n_folds} segments, the data has {n}")
    x = np.zeros(n)
    if _can_stratify(labels, np.arange(n), n_folds):
        return list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, labels))
    return list(KFold(n_folds, shuffle=True, random_state=seed).split(x))


def default_protocol(
    subjects: np.ndarray, stimuli: np.ndarray, labels: np.ndarray | None, n_folds: int = 4, seed: int = 0
) -> tuple[str, str]:
    """The honest default and a one-line reason: ``stimulus`` when the clips are shared across
    subjects and ``stimulus`` folds can be made (every training side keeps every class);
    otherwise ``trial``. Returns ``(protocol, note)``."""
    if not shared_stimuli(subjects, stimuli):
        return "trial", ("protocol trial (default): the data has no stimulus clips shared across subjects"
                         if has_clip(stimuli).any() or len(stimuli) == 0 else
                         "protocol trial (default): the data has no stimulus clips")
    try:
        make_folds("stimulus", subjects, np.zeros(len(subjects)), labels, n_folds, seed, stimuli)
    except MerclError as exc:
        return "trial", f"protocol trial (default; clips shared with training): no stimulus folds: {exc}"
    n_clips = len(np.unique(np.asarray(stimuli).astype(str)))
    return "stimulus", (f"protocol stimulus (default): the {n_clips} clips are shared across subjects, "
                        f"so {n_folds}-fold CV holds whole clips out")


def holdout_split(
    mode: str,
    subjects: np.ndarray,
    trials: np.ndarray,
    labels: np.ndarray | None,
    val_fraction: float = 0.2,
    seed: int = 0,
    stimuli: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (train, validation) split of all N rows, held out the way ``mode`` holds out its test
    folds (``stimulus``: whole clips; ``subject-stimulus``: held-out subjects x held-out clips;
    ``trial``/``subject``: whole trials; ``segment``: rows). For a final model's early stopping."""
    _check_protocol(mode)
    subjects = np.asarray(subjects).astype(str)
    rows = np.arange(len(subjects))
    if mode in STIMULUS_MODES:
        clips = _codes(_require_stimuli(mode, subjects, stimuli))
        if mode == "subject-stimulus":
            return crossed_inner_split(rows, _codes(subjects), clips, labels, val_fraction, seed)
        return inner_split(rows, clips, labels, val_fraction, seed)
    groups = rows if mode == "segment" else trial_groups(subjects, trials)
    return inner_split(rows, groups, labels, val_fraction, seed)


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
    train_indices, groups, labels = _aligned(train_indices, groups, labels, val_fraction)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise MerclError(f"an inner validation split needs at least 2 groups (trials or clips), got {n_groups}")
    n_splits = min(max(2, round(1.0 / val_fraction)), n_groups)
    _, val = _grouped_kfold(n_splits, groups, labels, seed)[0]
    is_val = np.zeros(len(train_indices), dtype=bool)
    is_val[val] = True
    return np.sort(train_indices[~is_val]), np.sort(train_indices[is_val])


def crossed_inner_split(
    train_indices: np.ndarray,
    subject_ids: np.ndarray,
    clip_ids: np.ndarray,
    labels: np.ndarray | None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out subjects x held-out clips inside a fold's training rows.

    About ``val_fraction`` of the subjects and of the clips are held out; validation is their
    crossing; inner training keeps rows sharing neither (the rest are used on neither side).
    Arrays as in :func:`inner_split`. Returns two sorted, disjoint int64 arrays of row indices.
    """
    train_indices, clip_ids, labels = _aligned(train_indices, clip_ids, labels, val_fraction)
    subject_ids = np.asarray(subject_ids)
    if len(subject_ids) != len(train_indices):
        subject_ids = subject_ids[train_indices]
    n_splits = max(2, round(1.0 / val_fraction))
    for name, ids in (("subjects", subject_ids), ("clips", clip_ids)):
        if len(np.unique(ids)) < 2:
            raise MerclError(f"a held-out-subject x held-out-clip validation split needs at least 2 {name} "
                             f"in the training rows, got {len(np.unique(ids))}")
    val_clips = _group_folds(clip_ids, labels, min(n_splits, len(np.unique(clip_ids))), seed)[0]
    val_people = _group_folds(subject_ids, None, min(n_splits, len(np.unique(subject_ids))), seed)[0]
    in_clips, in_people = np.isin(clip_ids, val_clips), np.isin(subject_ids, val_people)
    return np.sort(train_indices[~in_clips & ~in_people]), np.sort(train_indices[in_clips & in_people])


def _aligned(train_indices, groups, labels, val_fraction):
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
    return train_indices, groups, labels


# ----------------------------------------------------------------------------- names as the commands use them


def protocol_label(protocol: str, clip_shared: bool = False) -> str:
    """The protocol as every output states it: ``segment`` carries ``(LEAKY)``; ``trial`` and
    ``subject`` on data whose clips every subject watched carry ``(clips shared with training)``."""
    if protocol == "segment":
        return "segment (LEAKY)"
    if clip_shared and protocol in ("trial", "subject"):
        return f"{protocol} (clips shared with training)"
    return protocol


def parse_protocols(text: str, *, allow_both: bool = True) -> list[str]:
    """``"segment,trial,stimulus"`` -> a list of protocol names; ``both`` = segment and trial
    (the paper's leaky protocol beside the trial-grouped one); ``auto`` = the data's default."""
    names: list[str] = []
    for part in (p.strip() for p in str(text).split(",")):
        chosen = ["segment", "trial"] if part == "both" and allow_both else [part]
        for name in chosen:
            if name not in (*PROTOCOLS, DEFAULT_PROTOCOL):
                raise MerclError(f"--protocol: unknown protocol '{name}' (choose from {', '.join(PROTOCOLS)}, "
                                 f"{DEFAULT_PROTOCOL}{', both' if allow_both else ''}, or a comma list)")
            if name not in names:
                names.append(name)
    return names


def resolve_protocol(protocol: str | None, prepared, labels: np.ndarray | None, folds: int,
                     seed: int) -> tuple[str, str | None]:
    """``None``/``auto`` -> the data's default protocol (:func:`default_protocol`) and the one-line
    note saying why; an explicit protocol -> itself and no note. ``prepared``: anything with
    per-row ``subjects`` and ``stimulus_ids`` (a :class:`~mercl.data.reader.PreparedDataset`)."""
    if protocol not in (None, DEFAULT_PROTOCOL):
        _check_protocol(protocol)
        return protocol, None
    return default_protocol(prepared.subjects, prepared.stimulus_ids, labels, folds, seed)


def protocol_folds(protocol: str, prepared, labels: np.ndarray | None, folds: int, seed: int) -> CrossValidation:
    """The :class:`CrossValidation` of ``protocol`` on a prepared dataset (per-row ``subjects``,
    ``trials``, ``stimulus_ids``)."""
    return make_folds(protocol, prepared.subjects, prepared.trials, labels, folds, seed=seed,
                      stimuli=prepared.stimulus_ids)
