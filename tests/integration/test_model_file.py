"""model.pt describes itself, `mercl info` prints it, and no file mercl reads can run code.

The model is the tiny config trained by ``mercl train`` on the demo dataset of test_training.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from builders import build_demo_dataset

from mercl import __version__
from mercl.cli import main as mercl_main
from mercl.config import config_hash, to_dict
from mercl.data.reader import load_dataset
from mercl.inference.model_file import SCHEMA_VERSION, load_trained_model, read_model_file
from mercl.models.cached_backbone import backbone_digest
from mercl.training.checkpoint import load_checkpoint
from mercl.training.config import load_train_config

QUICK = ["--set", "pretrain.epochs=1", "--set", "finetune.epochs=2"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def run_dir(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "run"
    assert mercl_main(["train", str(dataset), "--label", "valence2", "--config", "tiny", "--no-progress",
                       "-o", str(out), *QUICK]) == 0
    return out


def test_model_file_describes_itself_and_loads_with_weights_only(dataset, run_dir, capsys):
    saved = torch.load(run_dir / "model.pt", weights_only=True)  # plain data and tensors only
    assert saved["format"] == "mercl-model" and saved["schema_version"] == SCHEMA_VERSION
    d = json.loads(saved["description"])  # the description is JSON text
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert d["train_config"] == json.loads((run_dir / "config.json").read_text())
    assert d["label_scheme"] == "valence2" and d["class_names"] == ["low valence", "high valence"]
    assert d["modalities"] == ["video", "audio", "eeg"] and d["mercl_version"] == __version__
    pre = d["preprocessing"]
    assert pre["config"] == manifest["config"] and pre["config_hash"] == config_hash(manifest["config"])
    for key in ("ch_names", "sfreq", "bands", "segment_s", "hop_s", "shapes", "dataset_id", "source"):
        assert pre[key] == manifest[key], key
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(d["train_class_counts"]) == metrics["n_train"]
    assert d["majority_class"] == int(np.argmax(d["train_class_counts"]))
    assert d["missing_modalities_seen"] == {"video": False, "audio": True}  # clip08 has no audio stream
    assert d["training"]["val_accuracy"] == metrics["val_accuracy"]
    # the demo's clips are shared, so validation holds whole clips out: clip memory has nothing to
    # recall there and falls back to the majority class
    assert metrics["protocol"] == "stimulus"
    assert metrics["clip_majority_val_accuracy"] == metrics["majority_val_accuracy"]

    model, norm, mf = load_trained_model(run_dir / "model.pt")
    assert backbone_digest(model) == d["backbones"]["digest"] and d["backbones"]["frozen"] == ["audio", "video"]
    assert np.allclose(norm.eeg_mean, np.asarray(d["norm"]["eeg_mean"]))
    # the rebuilt model is the trained one: same weights, same predictions as in training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved["model"][name]), name
    assert mf.shapes.n_classes == 2 and mf.config.model.width == 32

    assert mercl_main(["info", str(run_dir / "model.pt")]) == 0
    info = capsys.readouterr().out.strip().splitlines()
    assert 6 <= len(info) <= 12
    text = "\n".join(info)
    for fact in ("schema 2", f"mercl {__version__}", "valence2: low valence, high valence", "video, audio, eeg",
                 pre["config_hash"], "14 channels at 128 Hz", "gamma 30-45", "test_vit", d["backbones"]["digest"][:16],
                 "mercl predict"):
        assert fact in text, fact
    assert mercl_main(["info", str(run_dir / "model.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == d


class RunsCommand:
    """Unpickling this runs a shell command (what a crafted model file could do)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _crafted_files(tmp_path: Path, marker: Path, model_pt: Path) -> dict[str, Path]:
    """Files whose unpickling would create ``marker``: torch zip files and a bare pickle."""
    payload = RunsCommand(f"touch {marker}")
    saved = torch.load(model_pt, weights_only=True)
    files = {"torch-dict": tmp_path / "evil-dict.pt", "model-like": tmp_path / "evil-model.pt",
             "pickle": tmp_path / "evil.pkl"}
    torch.save({"format": "mercl-model", "payload": payload}, files["torch-dict"])
    torch.save({**saved, "description": payload}, files["model-like"])  # a real model with one object slipped in
    with open(files["pickle"], "wb") as f:
        pickle.dump({"format": "mercl-model", "payload": payload}, f, protocol=2)
    return files


def test_a_file_whose_pickle_runs_a_command_is_refused_and_never_runs(dataset, run_dir, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    files = _crafted_files(tmp_path, marker, run_dir / "model.pt")
    for kind, path in files.items():
        for args in (["info", str(path)],
                     ["predict", str(path), str(dataset), "--source", "manifest", "-o", str(tmp_path / "p")]):
            assert mercl_main(args) == 2, (kind, args[0])
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"mercl: error: {path}: "), err
            assert "refused" in err[0] and "posix.system" in err[0], err
            assert not marker.exists(), f"{kind}: the command ran"

    # a crafted checkpoint.pt: `mercl train --resume` refuses it the same way
    resume_dir = tmp_path / "resume"
    resume_dir.mkdir()
    os.replace(files["torch-dict"], resume_dir / "checkpoint.pt")
    assert mercl_main(["train", str(dataset), "--label", "valence2", "--config", "tiny", "--no-progress",
                       "-o", str(resume_dir), "--resume", *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{resume_dir / 'checkpoint.pt'}: refused" in err[0], err
    assert not marker.exists()

    # the test can fail: the same files do run the command when loaded the unsafe way
    torch.load(files["model-like"], weights_only=False)
    assert marker.exists()


def test_training_checkpoints_load_safely_and_resume(dataset, run_dir, tmp_path, capsys):
    state = load_checkpoint(run_dir / "checkpoint.pt")  # weights_only=True: RNG states are plain data
    assert len(state["history"]) == 3 and {"python", "numpy", "torch"} <= set(state["rng"])
    assert mercl_main(["train", str(dataset), "--label", "valence2", "--config", "tiny", "--no-progress",
                       "-o", str(run_dir), "--resume", *QUICK]) == 0
    assert "resuming from" in capsys.readouterr().out


def test_best_config_yaml_of_a_search_trains_as_is(dataset, tmp_path, capsys):
    from tuning.results import write_best_config

    cfg = load_train_config("tiny", {"model.width": 16, "model.heads": 2, "pretrain.epochs": 1,
                                     "finetune.epochs": 1, "loss.temperature": 0.2})
    trial = pd.Series({"trial_id": "t0007", "best_finetune_val_accuracy": 0.75})
    path = write_best_config(to_dict(cfg), trial, tmp_path, "val_accuracy")
    assert path.name == "best_config.yaml"
    assert load_train_config(path) == cfg
    out = tmp_path / "run"
    assert mercl_main(["train", str(dataset), "--label", "valence2", "--config", str(path), "--no-progress",
                       "-o", str(out)]) == 0
    assert read_model_file(out / "model.pt").config == cfg


def test_unreadable_or_foreign_files_are_one_line_errors(tmp_path, capsys):
    cases = {tmp_path / "missing.pt": "no such file", tmp_path: "not a file"}
    (tmp_path / "junk.pt").write_bytes(os.urandom(300))
    cases[tmp_path / "junk.pt"] = "not a readable mercl model file"
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases[tmp_path / "list.pt"] = "expected a dict"
    torch.save({"format": "mercl-model", "schema_version": SCHEMA_VERSION, "description": "{not json"},
               tmp_path / "broken.pt")
    cases[tmp_path / "broken.pt"] = "description is not JSON"
    for path, problem in cases.items():
        assert mercl_main(["info", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"mercl: error: {path}: ") and problem in err[0], err


def test_loaded_model_reproduces_the_validation_predictions(dataset, run_dir):
    """model.pt + its normalisation reproduce the validation accuracy `mercl train` reported."""
    from mercl.data.protocols import inner_split
    from mercl.training.crossval import SplitRun
    from mercl.training.feature_cache import ensure_feature_cache
    from mercl.training.loop import predict_batches
    from mercl.training.metrics import classification_metrics

    prepared = load_dataset(dataset, verify=False)
    model, norm, mf = load_trained_model(run_dir / "model.pt")
    cfg = mf.config
    labels = prepared.labels("valence2")
    _, val = inner_split(np.arange(len(prepared)), prepared.trial_groups(), labels, cfg.val_fraction, cfg.seed)
    run = SplitRun(None, model, norm, ensure_feature_cache(model, prepared), mf.shapes, torch.device("cpu"), 0.0)
    pred = predict_batches(model, run.batches(prepared, val, "valence2", cfg), run.device)
    accuracy = classification_metrics(pred["label"], pred["pred"], 2).accuracy
    assert accuracy == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["val_accuracy"])
