"""Health data stays private by default (issue 21, section 6).

A study whose subject and clip ids are names (as a clinic's export may have them) is prepared,
trained on and predicted on: ``model.pt`` holds no id (salted hashes instead, still enough for
predict to say that the subjects and clips were seen in training) unless ``--keep-ids``;
``manifest.json`` and the shards hold no absolute path; every file holding EEG is created without
world-read bits.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from builders import make_manifest_raw

from mercl.cli import main as mercl_main
from mercl.data import shards
from mercl.data.prepare import input_folders
from mercl.data.summary import find_dataset_dir

SUBJECTS = ("patient-jane-doe", "patient-john-roe")
CLIPS = {"A": "wedding-video-doe", "B": "funeral-clip-roe", "C": "holiday-film-missing"}
QUICK = ["--config", "tiny", "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def usual_umask():
    """The common umask (group and world may read what is not made private)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Path]:
    """Raw study with identifying ids, prepared, and a model trained on it (default: hashed ids)."""
    base = tmp_path_factory.mktemp("privacy")
    raw = make_manifest_raw(base, subjects=SUBJECTS)
    with open(raw / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["stimulus"] = CLIPS[row["stimulus"]]
    with open(raw / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for old, new in CLIPS.items():
        if (raw / "stimuli" / f"{old}.mp4").exists():
            (raw / "stimuli" / f"{old}.mp4").rename(raw / "stimuli" / f"{new}.mp4")
    assert mercl_main(["prepare", str(raw), "--source", "manifest", "-o", str(base / "shards"), "--video-size", "32",
                       "--workers", "1", "--no-progress"]) == 0
    dataset = find_dataset_dir(base / "shards")
    assert mercl_main(["train", str(dataset), "--label", "valence2", *QUICK, "-o", str(base / "run")]) == 0
    return {"base": base, "raw": raw, "dataset": dataset, "model": base / "run" / "model.pt"}


def _ids() -> list[str]:
    return [*SUBJECTS, *CLIPS.values()]


def _model_text(path: Path) -> str:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return json.dumps({k: v for k, v in saved.items() if k != "model"}) + " ".join(saved["model"])


def test_model_file_holds_salted_hashes_not_ids(study, tmp_path, capsys):
    text = _model_text(study["model"])
    for identifier in _ids():
        assert identifier not in text
    description = json.loads(torch.load(study["model"], weights_only=True)["description"])
    seen = description["seen_ids"]
    assert len(seen["salt"]) == 32 and len(seen["subjects"]) == 2 and len(seen["stimuli"]) == 3
    assert "seen_subjects" not in description and "seen_stimuli" not in description

    # predict still tells that these subjects and clips were met in training
    out = tmp_path / "pred"
    with open(study["raw"] / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["stimulus"] != CLIPS["C"]]  # the trials with a clip
    with open(study["raw"] / "with-clips.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert mercl_main(["predict", str(study["model"]), str(study["raw"] / "with-clips.csv"), "--source", "manifest",
                       "-o", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["held_out"] == ("2 of 2 subjects seen in training, 2 of 2 clips seen in training: "
                                   "not a test score where the model met them")
    assert "2 of 2 subjects seen in training" in capsys.readouterr().out
    for path in (out / "segments.csv", out / "trials.csv", out / "metrics.json",
                 *sorted((out / "prepared").rglob("*.parquet")), *sorted((out / "prepared").rglob("*.json"))):
        assert path.stat().st_mode & 0o007 == 0, path


def test_keep_ids_stores_the_ids(study, tmp_path):
    run = tmp_path / "run"
    assert mercl_main(["train", str(study["dataset"]), "--label", "valence2", *QUICK, "--keep-ids",
                       "-o", str(run)]) == 0
    description = json.loads(torch.load(run / "model.pt", weights_only=True)["description"])
    assert description["seen_subjects"] == sorted(SUBJECTS)
    assert description["seen_stimuli"] == sorted(CLIPS.values())
    assert "seen_ids" not in description


def test_manifest_and_shards_hold_no_absolute_path(study):
    dataset, raw = study["dataset"], study["raw"]
    text = (dataset / "manifest.json").read_text()
    assert str(study["base"]) not in text and '"/' not in text
    manifest = json.loads(text)
    assert manifest["raw"] == "../../raw" and manifest["stimuli"] == "stimuli"
    assert input_folders(dataset, manifest) == (raw.resolve(), (raw / "stimuli").resolve())
    assert not [name for names in manifest["inputs"].values() for name in names if name.startswith("/")]
    for rel in manifest["files"]:
        info = shards.read_info(shards.read_schema(dataset / rel))
        assert str(study["base"]) not in json.dumps(info), rel
    eeg = shards.read_info(shards.read_schema(dataset / "eeg" / f"{SUBJECTS[0]}.parquet"))
    assert eeg["source_files"] == [f"{SUBJECTS[0]}.edf"]


def test_files_holding_eeg_are_not_world_readable(study):
    dataset, run = study["dataset"], study["model"].parent
    paths = [*sorted(dataset.rglob("*.parquet")), dataset / "manifest.json", dataset / "progress.json",
             run / "model.pt", run / "checkpoint.pt", run / "metrics.json"]
    assert any(p.parent.name == "eeg" for p in paths) and any("cache" in p.parts for p in paths)  # feature cache
    for path in paths:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o007 == 0, f"{path}: {oct(mode)}"
        assert mode & 0o600 == 0o600
    assert dataset.stat().st_mode & 0o007 == 0  # the dataset folder: no listing of subject files either
