"""Recording sources on real files: DEAP pickles, SEED .mat, EDF/BDF/FIF manifests, pyedflib's EEG."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import yaml

from mercl.data.sources import SourceOptions, discover
from mercl.data.synth_sources import (
    DEAP_CHANNELS,
    SEED_CHANNELS,
    deap_content,
    pyedflib_test_edf,
    seed_trial,
    sine_eeg,
    write_deap,
    write_pickle,
    write_recording,
    write_seed_labels,
    write_seed_session,
)
from mercl.errors import InputFileError

SEED_LABELS = [1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1]


def load_all(source: str, raw: Path, **options) -> list:
    units = discover(source, raw, SourceOptions(**options))
    return [trial for unit in units for trial in unit.load()]


def expect_error(path: Path, match: str, source: str, raw: Path, **options) -> InputFileError:
    """Discovering + loading must fail with a one-line InputFileError naming ``path``."""
    with pytest.raises(InputFileError, match=match) as info:
        load_all(source, raw, **options)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    return info.value


# ---------------------------------------------------------------- DEAP


@pytest.fixture(scope="module")
def deap_raw(tmp_path_factory) -> Path:
    """RAW/data_preprocessed_python with s01 (float32) and s02 (float64, the real dtype)."""
    raw = tmp_path_factory.mktemp("deap")
    folder = raw / "data_preprocessed_python"
    write_deap(folder / "s01.dat", seed=1)
    write_deap(folder / "s02.dat", seed=2, dtype=np.float64)
    (folder / "readme.txt").write_text("not a subject file")
    return raw


@pytest.fixture(scope="module")
def deap_s01(deap_raw) -> list:
    return load_all("deap", deap_raw, lag=0.25)


def test_deap_trials_real_layout(deap_raw, deap_s01):
    units = discover("deap", deap_raw, SourceOptions())
    assert [u.name for u in units] == ["s01", "s02"]
    assert [u.name for u in discover("deap", deap_raw / "data_preprocessed_python", SourceOptions())] == [
        "s01",
        "s02",
    ]
    assert pickle.loads(pickle.dumps(units[0])).name == "s01"  # units travel to worker processes

    trials = deap_s01
    assert len(trials) == 80
    labels = deap_content(seed=1)["labels"]
    for t, trial in enumerate(trials[:40]):
        assert (trial.subject, trial.trial, trial.stimulus) == ("s01", t, f"{t + 1:02d}")
        assert trial.eeg.shape == (32, 8064 - 384) and trial.eeg.dtype == np.float64
        assert trial.sfreq == 128.0 and trial.duration == 60.0
        assert trial.ch_names == DEAP_CHANNELS
        assert list(trial.ratings) == ["valence", "arousal", "dominance", "liking"]
        np.testing.assert_allclose(list(trial.ratings.values()), labels[t])
        assert trial.label is None and trial.lag == 0.25
    # Baseline removed, microvolts -> volts: channel c of trial t sits at (100 + t + c) uV.
    np.testing.assert_allclose(trials[7].eeg.mean(axis=1), (100 + 7 + np.arange(32)) * 1e-6, atol=0.2e-6)
    assert trials[40].subject == "s02" and trials[40].source_file.name == "s02.dat"


def test_deap_baseline_correct_subtracts_baseline_mean(deap_raw):
    trials = load_all("deap", deap_raw / "data_preprocessed_python" / "s01.dat", baseline="correct")
    assert trials[7].eeg.shape == (32, 7680)
    # The baseline sat at (t + c) uV: after correction every channel sits near 100 uV.
    np.testing.assert_allclose(trials[7].eeg.mean(axis=1), np.full(32, 100e-6), atol=0.6e-6)


def test_deap_picks_and_resample(deap_raw, deap_s01):
    trials = load_all("deap", deap_raw / "data_preprocessed_python" / "s01.dat", channels=["Cz", "fp1"])
    assert trials[0].ch_names == ["Cz", "Fp1"]
    np.testing.assert_array_equal(trials[3].eeg, deap_s01[3].eeg[[DEAP_CHANNELS.index("Cz"), 0]])

    resampled = load_all("deap", deap_raw / "data_preprocessed_python" / "s01.dat", resample=64.0)
    assert resampled[0].sfreq == 64.0 and resampled[0].eeg.shape == (32, 3840)
    np.testing.assert_allclose(resampled[5].eeg.mean(axis=1), deap_s01[5].eeg.mean(axis=1), atol=1e-8)


def test_deap_missing_inputs(tmp_path):
    expect_error(tmp_path / "nowhere", "no such file", "deap", tmp_path / "nowhere")
    (tmp_path / "data_preprocessed_python").mkdir()
    (tmp_path / "data_preprocessed_python" / "notes.txt").write_text("x")
    expect_error(tmp_path, "no DEAP subject files", "deap", tmp_path)


def test_deap_truncated_pickle(tmp_path):
    path = write_deap(tmp_path / "s03.dat", seed=3)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    expect_error(path, "truncated or not a DEAP pickle", "deap", tmp_path)


@pytest.mark.parametrize(
    "content, match",
    [
        (
            {"data": np.zeros((40, 40, 8064), np.float32), "label": np.ones((40, 4))},
            "keys 'data' and 'labels'",
        ),
        ([1, 2, 3], "expected a dict"),
        ({"data": np.zeros((40, 20, 8064), np.float32), "labels": np.ones((40, 4))}, r"\(40, 20, 8064\)"),
        ({"data": np.zeros((39, 40, 8064), np.float32), "labels": np.ones((39, 4))}, r"\(39, 40, 8064\)"),
        (
            {"data": np.zeros((40, 40, 8064), np.float32), "labels": np.ones((40, 3))},
            r"'labels' must be .*\(40, 3\)",
        ),
    ],
)
def test_deap_wrong_keys_or_shapes(tmp_path, content, match):
    path = write_pickle(tmp_path / "s04.dat", content)
    expect_error(path, match, "deap", tmp_path)


def test_deap_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = write_pickle(tmp_path / "s05.dat", {"data": Evil(), "labels": np.ones((40, 4))})
    # the refused name is builtins.print, or Ray's safe_print once a Ray test has patched print
    expect_error(path, r"refused to unpickle \S*print \(a DEAP file holds numpy arrays only\)", "deap", tmp_path)


def test_deap_bad_values(tmp_path):
    content = deap_content(seed=6)
    content["data"][7, 3, 1000] = np.nan
    content["data"][7, 0, 10] = np.inf  # inside the baseline: counted too
    content["data"][9, 3, 1000] = np.nan
    nan_file = write_pickle(tmp_path / "nan" / "s06.dat", content)
    expect_error(nan_file, "trial 7: EEG holds 2 NaN/Inf", "deap", nan_file)

    content = deap_content(seed=6)
    content["labels"][5, 1] = 9.5
    rating_file = write_pickle(tmp_path / "rating" / "s06.dat", content)
    expect_error(rating_file, "trial 5: arousal rating 9.5 is outside 1-9", "deap", rating_file)


def test_deap_channel_problems(deap_raw):
    s01 = deap_raw / "data_preprocessed_python" / "s01.dat"
    expect_error(s01, "channel 'XYZ' not present", "deap", s01, channels=["Fp1", "XYZ"])
    expect_error(
        s01, "1 EEG channel.*fewer than min_channels=4", "deap", s01, channels=["Fp1"], min_channels=4
    )
    expect_error(s01, "32 EEG channel.*min_channels=33", "deap", s01, min_channels=33)


# ---------------------------------------------------------------- SEED


@pytest.fixture(scope="module")
def seed_raw(tmp_path_factory) -> Path:
    """Subject 1: two sessions (the later date written first); subject 10: one session with
    variables eeg1..eeg12 (no prefix, integer order matters); plus files to skip."""
    raw = tmp_path_factory.mktemp("seed")
    folder = raw / "Preprocessed_EEG"
    write_seed_session(folder / "1_20131107.mat", prefix="djc", seed=2)
    write_seed_session(folder / "1_20131027.mat", prefix="djc", seed=1)
    write_seed_session(folder / "10_20131130.mat", clips=range(1, 13), prefix="", seed=3)
    write_seed_labels(folder, [SEED_LABELS])
    (folder / "readme.txt").write_text("skip me")
    write_seed_session(folder / "notes.mat", clips=[1])
    return raw


def test_seed_order_sessions_and_labels(seed_raw):
    units = discover("seed", seed_raw, SourceOptions())
    assert [u.name for u in units] == ["1", "10"]
    assert [p.name for p in units[0].sessions] == ["1_20131027.mat", "1_20131107.mat"]
    assert pickle.loads(pickle.dumps(units[1])).name == "10"

    subject1 = units[0].load()
    assert [t.trial for t in subject1] == list(range(30))
    assert [t.stimulus for t in subject1] == [f"{n:02d}" for n in range(1, 16)] * 2
    assert [t.label for t in subject1] == SEED_LABELS * 2
    first = subject1[0]
    assert first.eeg.shape == (62, 400) and first.sfreq == 200.0 and first.ch_names == SEED_CHANNELS
    assert first.ratings == {} and first.subject == "1"
    # Channel 0 holds the clip number in microvolts; the session of 27 Oct ranks first.
    np.testing.assert_allclose([t.eeg[0, 0] for t in subject1[:15]], np.arange(1, 16) * 1e-6)
    assert subject1[0].source_file.name == "1_20131027.mat"
    assert subject1[15].source_file.name == "1_20131107.mat"
    assert not np.allclose(subject1[0].eeg[1:], subject1[15].eeg[1:])

    subject10 = units[1].load()
    # eeg1..eeg12 by integer: eeg10 after eeg9, not after eeg1.
    np.testing.assert_allclose([t.eeg[0, 0] for t in subject10], np.arange(1, 13) * 1e-6)
    assert [t.trial for t in subject10] == list(range(12))
    assert [t.label for t in subject10] == SEED_LABELS[:12]

    # The folder itself is accepted too.
    assert len(discover("seed", seed_raw / "Preprocessed_EEG", SourceOptions())) == 2


def test_seed_picks_and_resample(seed_raw):
    trials = load_all("seed", seed_raw, channels=["Fp1", "CZ", "CB2"], resample=100.0)
    assert trials[0].ch_names == ["FP1", "CZ", "CB2"]
    assert trials[0].sfreq == 100.0 and trials[0].eeg.shape == (3, 200)
    np.testing.assert_allclose(trials[4].eeg[0], 5e-6, atol=1e-9)  # a constant survives resampling


def test_seed_missing_inputs(tmp_path):
    expect_error(tmp_path / "absent", "no such directory", "seed", tmp_path / "absent")
    write_seed_labels(tmp_path)
    expect_error(tmp_path, "no SEED session files", "seed", tmp_path)
    other = tmp_path / "no_labels"
    write_seed_session(other / "3_20140101.mat")
    expect_error(other / "label.mat", "no such file", "seed", other)


def test_seed_truncated_and_wrong_files(tmp_path):
    folder = tmp_path / "truncated"
    session = write_seed_session(folder / "4_20140101.mat")
    write_seed_labels(folder)
    session.write_bytes(session.read_bytes()[:3000])
    expect_error(session, "truncated or not a MATLAB file", "seed", folder)

    folder = tmp_path / "shape"
    session = folder / "5_20140101.mat"
    folder.mkdir()
    scipy.io.savemat(str(session), {"ab_eeg1": np.zeros((61, 100))})
    write_seed_labels(folder)
    expect_error(session, r"'ab_eeg1' must be \(62, samples\)", "seed", folder)

    folder = tmp_path / "nokeys"
    session = folder / "6_20140101.mat"
    folder.mkdir()
    scipy.io.savemat(str(session), {"data": np.zeros((62, 100))})
    write_seed_labels(folder)
    expect_error(session, "no trial variables", "seed", folder)


def test_seed_bad_labels_and_values(tmp_path):
    folder = tmp_path / "labels"
    write_seed_session(folder / "7_20140101.mat")
    write_seed_labels(folder, [[2] * 15])
    expect_error(folder / "label.mat", "must be -1, 0 or 1", "seed", folder)
    write_seed_labels(folder, [[1] * 14])
    expect_error(folder / "label.mat", r"must hold 15 numbers", "seed", folder)

    folder = tmp_path / "nan"
    bad = seed_trial(3)
    bad[5, 7] = np.nan
    folder.mkdir()
    scipy.io.savemat(str(folder / "8_20140101.mat"), {"x_eeg1": seed_trial(1), "x_eeg3": bad})
    write_seed_labels(folder)
    expect_error(folder / "8_20140101.mat", r"trial 2 \(clip 3\): EEG holds 1 NaN", "seed", folder)


def test_seed_picked_channel_missing(seed_raw):
    error = expect_error(
        seed_raw / "Preprocessed_EEG" / "1_20131027.mat",
        "channel 'Fp9' not present",
        "seed",
        seed_raw,
        channels=["Fp9"],
    )
    assert "FP1" in str(error)


# ---------------------------------------------------------------- manifest

SFREQ = 128.0
NAMES4 = ["Fp1", "Fz", "Cz", "Pz"]


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory) -> Path:
    """EDF, BDF (with a Status stim channel) and FIF recordings of 30 s of per-channel sines."""
    root = tmp_path_factory.mktemp("manifest")
    eeg = sine_eeg([5, 7, 11, 13], 30.0, SFREQ)
    write_recording(root / "eeg" / "a.edf", eeg, SFREQ, NAMES4)
    status = np.zeros((1, eeg.shape[1]))
    write_recording(
        root / "eeg" / "b.bdf", np.vstack([eeg, status]), SFREQ, [*NAMES4, "Status"], ["eeg"] * 4 + ["stim"]
    )
    write_recording(root / "eeg" / "c_raw.fif", eeg, SFREQ, NAMES4)
    return root


def write_csv(path: Path, rows: list[dict]) -> Path:
    import csv

    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def base_rows() -> list[dict]:
    rows = []
    for k, (subject, eeg) in enumerate(
        [("s01", "eeg/a.edf"), ("s02", "eeg/b.bdf"), ("s03", "eeg/c_raw.fif")]
    ):
        for trial in range(2):
            rows.append(
                {
                    "subject": subject,
                    "trial": trial,
                    "stimulus": f"clip{trial + 1}",
                    "eeg": eeg,
                    "onset": 2.0 + 12.0 * trial,
                    "duration": 10.0,
                    "valence": 2.0 + trial + k,
                    "arousal": 7.5,
                    "label": trial,
                    "lag": "" if trial == 0 else 0.3,
                }
            )
    return rows


def test_manifest_edf_bdf_fif(manifest_dir):
    manifest = write_csv(manifest_dir / "manifest.csv", base_rows())
    units = discover("manifest", manifest_dir, SourceOptions(lag=0.1))
    assert [u.name for u in units] == ["s01", "s02", "s03"]  # one unit per EEG file
    assert pickle.loads(pickle.dumps(units[1])).name == "s02"
    assert units[0].manifest == manifest
    trials = [t for u in units for t in u.load()]
    assert len(trials) == 6
    expected = sine_eeg([5, 7, 11, 13], 30.0, SFREQ)
    for trial in trials:
        assert trial.ch_names == NAMES4  # the BDF's Status channel is not EEG
        assert trial.eeg.shape == (4, 1280) and trial.eeg.dtype == np.float64 and trial.sfreq == SFREQ
        start = int((2.0 + 12.0 * trial.trial) * SFREQ)
        np.testing.assert_allclose(trial.eeg, expected[:, start : start + 1280], atol=0.05e-6)
        assert trial.stimulus == f"clip{trial.trial + 1}" and trial.label == trial.trial
        assert trial.lag == (0.1 if trial.trial == 0 else 0.3)  # options.lag is the default
        assert set(trial.ratings) == {"valence", "arousal"}
    assert trials[3].ratings == {"valence": 4.0, "arousal": 7.5}
    assert trials[0].source_file == manifest_dir / "eeg" / "a.edf"


def test_manifest_yaml_forms_and_whole_file(manifest_dir, tmp_path):
    rows = [
        {
            "subject": "x",
            "trial": 0,
            "stimulus": "A",
            "eeg": str(manifest_dir / "eeg" / "a.edf"),
            "valence": 3,
        },
        {
            "subject": "x",
            "trial": 1,
            "stimulus": "B",
            "eeg": str(manifest_dir / "eeg" / "c_raw.fif"),
            "valence": 6,
        },
    ]
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({"rows": rows}))
    (tmp_path / "manifest.yml").write_text(yaml.safe_dump(rows))
    for raw in (tmp_path / "study.yaml", tmp_path):
        units = discover("manifest", raw, SourceOptions())
        assert [u.name for u in units] == ["x-a", "x-c_raw"]  # a subject over two files
        trials = [t for u in units for t in u.load()]
        assert [t.eeg.shape for t in trials] == [(4, 3840), (4, 3840)]  # no onset/duration: whole file
        assert [t.ratings for t in trials] == [{"valence": 3.0}, {"valence": 6.0}]
        assert trials[0].label is None and trials[0].lag == 0.0


def test_manifest_sampling_rates_and_resample(manifest_dir, tmp_path):
    write_recording(tmp_path / "fast.edf", sine_eeg([5, 7, 11, 13], 30.0, 256.0), 256.0, NAMES4)
    rows = [
        {"subject": "a", "trial": 0, "stimulus": "A", "eeg": str(manifest_dir / "eeg" / "a.edf"), "label": 1},
        {
            "subject": "b",
            "trial": 0,
            "stimulus": "A",
            "eeg": "fast.edf",
            "onset": 1.5,
            "duration": 20,
            "label": 0,
        },
    ]
    manifest = write_csv(tmp_path / "m.csv", rows)
    expect_error(
        tmp_path / "fast.edf", r"sampling rate 256 Hz differs from 128 Hz of a.edf", "manifest", manifest
    )
    trials = load_all("manifest", manifest, resample=100.0)
    assert [t.sfreq for t in trials] == [100.0, 100.0]
    assert [t.eeg.shape for t in trials] == [(4, 3000), (4, 2000)]
    # The 5 Hz sine on Fp1 survives resampling (compare away from the file edges).
    t = 1.5 + np.arange(2000) / 100.0
    np.testing.assert_allclose(
        trials[1].eeg[0, 100:1900], 20e-6 * np.sin(2 * np.pi * 5 * t)[100:1900], atol=0.5e-6
    )


def test_manifest_channel_picks(manifest_dir, tmp_path):
    manifest = write_csv(
        tmp_path / "m.csv", [dict(r, eeg=str(manifest_dir / r["eeg"])) for r in base_rows()[:2]]
    )
    trials = load_all("manifest", manifest, channels=["Pz", "fp1"])
    assert trials[0].ch_names == ["Pz", "Fp1"]
    expected = sine_eeg([13, 5], 30.0, SFREQ)[:, 256 : 256 + 1280]
    np.testing.assert_allclose(trials[0].eeg, expected, atol=0.05e-6)
    edf = manifest_dir / "eeg" / "a.edf"
    expect_error(edf, "channel 'O1' not present", "manifest", manifest, channels=["Pz", "O1"])
    expect_error(edf, "4 EEG channel.*min_channels=5", "manifest", manifest, min_channels=5)


def test_manifest_pyedflib_real_eeg(tmp_path):
    edf = pyedflib_test_edf()
    if edf is None:
        pytest.skip("pyedflib (with its tests/data/test_subsecond.edf) is not installed")
    rows = [
        {
            "subject": "real",
            "trial": k,
            "stimulus": f"s{k}",
            "eeg": str(edf),
            "onset": 100.0 * k,
            "duration": 60,
            "arousal": 4 + k,
            "lag": 0.5,
        }
        for k in range(3)
    ]
    manifest = write_csv(tmp_path / "manifest.csv", rows)
    trials = load_all("manifest", tmp_path)
    assert [t.eeg.shape for t in trials] == [(1, 7680)] * 3
    assert trials[0].ch_names == ["Fp1"] and trials[0].sfreq == 128.0
    assert [t.lag for t in trials] == [0.5] * 3
    for trial in trials:  # real scalp EEG in volts: microvolt scale, not flat, finite
        assert 1e-6 < trial.eeg.std() < 1e-4
    resampled = load_all("manifest", manifest, resample=64.0)
    assert resampled[2].eeg.shape == (1, 3840)
    np.testing.assert_allclose(resampled[2].eeg.std(), trials[2].eeg.std(), rtol=0.2)
    rows[2]["onset"] = 650.0  # 650 + 60 s > 698 s
    write_csv(manifest, rows)
    expect_error(
        edf,
        r"manifest row 3: onset 650 s \+ duration 60 s is beyond the recording \(698 s\)",
        "manifest",
        manifest,
    )


def test_manifest_bad_tables(manifest_dir, tmp_path):
    expect_error(tmp_path / "none", "no such file or directory", "manifest", tmp_path / "none")
    expect_error(tmp_path, "no manifest here", "manifest", tmp_path)

    rows = [dict(r, eeg=str(manifest_dir / r["eeg"])) for r in base_rows()]
    manifest = tmp_path / "m.csv"
    write_csv(manifest, [{k: v for k, v in r.items() if k != "eeg"} for r in rows])
    expect_error(manifest, "missing required column.*eeg", "manifest", manifest)

    write_csv(
        manifest, [{k: v for k, v in r.items() if k not in ("valence", "arousal", "label")} for r in rows]
    )
    expect_error(manifest, "no rating columns", "manifest", manifest)

    bad = [dict(r) for r in rows]
    bad[1]["valence"] = 10
    write_csv(manifest, bad)
    expect_error(manifest, "row 2: valence rating 10.0 is outside 1-9", "manifest", manifest)

    bad = [dict(r) for r in rows]
    bad[2]["trial"] = "two"
    write_csv(manifest, bad)
    expect_error(manifest, "row 3: trial 'two' is not a number", "manifest", manifest)

    bad = [dict(r) for r in rows]
    bad[3]["trial"] = 0
    write_csv(manifest, bad)
    expect_error(manifest, "row 4: subject s02 trial 0 repeats row 3", "manifest", manifest)

    bad = [dict(r) for r in rows]
    bad[4]["eeg"] = "missing/rec.edf"
    write_csv(manifest, bad)
    expect_error(tmp_path / "missing" / "rec.edf", "no such file .*row 5", "manifest", manifest)

    bad = [dict(r) for r in rows]
    bad[1]["duration"] = 29.0  # onset 14 + 29 > 30 s
    write_csv(manifest, bad)
    expect_error(
        manifest_dir / "eeg" / "a.edf", "row 2: onset 14 s \\+ duration 29 s is beyond", "manifest", manifest
    )

    (tmp_path / "broken.yaml").write_text("rows: [subject: 1")
    with pytest.raises(InputFileError, match="not valid YAML"):
        load_all("manifest", tmp_path / "broken.yaml")


def test_manifest_unreadable_and_nan_recordings(manifest_dir, tmp_path):
    garbage = tmp_path / "garbage.edf"
    garbage.write_bytes(b"this is not an EDF header" * 20)
    row = {"subject": "a", "trial": 0, "stimulus": "A", "eeg": "garbage.edf", "valence": 5}
    manifest = write_csv(tmp_path / "m.csv", [row])
    expect_error(garbage, "MNE cannot read it", "manifest", manifest)

    unknown = tmp_path / "rec.xyz"
    unknown.write_bytes(b"\0" * 100)
    write_csv(manifest, [dict(row, eeg="rec.xyz")])
    expect_error(unknown, "MNE cannot read it", "manifest", manifest)

    truncated = tmp_path / "truncated.edf"
    blob = (manifest_dir / "eeg" / "a.edf").read_bytes()
    truncated.write_bytes(blob[: len(blob) // 3])
    write_csv(manifest, [dict(row, eeg="truncated.edf")])
    expect_error(truncated, "truncated", "manifest", manifest)

    eeg = sine_eeg([5, 7, 11, 13], 10.0, SFREQ)
    eeg[2, 300] = np.nan
    write_recording(tmp_path / "nan_raw.fif", eeg, SFREQ, NAMES4)
    write_csv(manifest, [dict(row, eeg="nan_raw.fif", trial=4, subject="s09")])
    expect_error(tmp_path / "nan_raw.fif", "trial 4 of subject s09 .*NaN", "manifest", manifest)


def test_manifest_no_eeg_channels(tmp_path):
    write_recording(tmp_path / "misc_raw.fif", sine_eeg([3, 4], 5.0, SFREQ), SFREQ, ["a", "b"], "misc")
    manifest = write_csv(
        tmp_path / "m.csv", [{"subject": "a", "trial": 0, "stimulus": "A", "eeg": "misc_raw.fif", "label": 1}]
    )
    expect_error(tmp_path / "misc_raw.fif", "no EEG-type channels", "manifest", manifest)
    trials = load_all("manifest", manifest, channels=["b"])  # named channels are taken whatever their type
    assert trials[0].ch_names == ["b"]


def test_unknown_source(tmp_path):
    from mercl.errors import MerclError

    with pytest.raises(MerclError, match="unknown source 'xdf'"):
        discover("xdf", tmp_path, SourceOptions())


@pytest.mark.parametrize("protocol", [4, 5])
def test_deap_raw_folder_without_subfolder(tmp_path, protocol):
    """RAW holding sNN.dat directly; pickles written by today's Python/numpy load too."""
    write_pickle(tmp_path / "s32.dat", deap_content(seed=1), protocol=protocol)
    units = discover("deap", tmp_path, SourceOptions())
    assert [u.name for u in units] == ["s32"]
    trials = units[0].load()
    assert trials[39].stimulus == "40" and trials[39].eeg.shape == (32, 7680)
