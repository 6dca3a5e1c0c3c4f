"""DREAMER, AMIGOS and MAHNOB-HCI read as released, on files written in each release's layout.

``DREAMER.mat`` and ``Data_Preprocessed_PXX.mat`` are MATLAB v5 files (scipy's ``savemat``) with
the releases' nesting; MAHNOB sessions are ``session.xml`` + a 47-channel BioSemi BDF whose
``Status`` channel marks the clip (pyedflib, as ActiView writes it). Each source: trial counts,
clip ids shared across subjects, labels at the binary threshold, baselines kept out of the trial
(and subtracted under ``--baseline correct``), damaged files as one line through ``mercl prepare``,
and ``mercl evaluate --modalities e`` above the majority class under the default (unseen-clip)
protocol on planted EEG. Last, a model trained on AMIGOS predicts MAHNOB recordings.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from mercl.cli import main as mercl_main
from mercl.data.labels import assign_labels
from mercl.data.sources import SourceOptions, discover
from mercl.data.summary import find_dataset_dir
from mercl.data.synth_sources import (
    DEAP_CHANNELS,
    MAHNOB_BDF_CHANNELS,
    class_eeg,
    dreamer_subject,
    write_amigos,
    write_dreamer,
    write_mahnob_session,
    write_mp4,
)
from mercl.inference.model_file import MODEL_FILE

EMOTIV = "AF3 F7 F3 FC5 T7 P7 O1 O2 P8 T8 FC6 F4 F8 AF4".split()
TRAIN = ["--config", "tiny", "--modalities", "e", "--no-progress"]


def load_all(source: str, raw: Path, **options) -> list:
    return [t for unit in discover(source, raw, SourceOptions(**options)) for t in unit.load()]


def prepare(raw: Path, source: str, out: Path, *extra: str) -> Path:
    assert mercl_main(["prepare", str(raw), "--source", source, "-o", str(out), "--workers", "1",
                       "--no-progress", *extra]) == 0  # fmt: skip
    return find_dataset_dir(out)


def prepare_fails(capsys, raw: Path, source: str, out: Path) -> str:
    """``mercl prepare`` ends in exit 2, one ``mercl: error:`` line and no manifest; the message."""
    capsys.readouterr()
    code = mercl_main(["prepare", str(raw), "--source", source, "-o", str(out), "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mercl: error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert not (out.exists() and list(out.rglob("manifest.json")))
    return lines[0][len("mercl: error: ") :]


def evaluate_beats_majority(dataset: Path, out: Path, capsys) -> tuple[float, float]:
    """``mercl evaluate --label valence2 --modalities e --config tiny`` under the default protocol."""
    capsys.readouterr()
    assert mercl_main(["evaluate", str(dataset), "--label", "valence2", *TRAIN, "-o", str(out)]) == 0
    assert "protocol stimulus (default)" in capsys.readouterr().out
    results = pd.read_csv(out / "results.csv")
    assert set(results["protocol"]) == {"stimulus"}
    mercl = results.loc[results["method"] == "mercl", "accuracy"].mean()
    majority = results.loc[results["method"] == "majority", "accuracy"].mean()
    assert mercl >= majority + 0.15, (mercl, majority)
    return mercl, majority


# ---------------------------------------------------------------- DREAMER

DREAMER_SCORES = [1, 2, 3, 4, 5, 3, 4, 2, 5, 1, 3, 4, 2, 5, 3, 4, 1, 5]  # per clip; 3 is the middle (low)


def dreamer_subjects(n: int, seconds: int = 8, baseline_s: int = 2) -> list[dict]:
    """Subjects whose clip-k EEG lights the channel group of its valence class; the baseline of
    clip k sits at k microvolts; subject s rates clip k ``DREAMER_SCORES[k]`` (arousal: 6 - that)."""
    subjects = []
    for s in range(n):
        high = [int(v > 3) for v in DREAMER_SCORES]
        stimuli = [class_eeg(high[k], 14, 128 * seconds, 128.0, [s, k]).T for k in range(18)]
        baselines = [np.full((128 * baseline_s, 14), float(k)) for k in range(18)]
        scores = {"valence": DREAMER_SCORES, "arousal": [6 - v for v in DREAMER_SCORES], "dominance": [3] * 18}
        subjects.append(dreamer_subject(stimuli, baselines, scores))
    return subjects


@pytest.fixture(scope="module")
def dreamer_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("dreamer")
    write_dreamer(raw / "DREAMER.mat", dreamer_subjects(3))
    return raw


def test_dreamer_trials_clips_labels_and_baseline(dreamer_raw):
    trials = load_all("dreamer", dreamer_raw)
    assert len(trials) == 3 * 18
    assert [t.subject for t in trials[::18]] == ["01", "02", "03"]
    for s in range(3):  # every subject watches clips 01..18, trial k = clip k + 1
        assert [t.stimulus for t in trials[18 * s : 18 * (s + 1)]] == [f"{k:02d}" for k in range(1, 19)]
    first = trials[0]
    assert first.ch_names == EMOTIV and first.sfreq == 128.0 and first.eeg.shape == (14, 8 * 128)
    assert first.duration == 8.0  # the 2 s baseline is not part of the trial
    # 1-5 onto 1-9 (2s - 1): the middle 3 is the threshold 5 and goes low, as in DEAP's rule
    assert [t.ratings["valence"] for t in trials[:5]] == [1.0, 3.0, 5.0, 7.0, 9.0]
    labels = assign_labels({"valence": [t.ratings["valence"] for t in trials[:18]]}, "valence2")
    assert labels.tolist() == [int(v > 3) for v in DREAMER_SCORES]
    assert assign_labels({"arousal": [trials[2].ratings["arousal"]]}, "arousal2").tolist() == [0]  # 6 - 3 = 3
    # --baseline correct: clip k's baseline sat at k uV, the stimulus near 0
    corrected = load_all("dreamer", dreamer_raw / "DREAMER.mat", baseline="correct", channels=["o1", "af3"])
    assert corrected[7].ch_names == ["O1", "AF3"]
    np.testing.assert_allclose(corrected[7].eeg.mean(axis=1), trials[7].eeg[[6, 0]].mean(axis=1) - 7e-6, atol=1e-12)


def _dreamer_variant(raw: Path, edit) -> None:
    subjects = dreamer_subjects(1, seconds=4)
    fields = edit(subjects)
    fields = fields if isinstance(fields, dict) else {}
    write_dreamer(raw / "DREAMER.mat", subjects, **fields)


def _transpose_clip(subjects):
    subjects[0]["EEG"]["stimuli"][4, 0] = subjects[0]["EEG"]["stimuli"][4, 0].T.copy()


def _nan_clip(subjects):
    subjects[0]["EEG"]["stimuli"][2, 0][10, 3] = np.nan


@pytest.mark.parametrize("damage, expected", [
    ("truncated", "truncated or not a MATLAB file"),
    (lambda s: s[0].pop("ScoreValence"), "subject 01 has no 'ScoreValence'"),
    (_transpose_clip, r"subject 01 clip 5 stimuli is \(14, 512\): channels x samples, transposed"),
    (lambda s: {"EEG_SamplingRate": 256}, "EEG_SamplingRate is 256 Hz, DREAMER's EEG is 128 Hz"),
    (lambda s: s[0].update(ScoreArousal=np.full((18, 1), 6.0)), "ScoreArousal: score 6 .* outside 1-5"),
    (lambda s: s[0]["EEG"].update(stimuli=s[0]["EEG"]["stimuli"][:17]), "EEG.stimuli holds 17 clips"),
    (_nan_clip, "subject 01 clip 3 stimuli: EEG holds 1 NaN/Inf"),
], ids=["truncated", "no-score-field", "transposed", "wrong-rate", "score-6", "17-clips", "nan"])  # fmt: skip
def test_dreamer_damaged_file_is_one_line(tmp_path, capsys, damage, expected):
    raw = tmp_path / "raw"
    if damage == "truncated":
        _dreamer_variant(raw, lambda s: None)
        blob = (raw / "DREAMER.mat").read_bytes()
        (raw / "DREAMER.mat").write_bytes(blob[: len(blob) // 2])
    else:
        _dreamer_variant(raw, damage)
    message = prepare_fails(capsys, raw, "dreamer", tmp_path / "out")
    assert message.startswith(str(raw / "DREAMER.mat")), message
    assert re.search(expected, message), message


def test_dreamer_wrong_top_level_key(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    scipy.io.savemat(str(tmp_path / "raw" / "DREAMER.mat"), {"dreamer": {"Data": 1}})
    assert "the file has no 'DREAMER' (has dreamer)" in prepare_fails(capsys, tmp_path / "raw", "dreamer",
                                                                         tmp_path / "out")


def test_dreamer_evaluate_beats_majority_on_unseen_clips(dreamer_raw, tmp_path, capsys):
    dataset = prepare(dreamer_raw, "dreamer", tmp_path / "shards", "--baseline", "correct")
    mercl, majority = evaluate_beats_majority(dataset, tmp_path / "eval", capsys)
    print(f"dreamer valence2, stimulus folds: mercl {mercl:.3f}, majority {majority:.3f}")


# ---------------------------------------------------------------- AMIGOS

AMIGOS_VIDEOS = [str(v) for v in (4, 5, 9, 10, 13, 18, 19, 20, 23, 30, 31, 34, 36, 58, 80, 138)] + ["N1", "P1",
                                                                                                     "B1", "U1"]
# per video: 5.0 is the threshold itself (low), 5.01 just above it (high)
AMIGOS_VALENCE = dict(zip(AMIGOS_VIDEOS, [5.0, 5.01, 1.0, 9.0, 2.5, 7.5, 5.0, 6.0, 3.0, 8.0, 4.0, 7.0, 4.99, 6.5,
                                          1.5, 8.5, 2.0, 7.2, 3.3, 6.6], strict=True))  # fmt: skip


def amigos_cells(participant: int, seconds: int = 8, long_videos: bool = True):
    """(video ids, joined_data, ratings) of one participant in its own video order: EEG lights the
    valence class's channel group; the 5 s baseline of video v sits at (index of v) uV."""
    order = np.random.default_rng(participant).permutation(16).tolist() + [16, 17, 18, 19]
    ids, joined, ratings = [], [], []
    for k in order:
        video = AMIGOS_VIDEOS[k]
        if k >= 16 and not long_videos:
            ids.append(None), joined.append(None), ratings.append(None)
            continue
        valence = AMIGOS_VALENCE[video]
        eeg = class_eeg(int(valence > 5), 17, 128 * seconds, 128.0, [participant, k])
        joined.append(np.vstack([np.full((640, 17), float(k)), eeg.T]))
        ids.append(video)
        ratings.append([9 - valence + 1, valence, 5.0, 5.0, 3.0, 0, 1, 0, 0, 0, 0, 0])  # arousal first
    return ids, joined, ratings


@pytest.fixture(scope="module")
def amigos_raw(tmp_path_factory) -> Path:
    """P01, P02 nested as unzipped (``Data_Preprocessed_PXX/``), P08 flat and without long videos."""
    raw = tmp_path_factory.mktemp("amigos")
    for p, nested, long_videos in ((1, True, True), (2, True, True), (8, False, False)):
        name = f"Data_Preprocessed_P{p:02d}.mat"
        write_amigos(raw / (name[:-4] if nested else "") / name, *amigos_cells(p, long_videos=long_videos))
    return raw


def test_amigos_trials_clips_labels_and_baseline(amigos_raw, caplog):
    trials = load_all("amigos", amigos_raw)
    assert "4 of 60 cells are empty (no video id or ratings) and skipped: P08 (4)" in caplog.text
    assert len(trials) == 20 + 20 + 16
    by_subject = {s: [t for t in trials if t.subject == s] for s in ("P01", "P02", "P08")}
    assert set(t.stimulus for t in by_subject["P01"]) == set(t.stimulus for t in by_subject["P02"]) == set(AMIGOS_VIDEOS)
    assert {t.stimulus for t in by_subject["P08"]} == set(AMIGOS_VIDEOS[:16])
    assert [t.stimulus for t in by_subject["P01"]] != [t.stimulus for t in by_subject["P02"]]  # own order, same ids
    first = trials[0]
    assert first.ch_names == EMOTIV and first.eeg.shape == (14, 8 * 128)  # 17 columns -> 14 EEG; 5 s cut off
    for t in trials:
        assert t.ratings["valence"] == AMIGOS_VALENCE[t.stimulus]
    at_5 = [t for t in trials if t.stimulus in ("4", "5", "36")]  # 5.0, 5.01, 4.99
    labels = assign_labels({"valence": [t.ratings["valence"] for t in at_5]}, "valence2")
    assert {t.stimulus: int(y) for t, y in zip(at_5, labels, strict=True)} == {"4": 0, "5": 1, "36": 0}
    corrected = load_all("amigos", amigos_raw / "Data_Preprocessed_P01", baseline="correct")
    for t, c in zip(by_subject["P01"], corrected, strict=True):  # the baseline of video k sat at k uV
        k = AMIGOS_VIDEOS.index(t.stimulus)
        np.testing.assert_allclose(c.eeg.mean(axis=1), t.eeg.mean(axis=1) - k * 1e-6, atol=1e-12)


def _amigos_damage(raw: Path, kind: str) -> Path:
    ids, joined, ratings = amigos_cells(3, seconds=4)
    path = raw / "Data_Preprocessed_P03.mat"
    extra = {}
    if kind == "transposed":
        joined[2] = joined[2].T.copy()
    elif kind == "16-columns":
        joined[2] = joined[2][:, :16]
    elif kind == "wrong-keys":
        write_amigos(path, ids, joined, ratings)
        content = scipy.io.loadmat(str(path))
        content["EEG_data"] = content.pop("joined_data")
        scipy.io.savemat(str(path), {k: v for k, v in content.items() if not k.startswith("__")})
        return path
    elif kind == "rating-0":
        ratings[5][1] = 0.0
    elif kind == "10-labels":
        ratings[5] = ratings[5][:10]
    elif kind == "duplicate-video":
        ids[3] = ids[4]
    elif kind == "19-cells":
        ids, joined, ratings = ids[:19], joined[:19], ratings[:19]
    write_amigos(path, ids, joined, ratings, **extra)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    return path


@pytest.mark.parametrize("kind, expected", [
    ("truncated", "truncated or not a MATLAB file"),
    ("wrong-keys", "the file has no 'joined_data'"),
    ("transposed", r"joined_data cell 3 is \(17, 1152\): channels x samples, transposed"),
    ("16-columns", r"joined_data cell 3 must be \(samples, 17\), got \(1152, 16\)"),
    ("rating-0", "cell 6: valence rating 0.0 is outside 1-9"),
    ("10-labels", "labels_selfassessment cell 6 must hold 12 numbers"),
    ("duplicate-video", "VideoIDs cells 4 and 5 are both"),
    ("19-cells", "VideoIDs holds 19 cells, AMIGOS has 20"),
])  # fmt: skip
def test_amigos_damaged_file_is_one_line(tmp_path, capsys, kind, expected):
    path = _amigos_damage(tmp_path / "raw", kind)
    message = prepare_fails(capsys, tmp_path / "raw", "amigos", tmp_path / "out")
    assert message.startswith(str(path)) and re.search(expected, message), message


def test_amigos_evaluate_beats_majority_on_unseen_clips(amigos_raw, tmp_path, capsys):
    dataset = prepare(amigos_raw, "amigos", tmp_path / "shards")
    mercl, majority = evaluate_beats_majority(dataset, tmp_path / "eval", capsys)
    print(f"amigos valence2, stimulus folds: mercl {mercl:.3f}, majority {majority:.3f}")


# ---------------------------------------------------------------- MAHNOB-HCI

MAHNOB_CLIPS = ["69.avi", "55.avi", "58.avi", "53.avi", "80.avi", "52.avi", "earworm_f.avi", "cats_f.avi"]
MAHNOB_FELT = [(5, 2), (6, 5), (1, 9), (9, 1), (3, 6), (7, 4), (4, 7), (8, 3)]  # (valence, arousal) per clip
CLIP_LEVEL_UV = 50.0  # the EEG sits 50 uV higher between the Status markers than outside them
OFFSET_UV = 200.0  # and every channel carries a 200 uV offset (BioSemi records unreferenced, DC-coupled)


def mahnob_session_eeg(subject: int, k: int, marks: tuple[float, float], seconds: int = 16) -> np.ndarray:
    """(32, S) uV: the clip's valence class lights its channel group throughout; between the
    markers every channel is raised by CLIP_LEVEL_UV, so the cut is visible in the trial's mean."""
    eeg = class_eeg(int(MAHNOB_FELT[k][0] > 5), 32, 256 * seconds, 256.0, [subject, k])
    eeg[:, int(marks[0] * 256) : int(marks[1] * 256)] += CLIP_LEVEL_UV
    return eeg + OFFSET_UV


def write_mahnob_subject(sessions: Path, subject: int, order: list[int]) -> dict[str, tuple[float, float]]:
    """Sessions (subject - 1) * 130 + 2, + 4, ... showing ``order``'s clips, each with its own marker
    times (never 30 s), then one unrated session; returns clip -> (start s, end s)."""
    marks = {}
    for rank, k in enumerate(order):
        start = 1.5 + 0.25 * ((rank + subject) % 4)
        span = (start, start + 10.0 + 0.5 * (k % 3))
        sid = (subject - 1) * 130 + 2 * (rank + 1)
        write_mahnob_session(sessions, sid, str(subject), MAHNOB_CLIPS[k], MAHNOB_FELT[k],
                             mahnob_session_eeg(subject, k, span), span)
        marks[MAHNOB_CLIPS[k][:-4]] = span
    sid = (subject - 1) * 130 + 1  # a neutral (N) cut without ratings
    write_mahnob_session(sessions, sid, str(subject), "neutral.avi", None, mahnob_session_eeg(subject, 0, (2, 12)),
                         (2.0, 12.0), trial_name=f"Part_{subject}_N_Trial1_emotion.bdf")
    return marks


@pytest.fixture(scope="module")
def mahnob_raw(tmp_path_factory) -> tuple[Path, dict]:
    raw = tmp_path_factory.mktemp("mahnob")
    marks = {}
    for subject in (1, 2, 3):
        order = np.random.default_rng(subject).permutation(len(MAHNOB_CLIPS)).tolist()
        marks[str(subject)] = write_mahnob_subject(raw / "Sessions", subject, order)
    (raw / "Sessions" / "41").mkdir()  # an implicit-tagging session: no *_emotion.bdf
    (raw / "Sessions" / "41" / "session.xml").write_text('<session><subject id="1"/></session>')
    return raw, marks


def test_mahnob_trials_clips_labels_and_status_cut(mahnob_raw, caplog):
    raw, marks = mahnob_raw
    trials = load_all("mahnob", raw)
    assert ("3 of 27 emotion sessions have no felt ratings and are skipped; 1 session folders without "
            "an *_emotion.bdf not read") in caplog.text
    assert len(trials) == 3 * 8
    clips = {s: [t.stimulus for t in trials if t.subject == s] for s in ("1", "2", "3")}
    assert all(set(c) == {m[:-4] for m in MAHNOB_CLIPS} for c in clips.values())  # mediaFile, every subject
    assert clips["1"] != clips["2"]  # each subject its own order
    assert [t.trial for t in trials if t.subject == "1"] == list(range(1, 9))  # session 1 (unrated) is trial 0
    first = trials[0]
    assert first.ch_names == DEAP_CHANNELS == MAHNOB_BDF_CHANNELS[:32] and first.sfreq == 256.0
    for t in trials:  # the window between the Status markers, to the sample; nothing of outside it
        start, end = marks[t.subject][t.stimulus]
        assert t.eeg.shape == (32, int(end * 256) - int(start * 256))
        np.testing.assert_allclose(t.eeg.mean(), (OFFSET_UV + CLIP_LEVEL_UV) * 1e-6, atol=3e-6)
        felt = MAHNOB_FELT[[m[:-4] for m in MAHNOB_CLIPS].index(t.stimulus)]
        assert (t.ratings["valence"], t.ratings["arousal"]) == felt
    at_5 = [t for t in trials if t.stimulus in ("69", "55") and t.subject == "1"]  # felt valence 5 and 6
    labels = assign_labels({"valence": [t.ratings["valence"] for t in at_5]}, "valence2")
    assert {t.stimulus: int(y) for t, y in zip(at_5, labels, strict=True)} == {"69": 0, "55": 1}
    corrected = load_all("mahnob", raw / "Sessions", baseline="correct", channels=["fp1", "CZ"])
    assert corrected[0].ch_names == ["Fp1", "Cz"]
    # the baseline (before the first marker) sat at the offset, CLIP_LEVEL_UV below the clip
    np.testing.assert_allclose(corrected[0].eeg.mean(), CLIP_LEVEL_UV * 1e-6, atol=3e-6)


def test_mahnob_one_long_status_pulse_ends_at_its_falling_edge(tmp_path):
    eeg = mahnob_session_eeg(1, 0, (3.0, 11.5), seconds=14)
    write_mahnob_session(tmp_path / "Sessions", 2, "1", "69.avi", (5, 5), eeg, (3.0, 11.5), pulse_s=-1)
    (trial,) = load_all("mahnob", tmp_path)
    assert trial.eeg.shape == (32, int(8.5 * 256))


def test_mahnob_clip_named_by_media_file_is_found_with_stimuli(tmp_path):
    """``--stimuli DIR`` holding the release's clip file ``69.avi`` (mediaFile): its trial gets the
    clip, the trial whose clip is absent is counted."""
    for sid, k in ((2, 0), (4, 1)):  # 69.avi, 55.avi
        write_mahnob_session(tmp_path / "raw" / "Sessions", sid, "1", MAHNOB_CLIPS[k], MAHNOB_FELT[k],
                             mahnob_session_eeg(1, k, (1.0, 9.0), seconds=10), (1.0, 9.0))
    write_mp4(tmp_path / "clips" / "69.avi", seconds=8.0, fps=4, size=32)
    dataset = prepare(tmp_path / "raw", "mahnob", tmp_path / "out", "--stimuli", str(tmp_path / "clips"),
                      "--video-size", "32")
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert list(manifest["stimulus_files"]) == ["69"]
    assert manifest["counts"]["missing"]["trials_without_clip"] == 1
    assert manifest["counts"]["missing"]["stimuli_without_clip"] == ["55"]


def _mahnob_damage(raw: Path, kind: str) -> Path:
    sessions = raw / "Sessions"
    eeg = mahnob_session_eeg(4, 1, (2.0, 8.0), seconds=10)
    names, rate, marks = None, 256, (2.0, 8.0)
    if kind == "no-status":
        names = [*MAHNOB_BDF_CHANNELS[:-1], "Trigger"]
    elif kind == "31-channels":
        names = [*MAHNOB_BDF_CHANNELS[:31], "Status"]
        eeg = eeg[:31]
    elif kind == "wrong-rate":
        rate, eeg = 512, np.repeat(eeg, 2, axis=1)
    elif kind == "one-marker":
        marks = (2.0,)
    folder = write_mahnob_session(sessions, 2, "4", "69.avi", (5, 5), eeg, marks, sfreq=rate, ch_names=names)
    bdf = next(folder.glob("*.bdf"))
    if kind == "truncated":
        bdf.write_bytes(bdf.read_bytes()[: bdf.stat().st_size // 2])
    if kind == "xml-garbage":
        (folder / "session.xml").write_text("<session feltVlnc='5'")
        return folder / "session.xml"
    if kind == "no-subject":
        (folder / "session.xml").write_text('<session feltVlnc="5" feltArsl="5" mediaFile="69.avi"/>')
        return folder / "session.xml"
    if kind == "felt-text":
        xml = (folder / "session.xml").read_text().replace('feltVlnc="5"', 'feltVlnc="high"')
        (folder / "session.xml").write_text(xml)
        return folder / "session.xml"
    return bdf


@pytest.mark.parametrize("kind, expected", [
    ("truncated", "truncated\\? its header's record count does not match the file size"),
    ("xml-garbage", "not a readable XML session file"),
    ("no-subject", "no <subject id"),
    ("felt-text", "feltVlnc='high' is not a number"),
    ("no-status", "no 'Status' channel"),
    ("one-marker", "one short Status marker"),
    ("31-channels", "32 channels .*MAHNOB's BDF has 32 EEG channels first"),
    ("wrong-rate", "sampled at 512 Hz, MAHNOB-HCI's BDF files are 256 Hz"),
])  # fmt: skip
def test_mahnob_damaged_session_is_one_line(tmp_path, capsys, kind, expected):
    path = _mahnob_damage(tmp_path / "raw", kind)
    message = prepare_fails(capsys, tmp_path / "raw", "mahnob", tmp_path / "out")
    assert message.startswith(str(path)) and re.search(expected, message), message


def test_mahnob_evaluate_beats_majority_on_unseen_clips(mahnob_raw, tmp_path, capsys):
    dataset = prepare(mahnob_raw[0], "mahnob", tmp_path / "shards", "--resample", "128")
    mercl, majority = evaluate_beats_majority(dataset, tmp_path / "eval", capsys)
    print(f"mahnob valence2, stimulus folds: mercl {mercl:.3f}, majority {majority:.3f}")


# ---------------------------------------------------------------- across datasets


def test_a_model_trained_on_amigos_predicts_mahnob_by_channel_name(amigos_raw, mahnob_raw, tmp_path, capsys):
    """Train on AMIGOS' 14 Emotiv channels (named in lower case), predict MAHNOB's 32-channel BDFs:
    the 14 are picked by name, in the model's order, and resampled 256 -> 128 Hz."""
    dataset = prepare(amigos_raw, "amigos", tmp_path / "shards", "--channels", ",".join(c.lower() for c in EMOTIV))
    run = tmp_path / "run"
    assert mercl_main(["train", str(dataset), "--label", "valence2", *TRAIN, "-o", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "pred"
    assert mercl_main(["predict", str(run / MODEL_FILE), str(mahnob_raw[0]), "--source", "mahnob", "-o", str(out),
                       "--no-progress"]) == 0  # fmt: skip
    console = capsys.readouterr().out
    used = [line for line in console.splitlines() if line.startswith("EEG channels used: ")]
    assert used == [f"EEG channels used: {', '.join(EMOTIV)} (the model's 14, picked by name from the 32 of "
                    f"Part_1_S_Trial1_emotion.bdf)"], console  # fmt: skip
    assert "resampled to the model's 128 Hz" in console
    assert find_dataset_dir(out / "prepared").joinpath("manifest.json").is_file()
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 24 and set(trials["subject"].astype(str)) == {"1", "2", "3"}
    assert set(trials["predicted"]) <= {"low valence", "high valence"}
    shutil.rmtree(out / "prepared")
