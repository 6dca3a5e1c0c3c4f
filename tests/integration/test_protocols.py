"""Stimulus-held-out protocols on real-format recordings (DEAP pickles, SEED .mat, a manifest of
EDF files): the sources give true clip identities, and ``stimulus`` / ``subject-stimulus`` folds
never put a clip (or a subject) on both sides of an outer fold or of its inner validation split.
Plus the clip-memory baseline, the default protocol and the demo study's design."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mercl.data.protocols import (
    CLIP_SHARED_WARNING,
    clips_per_class,
    default_protocol,
    make_folds,
    shared_stimuli,
)
from mercl.data.sources import SourceOptions, discover
from mercl.data.synth_sources import (
    sine_eeg,
    write_deap,
    write_recording,
    write_seed_labels,
    write_seed_session,
)
from mercl.errors import MerclError
from mercl.training.metrics import clip_majority_baseline, majority_baseline

SEGMENTS = 3  # rows per trial: segments of one trial share its subject, clip and label


def rows_of(trials) -> dict[str, np.ndarray]:
    """Per-segment rows (subject, trial, stimulus, label) of the source's trials."""
    out = {"subject": [], "trial": [], "stimulus": [], "label": []}
    for t in trials:
        label = t.label if t.label is not None else int(t.ratings["valence"] > 5)
        for key, value in (("subject", t.subject), ("trial", t.trial), ("stimulus", t.stimulus), ("label", label)):
            out[key] += [value] * SEGMENTS
    out["label"] = np.unique(out["label"], return_inverse=True)[1]  # class ids 0..K-1 (SEED's are -1/0/1)
    return {k: np.asarray(v) for k, v in out.items()}


def load(source: str, raw: Path) -> dict[str, np.ndarray]:
    return rows_of([t for unit in discover(source, raw, SourceOptions()) for t in unit.load()])


@pytest.fixture(scope="module")
def deap(tmp_path_factory) -> dict[str, np.ndarray]:
    raw = tmp_path_factory.mktemp("deap")
    for k in (1, 2, 3):
        write_deap(raw / "data_preprocessed_python" / f"s0{k}.dat", seed=k)
    return load("deap", raw)


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> dict[str, np.ndarray]:
    raw = tmp_path_factory.mktemp("seed")
    folder = raw / "Preprocessed_EEG"
    for k, subject in enumerate(("1", "2", "3")):
        write_seed_session(folder / f"{subject}_20131027.mat", prefix="ab", seed=k)
    write_seed_session(folder / "1_20131107.mat", prefix="ab", seed=9)  # a second session of subject 1
    write_seed_labels(folder)
    return load("seed", raw)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> dict[str, np.ndarray]:
    """3 subjects' EDF recordings, each watching the same 6 clips in its own order."""
    import csv

    root = tmp_path_factory.mktemp("manifest")
    eeg = sine_eeg([5, 7, 11, 13], 6 * 6.0, 128.0)
    rows = []
    for k, subject in enumerate(("p1", "p2", "p3")):
        write_recording(root / "eeg" / f"{subject}.edf", eeg, 128.0, ["Fp1", "Fz", "Cz", "Pz"])
        order = np.random.default_rng(k).permutation(6)
        for trial, clip in enumerate(order):
            rows.append({"subject": subject, "trial": trial, "stimulus": f"clip{clip}", "eeg": f"eeg/{subject}.edf",
                         "onset": 6.0 * trial, "duration": 5.0, "valence": 7.0 if clip % 2 else 3.0})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return load("manifest", root)


def check_held_out(cv, data, subjects_too: bool) -> None:
    """No clip (and for subject-stimulus no subject) on both sides of any fold or inner split."""
    stim, subj = data["stimulus"], data["subject"]
    tested = []
    for fold in cv:
        assert len(fold.test) and len(fold.train)
        assert not set(stim[fold.train]) & set(stim[fold.test]), f"fold {fold.index} shares a clip"
        if subjects_too:
            assert not set(subj[fold.train]) & set(subj[fold.test]), f"fold {fold.index} shares a subject"
            assert fold.dropped == len(stim) - len(fold.train) - len(fold.test) > 0
        inner, val = cv.inner_split(fold.train, data["label"], 0.25)
        assert len(inner) and len(val) and not np.intersect1d(inner, val).size
        assert set(inner) | set(val) <= set(fold.train)
        assert not set(stim[inner]) & set(stim[val]), "inner split shares a clip"
        if subjects_too:
            assert not set(subj[inner]) & set(subj[val]), "inner split shares a subject"
        tested.append(fold.test)
    tested = np.concatenate(tested)
    assert len(np.unique(tested)) == len(tested), "no row is tested twice"
    if not subjects_too:
        assert len(tested) == len(stim), "stimulus folds test every row once"


@pytest.mark.parametrize("fixture", ["deap", "seed", "manifest"])
def test_stimulus_folds_hold_whole_clips_out(fixture, request):
    data = request.getfixturevalue(fixture)
    assert shared_stimuli(data["subject"], data["stimulus"])
    cv = make_folds("stimulus", data["subject"], data["trial"], data["label"], 3, seed=1, stimuli=data["stimulus"])
    assert len(cv) == 3 and cv.warning is None and not cv.clip_shared
    check_held_out(cv, data, subjects_too=False)


@pytest.mark.parametrize("fixture", ["deap", "seed", "manifest"])
def test_subject_stimulus_folds_hold_subjects_and_clips_out(fixture, request):
    data = request.getfixturevalue(fixture)
    cv = make_folds("subject-stimulus", data["subject"], data["trial"], data["label"], 3, seed=2,
                    stimuli=data["stimulus"])
    check_held_out(cv, data, subjects_too=True)


def test_sources_give_true_clip_identities(deap, seed, manifest):
    # DEAP: sNN.dat trials are in video (Experiment_id) order, so trial index t is clip t + 1 for everyone
    assert set(zip(deap["trial"], deap["stimulus"], strict=True)) == {(t, f"{t + 1:02d}") for t in range(40)}
    # SEED: the clip is the _eegN number, shared by subjects and sessions; not the session-ranked trial
    assert sorted(set(seed["stimulus"])) == [f"{n:02d}" for n in range(1, 16)]
    subject1 = seed["subject"] == "1"
    assert len(set(seed["trial"][subject1])) == 30 and len(set(seed["stimulus"][subject1])) == 15
    # manifest: the stimulus column, whatever order each subject watched in
    assert sorted(set(manifest["stimulus"])) == [f"clip{k}" for k in range(6)]


def test_trial_folds_on_shared_clips_are_marked_and_clip_memory_beats_majority(deap):
    subjects, stim, trials = deap["subject"], deap["stimulus"], deap["trial"]
    # labels that mostly follow the clip (as ratings do): clip memory without any signal scores
    rng = np.random.default_rng(0)
    clip_label = {c: int(c) % 2 for c in np.unique(stim)}
    labels = np.array([clip_label[c] if rng.random() < 0.9 else 1 - clip_label[c] for c in stim])
    labels = np.repeat(labels[::SEGMENTS], SEGMENTS)  # one label per trial
    for mode in ("trial", "subject"):
        cv = make_folds(mode, subjects, trials, labels, 3, seed=0, stimuli=stim)
        assert cv.clip_shared and cv.warning == CLIP_SHARED_WARNING
        clip_acc, major_acc = [], []
        for fold in cv:
            _, clip = clip_majority_baseline(labels[fold.train], stim[fold.train], stim[fold.test],
                                             labels[fold.test], 2)
            _, major = majority_baseline(labels[fold.train], labels[fold.test], 2)
            clip_acc.append(clip.accuracy)
            major_acc.append(major.accuracy)
        assert np.mean(clip_acc) > np.mean(major_acc) + 0.15, (mode, clip_acc, major_acc)
    cv = make_folds("stimulus", subjects, trials, labels, 4, seed=0, stimuli=stim)
    for fold in cv:
        clip_pred, clip = clip_majority_baseline(labels[fold.train], stim[fold.train], stim[fold.test],
                                                 labels[fold.test], 2)
        major_pred, major = majority_baseline(labels[fold.train], labels[fold.test], 2)
        assert np.array_equal(clip_pred, major_pred) and clip.accuracy == major.accuracy


def test_clip_majority_uses_the_same_clip_among_other_viewers():
    train_labels = np.array([0, 0, 1, 1, 1, 2, 2])
    train_stim = np.array(["a", "a", "a", "b", "b", "none", "none"])
    pred, scores = clip_majority_baseline(train_labels, train_stim, np.array(["a", "b", "c", "none"]),
                                          np.array([0, 1, 1, 1]), 3)
    # clip a -> 0 (2 of 3), b -> 1, unseen clip c and no-clip rows -> the global majority (1)
    assert pred.tolist() == [0, 1, 1, 1] and scores.accuracy == 1.0


def test_too_few_clips_per_class_is_refused_with_what_would_work():
    # 4 clips: labels fixed per clip, 3 of class 0 and 1 of class 1; holding out the class-1 clip
    # leaves its class out of training
    subjects = np.repeat([f"s{k}" for k in range(4)], 4)
    stim = np.tile(["c0", "c1", "c2", "c3"], 4)
    labels = (stim == "c3").astype(int)
    with pytest.raises(MerclError) as info:
        make_folds("stimulus", subjects, np.tile(np.arange(4), 4), labels, 4, seed=0, stimuli=stim)
    message = str(info.value)
    assert "no rows of class 1" in message and "3/1 clips per class" in message and "\n" not in message
    assert clips_per_class(stim, labels).tolist() == [3, 1]
    protocol, note = default_protocol(subjects, stim, labels, 4)
    assert protocol == "trial" and "clips shared with training" in note and "\n" not in note


def test_default_protocol_and_the_demo_study_design():
    import pandas as pd

    from mercl.data.labels import assign_labels
    from mercl.data.synth import SynthConfig, design_study

    design = design_study(SynthConfig())
    rows = pd.DataFrame([
        {"subject": sub.subject, "stimulus": design.stimuli[clip].stimulus,
         **dict(zip(("valence", "arousal", "dominance", "liking"), sub.ratings[k], strict=True))}
        for sub in design.subjects for k, clip in enumerate(sub.order)])
    subjects, stim = rows["subject"].to_numpy(str), rows["stimulus"].to_numpy(str)
    assert len(np.unique(stim)) == 16 and shared_stimuli(subjects, stim)
    labels = assign_labels(rows, "quadrant4")
    assert clips_per_class(stim, labels, 4).tolist() == [4, 4, 4, 4]
    assert default_protocol(subjects, stim, labels, 4)[0] == "stimulus"
    # recordings without clips (e.g. UEA) have nothing to hold out
    none = np.array(["none"] * len(stim))
    assert default_protocol(subjects, none, labels, 4) == ("trial", "protocol trial (default): the data has no "
                                                           "stimulus clips")
    with pytest.raises(MerclError, match="the data has no stimulus clips; use --protocol trial or subject"):
        make_folds("stimulus", subjects, np.zeros(len(stim)), labels, 4, stimuli=none)


@pytest.mark.parametrize("mode", ["stimulus", "subject-stimulus", "trial"])
def test_a_final_models_validation_split_holds_out_like_the_protocol(mode, manifest):
    from mercl.data.protocols import holdout_split

    d = manifest
    train, val = holdout_split(mode, d["subject"], d["trial"], d["label"], 0.34, 0, d["stimulus"])
    assert len(train) and len(val) and not np.intersect1d(train, val).size
    pairs = set(zip(d["subject"], d["trial"], strict=True))
    trial_of = [set(zip(d["subject"][i], d["trial"][i], strict=True)) for i in (train, val)]
    assert not trial_of[0] & trial_of[1] and trial_of[0] | trial_of[1] <= pairs
    if mode != "trial":
        assert not set(d["stimulus"][train]) & set(d["stimulus"][val])
    if mode == "subject-stimulus":
        assert not set(d["subject"][train]) & set(d["subject"][val])
