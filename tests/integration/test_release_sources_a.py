"""SEED-IV, SEED-V and FACED as released: real files in each release's layout (SEED-IV .mat
v5, SEED-V Neuroscan CNT read back by MNE, FACED pickles), read by ``mercl prepare``;
trial counts, the clip ids every subject shares, the label schemes, damaged files refused
in one line, SEED-V's trial windows, and MERCL beating the majority class on a planted
signal under the default protocol (stimulus: whole clips held out)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from mercl.cli import main as mercl_main
from mercl.data.labels import class_names
from mercl.data.reader import load_dataset
from mercl.data.sources import SourceOptions, discover
from mercl.data.sources.faced import CLIP_EMOTION, FACED_CHANNELS
from mercl.data.sources.seed_iv import SEED_IV_CHANNELS, SESSION_LABELS
from mercl.data.sources.seed_v import SESSION_LABELS as SEED_V_LABELS
from mercl.data.sources.seed_v import TRIAL_SECONDS
from mercl.data.summary import find_dataset_dir
from mercl.data.synth_sources import (
    SEED_V_FILE_CHANNELS,
    faced_planted,
    planted_trial,
    write_cnt,
    write_faced,
    write_mp4,
    write_seed_iv_session,
)


def load_all(source: str, raw: Path, **options) -> list:
    return [trial for unit in discover(source, raw, SourceOptions(**options)) for trial in unit.load()]


def prepare(raw: Path, source: str, out: Path, *extra: str) -> int:
    return mercl_main(["prepare", str(raw), "--source", source, "-o", str(out), "--no-progress", *extra])


def refused(capsys, raw: Path, source: str, tmp_path: Path, match: str, *extra: str, names: Path | None = None):
    """``mercl prepare`` exits 2 with one ``mercl: error:`` line naming ``names`` (a file) and
    holding ``match``, and writes no manifest."""
    capsys.readouterr()
    assert prepare(raw, source, tmp_path / "out", *extra) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mercl: error:")]
    assert len(err) == 1 and match in err[0], err
    if names is not None:
        assert err[0].startswith(f"mercl: error: {names}"), err[0]
    assert not list((tmp_path / "out").rglob("manifest.json"))
    return err[0]


def evaluate_beats_majority(dataset: Path, scheme: str, out: Path, capsys) -> pd.DataFrame:
    """``mercl evaluate --modalities e --config tiny`` under the default protocol; MERCL beats majority."""
    capsys.readouterr()
    assert mercl_main(["evaluate", str(dataset), "--label", scheme, "--modalities", "e", "--config", "tiny",
                       "--no-progress", "-o", str(out)]) == 0
    assert "protocol stimulus (default)" in capsys.readouterr().out
    results = pd.read_csv(out / "results.csv")
    assert set(results["protocol"]) == {"stimulus"} and set(results["label"]) == {scheme}
    mean = results.groupby("method")["accuracy"].mean()
    print(f"{scheme}: mercl {mean['mercl']:.3f}, majority {mean['majority']:.3f}, "
          f"clip-majority {mean['clip-majority']:.3f}")
    assert mean["mercl"] >= mean["majority"] + 0.3, mean
    return results


# ---------------------------------------------------------------- SEED-IV


def seed_iv_marked(session: int, n_samples: int = 200) -> dict:
    """The 24 trials of a session, channel 0 holding ``100 * session + N`` uV; written eeg24..eeg1
    so that neither file order nor text order (eeg10 < eeg9) is the trial order."""
    rng = np.random.default_rng(session)
    trials = {}
    for n in range(24, 0, -1):
        eeg = rng.normal(0.0, 10.0, (62, n_samples + n))
        eeg[0] = 100 * session + n
        trials[n] = eeg
    return trials


@pytest.fixture(scope="module")
def seed_iv_raw(tmp_path_factory) -> Path:
    """SEED_IV/eeg_raw_data/{1,2,3}/ with subjects 1 (prefix cz) and 10 (prefix tyc)."""
    raw = tmp_path_factory.mktemp("seed_iv") / "SEED_IV"
    for session, dates in ((1, ("20160518", "20151014")), (2, ("20161125", "20151021")), (3, ("20161126", "20151023"))):
        for subject, prefix, date in ((1, "cz", dates[0]), (10, "tyc", dates[1])):
            write_seed_iv_session(raw / "eeg_raw_data" / str(session) / f"{subject}_{date}.mat",
                                  seed_iv_marked(session), prefix)
    (raw / "eeg_raw_data" / "ReadMe.txt").write_text("session1_label = [1,2,3,0,...];\n")
    return raw


def test_seed_iv_reads_72_shared_clips_per_subject_with_seed4_labels(seed_iv_raw):
    trials = load_all("seed-iv", seed_iv_raw)
    assert len(trials) == 144
    by_subject = {}
    for t in trials:
        by_subject.setdefault(t.subject, []).append(t)
    assert sorted(by_subject, key=int) == ["1", "10"]
    clips = [f"s{s}t{n:02d}" for s in (1, 2, 3) for n in range(1, 25)]
    for subject, mine in by_subject.items():
        assert [t.stimulus for t in mine] == clips, subject  # the 72 clip ids every subject shares
        assert [t.trial for t in mine] == list(range(72))
    for t in by_subject["10"]:
        session, n = int(t.stimulus[1]), int(t.stimulus[3:])
        assert t.eeg.shape == (62, 200 + n) and t.sfreq == 200.0 and t.ch_names == SEED_IV_CHANNELS
        np.testing.assert_allclose(t.eeg[0], (100 * session + n) * 1e-6)  # eeg<N> by its number, in volts
        assert t.label == 40 + SESSION_LABELS[session][n - 1]
    # the session lists give 6 clips of each class per session
    assert np.bincount([t.label - 40 for t in by_subject["1"]]).tolist() == [18, 18, 18, 18]
    assert class_names("seed4") == ("neutral", "sad", "fear", "happy")
    assert [u.name for u in discover("seed-iv", seed_iv_raw / "eeg_raw_data", SourceOptions())] == ["1", "10"]


def test_seed_iv_channels_by_name_any_case(seed_iv_raw):
    trials = load_all("seed-iv", seed_iv_raw / "eeg_raw_data", channels=["cz", "Fp1", "O2"])
    assert trials[0].ch_names == ["CZ", "FP1", "O2"]
    np.testing.assert_allclose(trials[5].eeg[1], 106e-6)


def _seed_iv_one(tmp_path: Path, changes: dict | None = None) -> tuple[Path, Path]:
    trials = seed_iv_marked(1)
    trials.update(changes or {})
    trials = {n: v for n, v in trials.items() if v is not None}
    path = write_seed_iv_session(tmp_path / "raw" / "eeg_raw_data" / "1" / "3_20150919.mat", trials, "cz")
    return tmp_path / "raw", path


@pytest.mark.parametrize("case", ["truncated", "no trial keys", "eeg24 missing", "eeg25", "transposed", "NaN",
                                  "session 4", "baseline correct"])
def test_seed_iv_damaged_inputs_are_one_line_errors(tmp_path, capsys, case):
    raw, path = _seed_iv_one(tmp_path)
    extra = []
    if case == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        expect = "truncated or not a MATLAB file"
    elif case == "no trial keys":
        scipy.io.savemat(str(path), {"data": np.zeros((62, 10))})
        expect = "24 of 24 trial variables '<prefix>_eeg<N>' missing"
    elif case == "eeg24 missing":
        raw, path = _seed_iv_one(tmp_path, {24: None})
        expect = "1 of 24 trial variables '<prefix>_eeg<N>' missing (N = 24)"
    elif case == "eeg25":
        scipy.io.savemat(str(path), {**{f"cz_eeg{n}": v for n, v in seed_iv_marked(1).items()},
                                     "cz_eeg25": np.zeros((62, 300))})
        expect = "trial number 25 outside 1-24"
    elif case == "transposed":
        raw, path = _seed_iv_one(tmp_path, {7: seed_iv_marked(1)[7].T})
        expect = "variable 'cz_eeg7' must be (62 channels, samples) real numbers, got float64 (207, 62)"
    elif case == "NaN":
        bad = seed_iv_marked(1)[3]
        bad[5, 17] = np.nan
        raw, path = _seed_iv_one(tmp_path, {3: bad})
        expect = "trial 2 (session 1, eeg3): EEG holds 1 NaN/Inf value(s)"
    elif case == "session 4":
        (raw / "eeg_raw_data" / "4").mkdir()
        path = raw / "eeg_raw_data" / "4"
        expect = "SEED-IV has session folders 1, 2 and 3 only"
    else:
        extra, path = ["--baseline", "correct"], None
        expect = "--baseline correct: the SEED-IV release has no baseline segment to subtract"
    refused(capsys, raw, "seed-iv", tmp_path, expect, *extra, names=path)


@pytest.fixture(scope="module")
def seed_iv_dataset(tmp_path_factory) -> Path:
    """3 subjects x session 1 (24 clips, 6 per class), 10 s trials: class k lights channel group k."""
    root = tmp_path_factory.mktemp("seed_iv_planted")
    for subject in (1, 2, 3):
        trials = {n: planted_trial(SESSION_LABELS[1][n - 1], 62, 2000, 200.0, [subject, n], 4) for n in range(1, 25)}
        write_seed_iv_session(root / "raw" / "eeg_raw_data" / "1" / f"{subject}_20160518.mat", trials, "ab")
    assert prepare(root / "raw", "seed-iv", root / "out") == 0
    return find_dataset_dir(root / "out")


def test_seed_iv_planted_signal_beats_majority_on_unseen_clips(seed_iv_dataset, tmp_path, capsys):
    manifest = json.loads((seed_iv_dataset / "manifest.json").read_text())
    assert manifest["label_schemes"] == ["seed4"] and manifest["counts"]["trials"] == 72
    evaluate_beats_majority(seed_iv_dataset, "seed4", tmp_path / "run", capsys)


def test_seed_iv_clips_for_stimuli_are_named_by_clip_id(seed_iv_dataset, tmp_path):
    """``--stimuli DIR``: the clip of every subject's session-1 trial 3 is DIR/s1t03.mp4."""
    raw = seed_iv_dataset.parents[1] / "raw"
    write_mp4(tmp_path / "clips" / "s1t03.mp4", 10.0, fps=4, size=32)
    assert prepare(raw, "seed-iv", tmp_path / "out", "--stimuli", str(tmp_path / "clips"), "--video-size", "32",
                   "--video-fps", "1") == 0
    manifest = json.loads((find_dataset_dir(tmp_path / "out") / "manifest.json").read_text())
    assert list(manifest["stimulus_files"]) == ["s1t03"]
    missing = manifest["counts"]["missing"]
    assert missing["trials_without_clip"] == 3 * 23 and "s1t03" not in missing["stimuli_without_clip"]


# ---------------------------------------------------------------- SEED-V


def test_seed_v_default_table_cuts_each_trial_exactly(tmp_path):
    """An hour-long session-1 CNT (sparse: only the trial edges are written) cut by the released
    table: every trial spans [start, end) seconds to the sample, its first and last 10 samples
    (marked with the trial number) inside, the neighbours (zero) outside."""
    starts, ends = TRIAL_SECONDS[1]
    n_samples = ends[-1] * 1000 + 500
    segments = []
    for n, (a, b) in enumerate(zip(starts, ends, strict=True), start=1):
        for first in (a * 1000, b * 1000 - 10):
            block = np.zeros((66, 10))
            block[0] = n  # FP1, microvolts
            segments.append((first, block))
    write_cnt(tmp_path / "EEG_raw" / "7_1_20180411.cnt", n_samples, SEED_V_FILE_CHANNELS, n_bytes=2,
              segments=segments)
    trials = load_all("seed-v", tmp_path, channels=["fp1"])
    assert [t.stimulus for t in trials] == [f"s1t{n:02d}" for n in range(1, 16)]
    assert [t.label - 50 for t in trials] == list(SEED_V_LABELS[1])
    for n, t in enumerate(trials, start=1):
        assert t.ch_names == ["FP1"] and t.sfreq == 1000.0 and t.subject == "7" and t.trial == n - 1
        assert t.eeg.shape == (1, (ends[n - 1] - starts[n - 1]) * 1000)
        marked = np.r_[t.eeg[0, :10], t.eeg[0, -10:]]
        np.testing.assert_allclose(marked, n * 1e-6, rtol=1e-6)  # volts, as MNE returns them
        assert not t.eeg[0, 10:-10].any()
    assert class_names("seed5") == ("disgust", "fear", "sad", "neutral", "happy")


TRIAL_S = 8  # planted trials: 8 s at 1000 Hz, starting every 10 s from 5 s


def seed_v_times_csv(path: Path) -> Path:
    rows = [f"1,{n},{5 + 10 * (n - 1)},{5 + 10 * (n - 1) + TRIAL_S}" for n in range(1, 16)]
    path.write_text("session,trial,start_s,end_s\n" + "\n".join(rows) + "\n")
    return path


def write_seed_v_planted(path: Path, subject: int, n_bytes: int = 2, sfreq: int = 1000, channels=None) -> Path:
    channels = channels or SEED_V_FILE_CHANNELS
    segments = []
    eeg_rows = [i for i, c in enumerate(channels) if c not in ("M1", "M2", "VEO", "HEO")]
    for n in range(1, 16):
        block = np.zeros((len(channels), TRIAL_S * sfreq))
        block[eeg_rows] = planted_trial(SEED_V_LABELS[1][n - 1], len(eeg_rows), TRIAL_S * sfreq, sfreq,
                                        [subject, n], 5)
        segments.append(((5 + 10 * (n - 1)) * sfreq, block))
    return write_cnt(path, 160 * sfreq, channels, sfreq, n_bytes=n_bytes, segments=segments,
                     events=[(first, 1) for first, _ in segments])


@pytest.fixture(scope="module")
def seed_v_raw(tmp_path_factory) -> Path:
    """3 subjects x session 1 as released (EEG_raw/<subject>_1_<date>.cnt), int16 and int32 files,
    trials where ``seed_v_times_csv`` says (not where the released table does)."""
    root = tmp_path_factory.mktemp("seed_v")
    for subject, n_bytes in ((1, 4), (2, 2), (3, 2)):
        write_seed_v_planted(root / "raw" / "EEG_raw" / f"{subject}_1_2018050{subject}.cnt", subject, n_bytes)
    seed_v_times_csv(root / "times.csv")
    return root


@pytest.fixture(scope="module")
def seed_v_dataset(seed_v_raw) -> Path:
    assert prepare(seed_v_raw / "raw", "seed-v", seed_v_raw / "out", "--trial-times", str(seed_v_raw / "times.csv")) == 0
    return find_dataset_dir(seed_v_raw / "out")


def test_seed_v_trial_times_override_and_shared_clips(seed_v_dataset):
    prepared = load_dataset(seed_v_dataset)
    manifest = json.loads((seed_v_dataset / "manifest.json").read_text())
    assert manifest["label_schemes"] == ["seed5"] and manifest["counts"]["trials"] == 45
    assert manifest["config"]["source"]["trial_times"][1] == [1, 2, 15.0, 23.0]
    assert len(manifest["ch_names"]) == 62 and not {"M1", "M2", "VEO", "HEO"} & set(manifest["ch_names"])
    assert manifest["sfreq"] == 1000.0
    rows = prepared.rows
    clips = rows.groupby("subject")["stimulus"].apply(lambda s: sorted(set(s)))
    assert all(c == [f"s1t{n:02d}" for n in range(1, 16)] for c in clips)  # 15 clips, each seen by all 3
    assert (rows.groupby(["subject", "stimulus"]).size() == 3).all()  # 8 s -> 3 segments of 4 s every 2 s


def test_seed_v_without_the_override_the_released_table_overruns(seed_v_raw, tmp_path, capsys):
    line = refused(capsys, seed_v_raw / "raw", "seed-v", tmp_path,
                   ".cnt: session 1 trial 2 ends at 228 s but the recording lasts 160 s")
    assert line.startswith(f"mercl: error: {seed_v_raw / 'raw' / 'EEG_raw'}/")  # whichever worker stops first


def test_seed_v_planted_signal_beats_majority_on_unseen_clips(seed_v_dataset, tmp_path, capsys):
    evaluate_beats_majority(seed_v_dataset, "seed5", tmp_path / "run", capsys)


@pytest.mark.parametrize(("text", "expect"), [
    ("session,trial,start\n1,1,0\n", "the header must be session,trial,start_s,end_s, got session,trial,start"),
    ("session,trial,start_s,end_s\n1,1,zero,8\n", "row 1: not numbers: 1,1,zero,8"),
    ("session,trial,start_s,end_s\n1,16,0,8\n", "row 1: trial 16 is not an integer 1-15"),
    ("session,trial,start_s,end_s\n4,1,0,8\n", "row 1: session 4 is not 1, 2 or 3"),
    ("session,trial,start_s,end_s\n1,1,9,8\n", "row 1: need 0 <= start_s < end_s, got start_s=9 end_s=8"),
    ("session,trial,start_s,end_s\n1,1,0,8\n1,1,10,18\n", "row 2: session 1 trial 1 is listed twice"),
    ("session,trial,start_s,end_s\n", "no trial rows"),
    ("session,trial,start_s,end_s\n1,1,0,8,9\n", "row 1: expected 4 values"),
])  # fmt: skip
def test_seed_v_bad_trial_times_csv_is_one_line(seed_v_raw, tmp_path, capsys, text, expect):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text(text)
    refused(capsys, seed_v_raw / "raw", "seed-v", tmp_path, expect, "--trial-times", str(csv_path), names=csv_path)


def test_trial_times_only_for_seed_v(seed_iv_raw, seed_v_raw, tmp_path, capsys):
    refused(capsys, seed_iv_raw, "seed-iv", tmp_path, "--trial-times applies to --source seed-v, not seed-iv",
            "--trial-times", str(seed_v_raw / "times.csv"))


@pytest.mark.parametrize("case", ["truncated", "text", "500 Hz", "60 EEG channels", "session 4", "baseline correct"])
def test_seed_v_damaged_inputs_are_one_line_errors(seed_v_raw, tmp_path, capsys, case):
    raw = tmp_path / "raw"
    path = raw / "EEG_raw" / "2_1_20180502.cnt"
    extra = ["--trial-times", str(seed_v_raw / "times.csv")]
    if case in ("truncated", "text"):
        path.parent.mkdir(parents=True)
        data = (seed_v_raw / "raw" / "EEG_raw" / path.name).read_bytes()
        path.write_bytes(data[: len(data) // 2] if case == "truncated" else b"not a Neuroscan file\n")
        expect = "truncated or not a Neuroscan CNT file"
    elif case == "500 Hz":
        write_seed_v_planted(path, 2, sfreq=500)
        expect = "sampling rate 500 Hz; SEED-V's recordings are 1000 Hz"
    elif case == "60 EEG channels":
        write_seed_v_planted(path, 2, channels=SEED_V_FILE_CHANNELS[2:])
        expect = "60 channels besides M1 M2 VEO HEO; SEED-V has 62 EEG channels (the file has 64)"
    elif case == "session 4":
        path = write_seed_v_planted(raw / "EEG_raw" / "2_4_20180502.cnt", 2)
        expect = "session 4: SEED-V has sessions 1, 2 and 3"
    else:
        write_seed_v_planted(path, 2)
        extra, path = [*extra, "--baseline", "correct"], None
        expect = "--baseline correct: the SEED-V release has no baseline segment to subtract"
    refused(capsys, raw, "seed-v", tmp_path, expect, *extra, names=path)


# ---------------------------------------------------------------- FACED


@pytest.fixture(scope="module")
def faced_raw(tmp_path_factory) -> Path:
    """Processed_data/sub000.pkl .. sub002.pkl, (28, 32, 7500) each, planted by clip category."""
    raw = tmp_path_factory.mktemp("faced")
    for subject in range(3):
        write_faced(raw / "Processed_data" / f"sub{subject:03d}.pkl", faced_planted(subject))
    return raw


def test_faced_reads_28_shared_clips_and_drops_the_mastoids(faced_raw):
    trials = load_all("faced", faced_raw)
    assert len(trials) == 84 and sorted({t.subject for t in trials}) == ["sub000", "sub001", "sub002"]
    data = faced_planted(1)
    for t in trials[28:56]:
        clip = t.trial + 1
        assert t.subject == "sub001" and t.stimulus == f"{clip:02d}"  # the clip id every subject shares
        assert t.eeg.shape == (30, 7500) and t.sfreq == 250.0 and t.ch_names == FACED_CHANNELS
        np.testing.assert_allclose(t.eeg, data[t.trial, :30] * 1e-6, rtol=1e-6)  # uV -> V, A2/A1 dropped
        assert t.label == 90 + CLIP_EMOTION[t.trial]
    assert not {"A1", "A2"} & set(FACED_CHANNELS)
    assert class_names("faced9")[4] == "neutral" and class_names("faced3") == ("negative", "neutral", "positive")
    picked = load_all("faced", faced_raw / "Processed_data" / "sub002.pkl", channels=["fp1", "CZ", "o2"])
    assert picked[0].ch_names == ["Fp1", "Cz", "O2"] and len(picked) == 28


@pytest.fixture(scope="module")
def faced_dataset(faced_raw) -> Path:
    assert prepare(faced_raw, "faced", faced_raw / "out", "--overlap", "0") == 0  # 7 segments a clip
    return find_dataset_dir(faced_raw / "out")


def test_faced_schemes_and_planted_signal_beats_majority_on_unseen_clips(faced_dataset, tmp_path, capsys):
    manifest = json.loads((faced_dataset / "manifest.json").read_text())
    assert manifest["label_schemes"] == ["faced9", "faced3"] and manifest["counts"]["trials"] == 84
    counts = manifest["counts"]["classes"]
    assert list(counts["faced3"]) == ["negative", "neutral", "positive"]
    assert counts["faced3"]["neutral"] == 3 * 4 * 7 and counts["faced3"]["negative"] == 3 * 12 * 7
    evaluate_beats_majority(faced_dataset, "faced9", tmp_path / "run", capsys)


def _faced_array(case: str):
    data = faced_planted(0)
    if case == "transposed":
        return data.transpose(0, 2, 1).copy()
    if case == "6000 samples (200 Hz)":
        return data[:, :, :6000].copy()
    if case == "NaN":
        data[4, 7, 100] = np.nan
        return data
    if case == "dict":
        return {"data": data}
    return data


@pytest.mark.parametrize(("case", "expect"), [
    ("truncated", "truncated or not a FACED pickle"),
    ("dict", "expected one numpy array (28, 32, 7500), got dict"),
    ("transposed", "expected a real array of shape (28, 32, 7500) (clips, channels, 30 s at 250 Hz), "
                   "got float32 (28, 7500, 32)"),
    ("6000 samples (200 Hz)", "got float32 (28, 32, 6000)"),
    ("NaN", "trial 4 (clip 5): EEG holds 1 NaN/Inf value(s)"),
    ("function", "refused to unpickle json.dumps (a FACED file holds one numpy array)"),
    ("baseline correct", "--baseline correct: the FACED release has no baseline segment to subtract"),
])  # fmt: skip
def test_faced_damaged_inputs_are_one_line_errors(tmp_path, capsys, case, expect):
    path = write_faced(tmp_path / "raw" / "Processed_data" / "sub005.pkl",
                       [json.dumps] if case == "function" else _faced_array(case))
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:100_000])
    extra = ["--baseline", "correct"] if case == "baseline correct" else []
    refused(capsys, tmp_path / "raw", "faced", tmp_path, expect, *extra,
            names=None if extra else path)


def test_release_label_codes_read_only_as_their_own_scheme():
    """SEED-IV, SEED-V and FACED all number classes from 0; their codes (40+, 50+, 90+) keep one
    release's labels from reading as another's scheme, and faced3 folds faced9's nine categories."""
    from mercl.data.labels import assign_labels, available_schemes
    from mercl.errors import MerclError

    for codes, schemes in (([40, 43], ["seed4"]), ([50, 54], ["seed5"]), ([90, 98], ["faced9", "faced3"]),
                           ([0, 1], ["class2"]), ([-1, 1], ["seed3"])):
        assert available_schemes(["label"], pd.DataFrame({"label": codes})) == schemes, codes
    faced = pd.DataFrame({"label": [90 + e for e in range(9)]})
    assert assign_labels(faced, "faced9").tolist() == list(range(9))
    assert assign_labels(faced, "faced3").tolist() == [0, 0, 0, 0, 1, 2, 2, 2, 2]
    assert assign_labels(pd.DataFrame({"label": [40, 41, 42, 43]}), "seed4").tolist() == [0, 1, 2, 3]
    with pytest.raises(MerclError, match="label scheme 'seed5': 'label' must be 50-54"):
        assign_labels(pd.DataFrame({"label": [43]}), "seed5")
