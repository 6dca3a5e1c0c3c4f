"""`mercl predict`: train on 6 subjects of the demo study, predict the raw recordings of the other 2.

The study is written by ``mercl synth`` (real EDF + mp4 files); training sees the manifest rows of
s01-s06 only, prediction reads the EDF files of s07-s08 (not the shards). Every mismatch of the new
recordings with the model (channels, rate, a missing clip, a file that is not a model, another
schema version) is a one-line error, exit 2, and leaves no output that looks complete.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest
import torch

from mercl.cli import main as mercl_main
from mercl.data.summary import find_dataset_dir
from mercl.inference.model_file import MODEL_FILE, read_model_file

TRAIN_SUBJECTS = [f"s0{k}" for k in range(1, 7)]
TEST_SUBJECTS = ["s07", "s08"]
OUTPUTS = ("segments.csv", "trials.csv", "metrics.json")


def write_manifest(study: Path, name: str, subjects: list[str], *, eeg: dict[str, str] | None = None,
                   drop: tuple[str, ...] = ()) -> Path:
    """A manifest CSV beside the study's own (so relative EEG paths and stimuli/ resolve) with the
    rows of ``subjects``; ``eeg`` replaces a subject's recording, ``drop`` leaves out columns."""
    with open(study / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["subject"] in subjects]
    for r in rows:
        r["eeg"] = (eeg or {}).get(r["subject"], r["eeg"])
        for column in drop:
            r.pop(column, None)
    path = study / name
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(study dir, model.pt): tiny MERCL trained on the prepared rows of s01-s06 only."""
    base = tmp_path_factory.mktemp("predict")
    study = base / "study"
    assert mercl_main(["synth", str(study), "--subjects", "8", "--stimuli", "8", "--duration", "12",
                       "--video-size", "32", "--fps", "4"]) == 0
    train_csv = write_manifest(study, "train6.csv", TRAIN_SUBJECTS)
    assert mercl_main(["prepare", str(train_csv), "--source", "manifest", "-o", str(base / "shards"),
                       "--video-size", "32", "--workers", "1", "--no-progress"]) == 0
    run = base / "run"
    assert mercl_main(["train", str(find_dataset_dir(base / "shards")), "--label", "quadrant4", "--config", "tiny",
                       "--no-progress", "-o", str(run)]) == 0
    return study, run / MODEL_FILE


@pytest.fixture(scope="module")
def shards(trained) -> Path:
    study, model = trained
    return find_dataset_dir(model.parent.parent / "shards")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _no_outputs(out: Path) -> None:
    assert not any((out / name).exists() for name in OUTPUTS), sorted(p.name for p in out.iterdir())


def test_round_trip_beats_majority_and_equals_the_evaluate_code_path(trained, tmp_path, capsys):
    from mercl.data.reader import load_dataset
    from mercl.inference.model_file import load_trained_model
    from mercl.training.crossval import SplitRun
    from mercl.training.feature_cache import ensure_feature_cache
    from mercl.training.loop import predict_batches

    study, model = trained
    test_csv = write_manifest(study, "test2.csv", TEST_SUBJECTS)
    out = tmp_path / "pred"
    assert mercl_main(["predict", str(model), str(test_csv), "--source", "manifest", "-o", str(out),
                       "--device", "cpu", "--no-progress"]) == 0
    console = capsys.readouterr().out
    assert "trial-level: accuracy" in console and "training majority class" in console
    # new viewers of the clips the model trained on: said beside the score, never hidden
    held_out = "new subjects, 8 of 8 clips seen in training: not a test score where the model met them"
    assert f"[{held_out}]" in console

    segments = pd.read_csv(out / "segments.csv")
    trials = pd.read_csv(out / "trials.csv")
    metrics = json.loads((out / "metrics.json").read_text())
    names = read_model_file(model).class_names
    probs = [f"prob_{n}" for n in names]
    assert list(segments.columns) == ["subject", "trial", "stimulus", "segment", "start_s", "predicted", *probs,
                                      "label"]
    assert sorted(segments["subject"].unique()) == TEST_SUBJECTS and len(trials) == 16
    np.testing.assert_allclose(segments[probs].sum(axis=1), 1.0, atol=1e-5)
    # trial rows: the mean of their segments' probabilities, the most probable class
    mean = segments.groupby(["subject", "trial"])[probs].mean()
    np.testing.assert_allclose(trials.set_index(["subject", "trial"])[probs].loc[mean.index], mean, atol=1e-6)
    assert (trials["predicted"] == np.asarray(names)[trials[probs].to_numpy().argmax(1)]).all()

    acc = (trials["predicted"] == trials["label"]).mean()
    majority = metrics["trials"]["majority_accuracy"]
    print(f"held-out subjects s07-s08, quadrant4, tiny config: trial accuracy {acc:.3f}, majority {majority:.3f}")
    assert metrics["trials"]["accuracy"] == pytest.approx(acc) and metrics["held_out"] == held_out
    assert acc >= majority + 0.2, (acc, majority)  # planted structure: clearly above the majority class

    # the evaluate code path (SplitRun.batches + predict_batches) on a dataset `mercl prepare` wrote
    assert mercl_main(["prepare", str(test_csv), "--source", "manifest", "-o", str(tmp_path / "shards"),
                       "--video-size", "32", "--workers", "1", "--no-progress"]) == 0
    prepared = load_dataset(find_dataset_dir(tmp_path / "shards"))
    net, norm, mf = load_trained_model(model)
    cfg = mf.config
    table = ensure_feature_cache(net, prepared)
    run = SplitRun(None, net, norm, table, mf.shapes, torch.device("cpu"), 0.0)
    rows = np.arange(len(prepared))
    pred = predict_batches(net, run.batches(prepared, rows, mf["label_scheme"], cfg), run.device)
    ref = prepared.rows.iloc[pred["index"]][["subject", "trial", "segment"]].reset_index(drop=True)
    ref[probs] = pred["prob"]
    merged = segments.merge(ref, on=["subject", "trial", "segment"], suffixes=("", "_evaluate"))
    assert len(merged) == len(segments) == len(prepared)
    for p in probs:
        np.testing.assert_allclose(merged[p], merged[f"{p}_evaluate"], atol=1e-5)
    ref_trials = ref.groupby(["subject", "trial"])[probs].mean()
    ref_pred = np.asarray(names)[ref_trials.to_numpy().argmax(1)]
    truth = trials.set_index(["subject", "trial"]).loc[ref_trials.index, "label"].to_numpy()
    assert (ref_pred == truth).mean() == pytest.approx(acc)


def _edf_variant(study: Path, subject: str, name: str, *, sfreq: float | None = None,
                 drop: list[str] | None = None) -> str:
    """A copy of a subject's EDF, resampled and/or with channels dropped; its path relative to the study."""
    raw = mne.io.read_raw_edf(study / "eeg" / f"{subject}.edf", preload=True, verbose="error")
    if drop:
        raw.drop_channels(drop)
    if sfreq is not None:
        raw.resample(sfreq, verbose="error")
    path = study / "eeg" / name
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose="error")
    return f"eeg/{name}"


def test_missing_channels_are_one_line_naming_the_file(trained, tmp_path, capsys):
    study, model = trained
    rel = _edf_variant(study, "s07", "s07-few.edf", drop=["AF3", "F7", "O2"])
    manifest = write_manifest(study, "few.csv", ["s07"], eeg={"s07": rel})
    out = tmp_path / "pred"
    assert mercl_main(["predict", str(model), str(manifest), "--source", "manifest", "-o", str(out),
                       "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "s07-few.edf: 11 EEG channels, the model needs 14: missing AF3, F7, O2" in line, line
    assert not out.exists() or not any((out / n).exists() for n in OUTPUTS)


def test_sampling_rate_is_resampled_when_the_bands_allow_it_else_refused(trained, tmp_path, capsys):
    study, model = trained
    low = write_manifest(study, "low.csv", ["s07"], eeg={"s07": _edf_variant(study, "s07", "s07-64hz.edf",
                                                                              sfreq=64.0)})
    out = tmp_path / "low"
    assert mercl_main(["predict", str(model), str(low), "--source", "manifest", "-o", str(out), "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "s07-64hz.edf: EEG sampled at 64 Hz, the model needs 128 Hz" in line and "45 Hz" in line, line
    assert not out.exists() or not any((out / n).exists() for n in OUTPUTS)

    high = write_manifest(study, "high.csv", ["s07"], eeg={"s07": _edf_variant(study, "s07", "s07-256hz.edf",
                                                                                sfreq=256.0)})
    same = write_manifest(study, "same.csv", ["s07"])
    for manifest, target in ((high, tmp_path / "high"), (same, tmp_path / "same")):
        assert mercl_main(["predict", str(model), str(manifest), "--source", "manifest", "-o", str(target),
                           "--no-progress"]) == 0
    assert "resampled to the model's 128 Hz" in capsys.readouterr().out
    a, b = (pd.read_csv(d / "trials.csv") for d in (tmp_path / "high", tmp_path / "same"))
    # 128 Hz -> 256 Hz -> 128 Hz keeps the bands (all below 64 Hz): nearly the same predictions
    assert (a["predicted"] == b["predicted"]).mean() >= 0.75
    np.testing.assert_allclose(a.filter(like="prob_"), b.filter(like="prob_"), atol=0.1)


def test_a_trial_without_its_clip_is_an_error_or_masked_as_in_training(trained, tmp_path, capsys):
    study, model = trained
    clips = tmp_path / "clips"
    clips.mkdir()
    for clip in sorted((study / "stimuli").glob("*.mp4"))[1:]:  # clip01 left out
        shutil.copy(clip, clips / clip.name)
    manifest = write_manifest(study, "noclip.csv", ["s07"])
    out = tmp_path / "pred"
    args = ["predict", str(model), str(manifest), "--source", "manifest", "--stimuli", str(clips), "--no-progress"]
    assert mercl_main([*args, "-o", str(out)]) == 2
    line = _error_line(capsys)
    assert str(clips) in line and "no clip for stimulus 'clip01'" in line and "uses video" in line, line
    _no_outputs(out)

    # the same model, had it been trained with missing video, masks it instead
    saved = torch.load(model, weights_only=True)
    description = json.loads(saved["description"])
    assert description["missing_modalities_seen"] == {"video": False, "audio": True}  # clip08 has no audio
    description["missing_modalities_seen"]["video"] = True
    saved["description"] = json.dumps(description)
    masked = tmp_path / "masked.pt"
    torch.save(saved, masked)
    args[1] = str(masked)
    assert mercl_main([*args, "-o", str(tmp_path / "masked")]) == 0
    assert "have no video: masked" in capsys.readouterr().out
    trials = pd.read_csv(tmp_path / "masked" / "trials.csv")
    assert len(trials) == 8 and "clip01" in set(trials["stimulus"])


def test_input_without_ratings_gives_predictions_only(trained, tmp_path, capsys):
    study, model = trained
    manifest = write_manifest(study, "unrated.csv", ["s08"], drop=("valence", "arousal", "dominance", "liking"))
    with open(manifest) as f:
        text = f.read().splitlines()
    # the manifest source needs ratings or a label: give a label column the quadrant4 scheme cannot use
    lines = [text[0] + ",label"] + [row + ",1" for row in text[1:]]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pred"
    assert mercl_main(["predict", str(model), str(manifest), "--source", "manifest", "-o", str(out),
                       "--no-progress"]) == 0
    assert "predictions only" in capsys.readouterr().out
    assert (out / "segments.csv").is_file() and (out / "trials.csv").is_file()
    assert not (out / "metrics.json").exists()
    assert "label" not in pd.read_csv(out / "trials.csv").columns


def test_not_a_model_and_other_schema_versions_are_one_line_errors(trained, tmp_path, capsys):
    study, model = trained
    manifest = write_manifest(study, "one.csv", ["s07"])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all" * 10)
    weights_only = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(3)}, weights_only)
    saved = torch.load(model, weights_only=True)
    future = tmp_path / "future.pt"
    torch.save({**saved, "schema_version": 3}, future)
    old = tmp_path / "old.pt"
    torch.save({"format": "mercl-model/1", "model": saved["model"], "label_scheme": "quadrant4"}, old)
    cases = {junk: "not a readable mercl model file", weights_only: "not a mercl model file",
             future: "schema version 3", old: "schema version 1", tmp_path: "not a file"}
    for path, problem in cases.items():
        out = tmp_path / f"out-{path.stem}"
        assert mercl_main(["predict", str(path), str(manifest), "--source", "manifest", "-o", str(out),
                           "--no-progress"]) == 2
        line = _error_line(capsys)
        assert line.startswith(f"mercl: error: {path}: ") and problem in line, line
        assert not out.exists()
        assert mercl_main(["info", str(path)]) == 2
        assert problem in _error_line(capsys)


def test_an_eeg_only_model_decodes_no_clip(trained, shards, tmp_path, capsys):
    study, _ = trained
    run = tmp_path / "eeg-only"
    assert mercl_main(["train", str(shards), "--label", "quadrant4", "--config", "tiny", "--modalities", "e",
                       "--set", "pretrain.epochs=1", "--set", "finetune.epochs=2", "--no-progress",
                       "-o", str(run)]) == 0
    manifest = write_manifest(study, "eeg-only.csv", ["s08"])
    out = tmp_path / "pred"
    assert mercl_main(["predict", str(run / MODEL_FILE), str(manifest), "--source", "manifest", "-o", str(out),
                       "--no-progress"]) == 0
    dataset = find_dataset_dir(out / "prepared")
    assert not list((dataset / "stimuli").glob("*.parquet"))  # no clip was decoded
    assert len(pd.read_csv(out / "trials.csv")) == 8
