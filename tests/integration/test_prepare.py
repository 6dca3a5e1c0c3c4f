"""``mercl prepare`` end to end on real small files: DEAP pickles, EDF + manifest, mp4 clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders import CHANNELS, SFREQ, TRIAL_S, make_manifest_raw, small_config

from mercl.cli import main as cli_main
from mercl.data import shards
from mercl.data.prepare import n_segments, prepare
from mercl.data.summary import summarize
from mercl.data.synth_sources import (
    deap_content,
    write_mp4,
    write_pickle,
    write_seed_labels,
    write_seed_session,
)
from mercl.errors import InputFileError, MerclError

# ---------------------------------------------------------------- test data (real-format files)


def write_short_deap(path: Path, seconds: float, nan_trial: int | None = None, seed: int = 0) -> Path:
    """A DEAP ``sNN.dat`` with trials of ``seconds`` after the 3 s baseline (optionally one NaN)."""
    data = deap_content(seed)["data"][:, :, : 384 + int(seconds * 128)].copy()
    if nan_trial is not None:
        data[nan_trial, 3, 500] = np.nan
    return write_pickle(path, {**deap_content(seed), "data": data}, protocol=4)


@pytest.fixture(scope="module")
def manifest_raw(tmp_path_factory) -> Path:
    return make_manifest_raw(tmp_path_factory.mktemp("manifest"))


@pytest.fixture(scope="module")
def built(manifest_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return prepare(manifest_raw, "manifest", out, config=small_config(), workers=1, progress=False)


# ---------------------------------------------------------------- tests


def test_segment_count_formula():
    assert n_segments(60.0, 0.0, 4.0, 2.0) == 29
    assert n_segments(12.0, 0.0, 4.0, 2.0) == 5
    assert n_segments(12.0, 1.0, 4.0, 2.0) == 4
    assert n_segments(3.9, 0.0, 4.0, 2.0) == 0
    assert n_segments(4.0, 0.0, 4.0, 2.0) == 1


def test_manifest_dataset_layout_rows_and_counts(built):
    root, manifest = built.dataset_dir, built.manifest
    assert root.name == manifest["dataset_id"] and root.name.startswith("manifest-")
    assert len(manifest["config_hash"]) == 12
    assert sorted(manifest["files"]) == [
        "eeg/s01.parquet",
        "eeg/s02.parquet",
        "stimuli/A.parquet",
        "stimuli/B.parquet",
    ]
    for rel, digest in manifest["files"].items():
        assert shards.sha256_file(root / rel) == digest
    counts = manifest["counts"]
    assert counts["segments"] == 30 and counts["subjects"] == 2 and counts["trials"] == 6
    assert counts["segments_per_subject"] == {"s01": 15, "s02": 15}
    assert set(counts["segments_per_trial"].values()) == {5}
    # B has no audio stream, C has no clip
    assert counts["missing"]["audio_segments"] == 20
    assert counts["missing"]["video_segments"] == 10
    assert counts["missing"]["stimuli_without_clip"] == ["C"]
    assert counts["missing"]["trials_without_clip"] == 2
    assert counts["missing"]["clips_without_audio"] == ["B"]
    assert sum(counts["classes"]["valence2"].values()) == 30
    # valence 2,5,8 (s01) and 3,6,9 (s02): 5.0 is low -> lows: 2,5,3
    assert counts["classes"]["valence2"] == {"low valence": 15, "high valence": 15}
    assert manifest["shapes"]["eeg"] == [7, 4, 5]
    assert manifest["shapes"]["audio"] == [396, 20]
    assert manifest["shapes"]["video"] == [4, 3, 32, 32]
    assert manifest["ch_names"] == CHANNELS and manifest["sfreq"] == SFREQ
    assert not list(root.rglob("*.tmp-*"))


def test_eeg_shards_read_directly_with_pandas(built):
    root = built.dataset_dir
    df = pd.read_parquet(root / "eeg" / "s01.parquet")
    assert list(df.columns[:6]) == ["subject", "trial", "segment", "stimulus", "start_s", "lag_s"]
    assert {"valence", "arousal", "dominance", "liking", "eeg"} <= set(df.columns)
    assert len(df) == 15
    assert df["segment"].tolist() == [0, 1, 2, 3, 4] * 3
    assert df["start_s"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0] * 3
    schema = pq.read_schema(root / "eeg" / "s01.parquet")
    assert json.loads(schema.metadata[b"shapes"]) == {"eeg": [7, 4, 5]}
    eeg_type = schema.field("eeg").type
    assert pa.types.is_fixed_size_list(eeg_type) and eeg_type.list_size == 140
    assert eeg_type.value_type == pa.float32()
    eeg = np.stack(df["eeg"].to_numpy()).reshape(15, 7, 4, 5)
    assert np.isfinite(eeg).all()
    # channel k carries a (6 + 3k) Hz sine: Fp1 (6 Hz) is strongest in theta, Pz (15 Hz) in beta
    assert eeg[:, :, 0, :].mean(axis=(0, 1)).argmax() == 1
    assert eeg[:, :, 3, :].mean(axis=(0, 1)).argmax() == 3


def test_stimulus_rows_stored_once_per_stimulus_segment(built):
    root = built.dataset_dir
    stim = pd.read_parquet(root / "stimuli")
    assert len(stim) == 10  # A and B x 5 segments, though two subjects watched each
    assert not stim.duplicated(["stimulus", "segment"]).any()
    a = stim[stim["stimulus"] == "A"]
    b = stim[stim["stimulus"] == "B"]
    assert a["audio_present"].all() and not b["audio_present"].any()
    assert a["video_present"].all() and b["video_present"].all()
    assert (a["audio_energy"] > -20).all() and (b["audio_energy"] == -120).all()
    assert np.all(np.stack(b["audio"].to_numpy()) == 0)
    schema = pq.read_schema(root / "stimuli" / "A.parquet")
    assert json.loads(schema.metadata[b"shapes"]) == {"audio": [396, 20], "video": [4, 3, 32, 32]}
    video = np.stack(a["video"].to_numpy()).reshape(5, 4, 3, 32, 32)
    assert video.dtype == np.uint8 and video.max() > 0
    # frames change over time (red channel ramps with the frame number)
    assert video[0, 0, 0].mean() != video[4, 3, 0].mean()


def test_rerun_resumes_and_config_change_gives_a_new_dataset(manifest_raw, tmp_path):
    first = prepare(manifest_raw, "manifest", tmp_path, config=small_config(), workers=1, progress=False)
    assert len(first.built) == 4 and first.skipped == []
    again = prepare(manifest_raw, "manifest", tmp_path, config=small_config(), workers=1, progress=False)
    assert again.built == [] and len(again.skipped) == 4
    assert again.dataset_dir == first.dataset_dir
    assert again.manifest["files"] == first.manifest["files"]

    (first.dataset_dir / "eeg" / "s02.parquet").unlink()
    (first.dataset_dir / "stimuli" / "B.parquet").write_bytes(b"not what was written")
    third = prepare(manifest_raw, "manifest", tmp_path, config=small_config(), workers=1, progress=False)
    assert sorted(third.built) == ["eeg/s02.parquet", "stimuli/B.parquet"]
    assert third.manifest["files"] == first.manifest["files"]  # deterministic features

    changed = prepare(
        manifest_raw, "manifest", tmp_path, config=small_config(overlap=0.75), workers=1, progress=False
    )
    assert changed.dataset_dir != first.dataset_dir
    assert changed.manifest["counts"]["segments"] == 2 * 3 * 9
    assert len(changed.built) == 4


def test_short_clip_is_an_error_and_leaves_no_manifest(tmp_path):
    raw = make_manifest_raw(tmp_path, subjects=("s01",), short_clip="A")
    with pytest.raises(InputFileError) as info:
        prepare(raw, "manifest", tmp_path / "out", config=small_config(), workers=2, progress=False)
    message = str(info.value)
    assert "A.mp4" in message and "shorter than its EEG" in message and "\n" not in message
    (dataset,) = (tmp_path / "out").iterdir()
    assert not (dataset / "manifest.json").exists()
    assert (dataset / "eeg" / "s01.parquet").is_file()  # finished work is kept for the resume
    with pytest.raises(InputFileError, match="incomplete dataset: no manifest.json"):
        summarize(dataset)
    # fix the clip: the resume builds only what is missing (B finished beside the failing A)
    write_mp4(raw / "stimuli" / "A.mp4", TRIAL_S)
    result = prepare(raw, "manifest", tmp_path / "out", config=small_config(), workers=1, progress=False)
    assert result.dataset_dir == dataset and result.built == ["stimuli/A.parquet"]
    assert sorted(result.skipped) == ["eeg/s01.parquet", "stimuli/B.parquet"]
    assert (dataset / "manifest.json").is_file()


def test_deap_sixty_second_trials_give_29_segments(tmp_path):
    raw = tmp_path / "deap" / "data_preprocessed_python"
    write_pickle(raw / "s01.dat", deap_content(), protocol=4)
    result = prepare(tmp_path / "deap", "deap", tmp_path / "out", workers=1, progress=False)
    counts = result.manifest["counts"]
    assert counts["segments"] == 40 * 29
    assert set(counts["segments_per_trial"].values()) == {29}
    assert counts["missing"]["trials_without_clip"] == 40 and counts["missing"]["video_segments"] == 40 * 29
    assert result.manifest["shapes"]["eeg"] == [7, 32, 5]
    assert "quadrant4" in result.manifest["label_schemes"]
    df = pd.read_parquet(result.dataset_dir / "eeg" / "s01.parquet", columns=["trial", "segment", "start_s"])
    assert df.groupby("trial").size().eq(29).all() and df["start_s"].max() == 56.0


def test_seed_labels_and_a_stimuli_folder(tmp_path):
    raw = tmp_path / "seed" / "Preprocessed_EEG"
    write_seed_session(raw / "1_20131027.mat", n_samples=1200)  # 6 s at 200 Hz -> 2 segments
    write_seed_labels(raw)
    write_mp4(tmp_path / "clips" / "03.mp4", 6.0)
    config = small_config(**{"source.channels": ["FP1", "FZ", "CZ", "PZ", "OZ"]})
    result = prepare(
        tmp_path / "seed", "seed", tmp_path / "out", stimuli=tmp_path / "clips", config=config, workers=1
    )
    counts = result.manifest["counts"]
    assert counts["segments"] == 30
    assert counts["classes"] == {"seed3": {"negative": 10, "neutral": 10, "positive": 10}}
    assert result.manifest["label_schemes"] == ["seed3"] and result.manifest["label_columns"] == ["label"]
    assert counts["missing"]["video_segments"] == 28 and counts["missing"]["trials_without_clip"] == 14
    assert list(result.manifest["stimulus_files"]) == ["03"]
    df = pd.read_parquet(result.dataset_dir / "eeg" / "1.parquet")
    assert df["label"].dtype == np.int32 and "valence" not in df.columns
    assert result.manifest["shapes"]["eeg"] == [7, 5, 5]


def test_worker_errors_surface_as_one_line_and_leave_no_manifest(tmp_path):
    raw = tmp_path / "deap"
    write_short_deap(raw / "s01.dat", 8.0)
    write_short_deap(raw / "s02.dat", 8.0, nan_trial=5, seed=1)
    with pytest.raises(InputFileError) as info:
        prepare(raw, "deap", tmp_path / "out", workers=2, progress=False)
    assert str(info.value).startswith(str(raw / "s02.dat")) and "trial 5" in str(info.value)
    assert info.value.path == raw / "s02.dat"
    assert not list((tmp_path / "out").rglob("manifest.json"))


def test_bad_inputs_are_one_line_errors(tmp_path, manifest_raw):
    with pytest.raises(InputFileError, match="no such file or directory"):
        prepare(tmp_path / "missing", "deap", tmp_path / "out", progress=False)
    with pytest.raises(InputFileError, match="stimuli directory does not exist"):
        prepare(manifest_raw, "manifest", tmp_path / "out", stimuli=tmp_path / "nope", progress=False)
    with pytest.raises(MerclError, match="unknown source"):
        prepare(manifest_raw, "eeglab", tmp_path / "out", progress=False)
    with pytest.raises(MerclError, match="config field 'overlap'"):
        small_config(overlap=1.0)


def test_cli_prepare_and_summary(manifest_raw, tmp_path, capsys):
    config = tmp_path / "prepare.yaml"
    config.write_text("segment_s: 4.0\nvideo:\n  size: 48\n")
    code = cli_main(
        [
            "prepare", str(manifest_raw), "--source", "manifest", "-o", str(tmp_path / "out"),
            "--config", str(config), "--video-size", "32", "--workers", "1", "--no-progress",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    (dataset,) = (tmp_path / "out").iterdir()
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["config"]["video"]["size"] == 32  # the flag overrides the YAML
    for text in (
        "s01",
        "s02",
        "valence2",
        "audio missing in 20 of 30 segments",
        "2 trials without a clip",
        str(dataset / "eeg"),
    ):
        assert text in out
    assert cli_main(["summary", str(dataset)]) == 0
    assert "segments per subject" in capsys.readouterr().out
    assert cli_main(["summary", str(tmp_path / "out")]) == 0  # an output dir with one dataset

    assert cli_main(["prepare", str(tmp_path / "absent"), "--source", "deap", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mercl: error: ") and "absent" in err and "\n" not in err
    (dataset / "manifest.json").unlink()
    assert cli_main(["summary", str(dataset)]) == 2
    assert "incomplete dataset: no manifest.json, re-run mercl prepare" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow  # a local Ray start + one Ray Data read: ~70 s on the shared 2-core machine
def test_ray_data_reads_the_shards(built):
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        eeg = ray.data.read_parquet(str(built.dataset_dir / "eeg"))
        assert eeg.count() == 30
        row = eeg.take(1)[0]
        assert len(row["eeg"]) == 7 * 4 * 5
        stim = ray.data.read_parquet(str(built.dataset_dir / "stimuli"))
        assert stim.count() == 10
    finally:
        if started:
            ray.shutdown()


def test_two_names_for_one_shard_file_are_refused():
    """Shard files are named after units and clips made file-safe; a collision (or a name given
    twice) would make two of them overwrite one file."""
    from mercl.data.prepare import _shard_names

    assert _shard_names(["s01", "s02"], "eeg", "load units") == {"s01": "eeg/s01.parquet", "s02": "eeg/s02.parquet"}
    for names in (["clip 1", "clip_1"], ["s01", "s01"]):
        with pytest.raises(MerclError, match="two stimuli map to the same shard"):
            _shard_names(names, "stimuli", "stimuli")
