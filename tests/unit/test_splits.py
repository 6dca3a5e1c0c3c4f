"""Cross-validation splits: grouping, LOSO, the leaky segment mode, inner splits, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from mercl.data.protocols import LEAKY_WARNING, inner_split, make_folds, trial_groups
from mercl.errors import MerclError


def _rows(n_subjects=4, n_trials=10, n_segments=7):
    """Per-row subject, trial and a per-trial label (as DEAP: ratings are per trial)."""
    subjects, trials, labels = [], [], []
    rng = np.random.default_rng(0)
    for s in range(n_subjects):
        for t in range(n_trials):
            label = int(rng.integers(0, 2))
            subjects += [f"s{s:02d}"] * n_segments
            trials += [t] * n_segments
            labels += [label] * n_segments
    return np.array(subjects), np.array(trials), np.array(labels)


def _pairs(subjects, trials, idx):
    return {(subjects[i], trials[i]) for i in idx}


def _assert_partition(cv, n):
    tests = np.concatenate([f.test for f in cv])
    assert np.array_equal(np.sort(tests), np.arange(n)), "every row is tested exactly once"
    for f in cv:
        assert len(np.intersect1d(f.train, f.test)) == 0
        assert len(f.train) + len(f.test) == n


def test_trial_grouped_folds_keep_each_trial_on_one_side():
    subjects, trials, labels = _rows()
    cv = make_folds("trial", subjects, trials, labels, n_folds=4, seed=1)
    assert len(cv) == 4 and not cv.leaky and cv.warning is None
    _assert_partition(cv, len(subjects))
    for fold in cv:
        assert not _pairs(subjects, trials, fold.train) & _pairs(subjects, trials, fold.test)
    # the same trial number of different subjects is a different group
    assert len(np.unique(cv.groups)) == 40


def test_trial_folds_are_stratified_when_possible():
    subjects, trials, labels = _rows(n_subjects=4, n_trials=20)
    cv = make_folds("trial", subjects, trials, labels, n_folds=4, seed=0)
    overall = labels.mean()
    for fold in cv:
        assert abs(labels[fold.test].mean() - overall) < 0.15


def test_subject_protocol_holds_out_exactly_one_subject():
    subjects, trials, labels = _rows(n_subjects=3)
    cv = make_folds("subject", subjects, trials, labels)
    assert len(cv) == 3
    _assert_partition(cv, len(subjects))
    held = []
    for fold in cv:
        test_subjects = set(subjects[fold.test])
        assert test_subjects == {fold.held_out_subject}
        assert fold.held_out_subject not in set(subjects[fold.train])
        held.append(fold.held_out_subject)
    assert sorted(held) == ["s00", "s01", "s02"]


def test_segment_mode_is_flagged_leaky():
    subjects, trials, labels = _rows()
    cv = make_folds("segment", subjects, trials, labels, n_folds=4, seed=0)
    assert cv.leaky is True and cv.warning == LEAKY_WARNING
    assert "inflated" in cv.warning
    _assert_partition(cv, len(subjects))
    # it does split trials across sides: that is the leak
    shared = [bool(_pairs(subjects, trials, f.train) & _pairs(subjects, trials, f.test)) for f in cv]
    assert any(shared)


@pytest.mark.parametrize("mode", ["trial", "subject", "segment"])
def test_folds_are_deterministic_for_a_seed(mode):
    subjects, trials, labels = _rows()
    a = make_folds(mode, subjects, trials, labels, seed=7)
    b = make_folds(mode, subjects, trials, labels, seed=7)
    for fa, fb in zip(a, b, strict=True):
        assert np.array_equal(fa.train, fb.train) and np.array_equal(fa.test, fb.test)
    if mode != "subject":
        c = make_folds(mode, subjects, trials, labels, seed=8)
        assert any(not np.array_equal(fa.test, fc.test) for fa, fc in zip(a, c, strict=True))


def test_unstratified_without_labels():
    subjects, trials, _ = _rows(n_subjects=2, n_trials=5)
    cv = make_folds("trial", subjects, trials, None, n_folds=5)
    _assert_partition(cv, len(subjects))
    for fold in cv:
        assert len(_pairs(subjects, trials, fold.test)) == 2


def test_inner_split_is_grouped_and_partitions_the_training_rows():
    subjects, trials, labels = _rows()
    cv = make_folds("trial", subjects, trials, labels, n_folds=4, seed=3)
    groups = trial_groups(subjects, trials)
    for fold in cv:
        tr, va = inner_split(fold.train, groups, labels, val_fraction=0.25, seed=3)
        assert np.array_equal(np.sort(np.concatenate([tr, va])), fold.train)
        assert not set(groups[tr]) & set(groups[va])
        assert 0.15 < len(va) / len(fold.train) < 0.35
        # same answer through the CrossValidation helper and with aligned arrays
        tr2, va2 = cv.inner_split(fold.train, labels, 0.25)
        assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
        tr3, va3 = inner_split(fold.train, groups[fold.train], labels[fold.train], 0.25, seed=3)
        assert np.array_equal(va, va3)
        tr4, va4 = inner_split(fold.train, groups, labels, 0.25, seed=3)
        assert np.array_equal(va, va4)


def test_bad_requests_are_one_line_errors():
    subjects, trials, labels = _rows(n_subjects=1, n_trials=3)
    with pytest.raises(MerclError, match="unknown protocol 'kfold'"):
        make_folds("kfold", subjects, trials, labels)
    with pytest.raises(MerclError, match="at least 2 subjects"):
        make_folds("subject", subjects, trials, labels)
    with pytest.raises(MerclError, match="needs at least 4 trials, the data has 3"):
        make_folds("trial", subjects, trials, labels, n_folds=4)
    with pytest.raises(MerclError, match="at least 2 groups"):
        inner_split(np.arange(7), trial_groups(subjects, trials), labels, 0.2)
