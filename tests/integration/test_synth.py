"""``mercl synth``: real mp4/EDF/CSV files, read back by PyAV, MNE and the manifest source."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import mne
import numpy as np
import pytest
from scipy.signal import welch
from scipy.stats import spearmanr

from mercl.cli import main as cli_main
from mercl.data.sources import SourceOptions, discover
from mercl.data.synth import QUADRANTS, SynthConfig, design_study, synthesize
from mercl.errors import ConfigError, InputFileError

ARGS = [
    "--subjects",
    "4",
    "--stimuli",
    "8",
    "--duration",
    "10",
    "--video-size",
    "32",
    "--fps",
    "5",
    "--seed",
    "3",
]
CONFIG = SynthConfig(subjects=4, stimuli=8, duration=10.0, video_size=32, fps=5, seed=3)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "study"
    assert cli_main(["synth", str(out), *ARGS]) == 0
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def decode(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(T, H, W, 3) uint8 frames, (S,) audio or None, and stream facts of an mp4."""
    with av.open(str(path)) as container:
        facts = {s.type: s.codec_context.name for s in container.streams}
        facts["audio_rate"] = container.streams.audio[0].rate if container.streams.audio else None
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    audio = None
    if facts["audio_rate"]:
        with av.open(str(path)) as container:
            audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)[0]
    return frames, audio, facts


def separates(values, high: np.ndarray) -> bool:
    """Whether every clip of the high class scores above every clip of the low class."""
    values = np.asarray(values)
    return bool(values[high].min() > values[~high].max())


def dbfs(wave: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(wave.astype(np.float64) ** 2)) + 1e-12))


def test_files_and_formats(study):
    assert sorted(p.name for p in study.iterdir()) == [
        "eeg",
        "manifest.csv",
        "ratings.csv",
        "stimuli",
        "stimuli.csv",
    ]
    clips = sorted((study / "stimuli").glob("*.mp4"))
    assert [p.stem for p in clips] == [f"clip{i:02d}" for i in range(1, 9)]
    without_audio = []
    for clip in clips:
        frames, audio, facts = decode(clip)
        assert facts["video"] in ("h264", "mpeg4")
        assert frames.shape == (50, 32, 32, 3)
        if audio is None:
            without_audio.append(clip.stem)
        else:
            assert facts["audio"] == "aac" and facts["audio_rate"] == 16000
            assert abs(audio.size / 16000 - 10.0) < 0.2
    assert len(without_audio) == 1  # exactly one clip has no audio stream at all
    design = read_csv(study / "stimuli.csv")
    assert [d["stimulus"] for d in design if d["has_audio"] == "0"] == without_audio

    edfs = sorted((study / "eeg").glob("*.edf"))
    assert [p.stem for p in edfs] == ["s01", "s02", "s03", "s04"]
    raw = mne.io.read_raw_edf(edfs[0], preload=True, verbose="error")
    assert raw.info["sfreq"] == 128.0 and len(raw.ch_names) == 14
    assert {"AF3", "AF4", "F3", "F4", "F7", "F8"} <= set(raw.ch_names)
    data = raw.get_data()
    assert 2e-6 < data.std() < 100e-6  # EEG-like amplitudes, stored in volts by MNE
    assert not list(study.rglob("*.tmp-*"))  # atomic writes left no temporaries


def test_cli_prints_where_it_wrote(tmp_path, capsys):
    out = tmp_path / "small"
    args = ["--subjects", "1", "--stimuli", "4", "--duration", "4", "--video-size", "16", "--fps", "2"]
    assert cli_main(["synth", str(out), *args]) == 0
    printed = capsys.readouterr().out
    for part in ("stimuli", "eeg", "ratings.csv", "manifest.csv", "mercl prepare"):
        assert part in printed
    assert str(out / "manifest.csv") in printed


def test_manifest_reads_back_through_the_source(study):
    manifest = read_csv(study / "manifest.csv")
    ratings = read_csv(study / "ratings.csv")
    assert len(manifest) == len(ratings) == 32
    units = discover("manifest", study, SourceOptions())
    assert [u.name for u in units] == ["s01", "s02", "s03", "s04"]
    trials = [t for u in units for t in u.load()]
    assert len(trials) == 32
    by_key = {(r["subject"], int(r["trial"])): r for r in ratings}
    lags = {}
    for trial in trials:
        assert trial.eeg.shape == (14, int(10.5 * 128)) and trial.sfreq == 128.0
        assert np.isfinite(trial.eeg).all()
        row = by_key[(trial.subject, trial.trial)]
        assert trial.stimulus == row["stimulus"]
        for name in ("valence", "arousal", "dominance", "liking"):
            assert trial.ratings[name] == pytest.approx(float(row[name]))
            assert 1.0 <= trial.ratings[name] <= 9.0
        assert 0.0 <= trial.lag <= 0.5
        lags.setdefault(trial.subject, set()).add(trial.lag)
    assert all(len(v) == 1 for v in lags.values())  # a lag per subject
    assert len({v.pop() for v in lags.values()}) > 1
    # Every subject saw every clip once.
    for subject in ("s01", "s04"):
        assert sorted(t.stimulus for t in trials if t.subject == subject) == [
            f"clip{i:02d}" for i in range(1, 9)
        ]


def test_refuses_non_empty_out_without_force(study, tmp_path, capsys):
    before = (study / "manifest.csv").read_bytes()
    assert cli_main(["synth", str(study), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mercl: error: ") and "not empty" in err and "--force" in err
    assert err.count("\n") == 1
    assert (study / "manifest.csv").read_bytes() == before

    forced = tmp_path / "forced"
    forced.mkdir()
    (forced / "notes.txt").write_text("keep me")
    small = ["--subjects", "1", "--stimuli", "4", "--duration", "4", "--video-size", "16", "--fps", "2"]
    assert cli_main(["synth", str(forced), *small]) == 2
    assert cli_main(["synth", str(forced), *small, "--force"]) == 0
    assert (forced / "notes.txt").read_text() == "keep me" and (forced / "manifest.csv").is_file()

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InputFileError, match="not a directory"):
        synthesize(a_file, SynthConfig(subjects=1, stimuli=4, duration=4))


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--stimuli", "3", "--stimuli: must be 4-999"),
        ("--video-size", "33", "--video-size: must be an even number"),
        ("--sfreq", "64", "--sfreq: must be 100-2048 Hz"),
        ("--channels", "40", "--channels: must be 2-32"),
        ("--duration", "2", "--duration: must be 4-600 s"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, flag, value, message):
    assert cli_main(["synth", str(tmp_path / "x"), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mercl: error: {message}")
    assert err.count("\n") == 1
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError):
        synthesize(tmp_path / "y", SynthConfig(stimuli=2))


def test_deterministic_for_a_seed(study, tmp_path):
    again = synthesize(tmp_path / "again", CONFIG)
    for name in ("manifest.csv", "ratings.csv", "stimuli.csv"):
        assert (again.root / name).read_bytes() == (study / name).read_bytes()
    for subject in ("s01", "s03"):
        a = mne.io.read_raw_edf(study / "eeg" / f"{subject}.edf", preload=True, verbose="error").get_data()
        b = mne.io.read_raw_edf(again.eeg_dir / f"{subject}.edf", preload=True, verbose="error").get_data()
        np.testing.assert_array_equal(a, b)
    for clip in ("clip01", "clip05"):
        fa, aa, _ = decode(study / "stimuli" / f"{clip}.mp4")
        fb, ab, _ = decode(again.stimuli_dir / f"{clip}.mp4")
        np.testing.assert_array_equal(fa, fb)
        assert (aa is None) == (ab is None)
        if aa is not None:
            np.testing.assert_array_equal(aa, ab)
    other = design_study(SynthConfig(subjects=4, stimuli=8, seed=4))
    same = design_study(CONFIG)
    assert not np.array_equal(other.subjects[0].ratings, same.subjects[0].ratings)
    # Changing the video size leaves the EEG and ratings untouched (independent random streams).
    resized = design_study(SynthConfig(subjects=4, stimuli=8, duration=10.0, video_size=48, fps=5, seed=3))
    np.testing.assert_array_equal(resized.subjects[2].ratings, same.subjects[2].ratings)


def test_ratings_mostly_follow_the_balanced_quadrants():
    design = design_study(SynthConfig(subjects=32, stimuli=40, seed=0))
    counts = {q: sum(s.quadrant == q for s in design.stimuli) for q in QUADRANTS}
    assert counts == {q: 10 for q in QUADRANTS}
    agree_v, agree_a, agree_q, n = 0, 0, 0, 0
    for subject in design.subjects:
        for k, index in enumerate(subject.order):
            quadrant = design.stimuli[index].quadrant
            high_v, high_a = subject.ratings[k, 0] > 5, subject.ratings[k, 1] > 5
            agree_v += high_v == (quadrant[0] == "H")
            agree_a += high_a == (quadrant[2] == "H")
            agree_q += (high_v == (quadrant[0] == "H")) and (high_a == (quadrant[2] == "H"))
            n += 1
    # Mostly, not always: labels follow the clip 85-95 % per axis, ~75-90 % per quadrant.
    assert 0.85 < agree_v / n < 0.97 and 0.85 < agree_a / n < 0.97
    assert 0.7 < agree_q / n < 0.93


def test_planted_structure_per_modality(study):
    design = {d["stimulus"]: d for d in read_csv(study / "stimuli.csv")}
    names = sorted(design)
    valence = np.array([float(design[s]["valence"]) for s in names])
    arousal = np.array([float(design[s]["arousal"]) for s in names])

    # Video: warm colour (red minus blue) tracks valence, not arousal.
    warmth = []
    loudness, with_audio = [], []
    for s in names:
        frames, audio, _ = decode(study / "stimuli" / f"{s}.mp4")
        warmth.append(frames[..., 0].mean() - frames[..., 2].mean())
        if audio is not None:
            with_audio.append(names.index(s))
            segments = [dbfs(audio[k * 32000 : k * 32000 + 64000]) for k in range(4)]
            loudness.append(np.median(segments))
            quiet = [k for k, db in enumerate(segments) if db < -50]
            if design[s]["silent_from"]:
                start = float(design[s]["silent_from"]) + 0.25
                assert quiet == [int(start // 2)], (s, segments)  # one whole 4 s segment under the gate
            else:
                assert quiet == [], (s, segments)
    high_v, high_a = valence > 5, arousal > 5
    assert separates(warmth, high_v) and not separates(warmth, high_a)
    # Audio: loudness tracks arousal, not valence.
    assert separates(loudness, high_a[with_audio]) and not separates(loudness, high_v[with_audio])
    assert any(design[s]["silent_from"] for s in names)

    # EEG: within-subject alpha (and its asymmetry) tracks rated valence, beta+gamma rated arousal.
    trials = [t for u in discover("manifest", study, SourceOptions()) for t in u.load()]
    ch = trials[0].ch_names
    pairs = [
        (ch.index(a), ch.index(b)) for a, b in (("AF3", "AF4"), ("F3", "F4"), ("F7", "F8"), ("FC5", "FC6"))
    ]
    features, rated = [], []
    for subject in sorted({t.subject for t in trials}):
        own = [t for t in trials if t.subject == subject]
        rows = []
        for t in own:
            f, p = welch(t.eeg, fs=t.sfreq, nperseg=256)
            alpha = np.log(p[:, (f >= 8) & (f < 13)].mean(axis=1))
            fast = np.log(p[:, (f >= 13) & (f < 45)].mean(axis=1))
            rows.append([np.mean([alpha[r] - alpha[left] for left, r in pairs]), fast.mean(), alpha.mean()])
            rated.append([t.ratings["valence"], t.ratings["arousal"]])
        rows = np.array(rows)
        features.append((rows - rows.mean(axis=0)) / rows.std(axis=0))
    features, rated = np.vstack(features), np.array(rated)
    assert spearmanr(features[:, 0], rated[:, 0]).statistic > 0.3  # measured 0.39
    assert spearmanr(features[:, 2], rated[:, 0]).statistic > 0.3  # overall alpha, measured 0.55
    assert spearmanr(features[:, 1], rated[:, 1]).statistic > 0.3  # measured 0.64
    assert abs(spearmanr(features[:, 1], rated[:, 0]).statistic) < 0.3  # measured -0.12
