"""An edited input is never silently ignored (issue 21, section 1).

Each test prepares a small study in its real release layout (manifest CSV + EDF + mp4, DEAP
pickles, SEED ``.mat`` sessions), edits one input the way a user would (a rating, a replaced
recording, a replaced clip, a removed row), prepares again into the same output folder and reads
the shards: the edit is there, exactly the shards that read the input were rebuilt, and the
console says which input changed. The caches of results computed on a dataset (experiment units,
backbone features) key on its content, so an edited dataset never reuses them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import CHANNELS, SFREQ, TRIAL_S, make_manifest_raw, small_config

from mercl.cli import main as cli_main
from mercl.data.prepare import PrepareResult, prepare
from mercl.data.reader import load_dataset, load_dataset_once
from mercl.data.synth_sources import (
    deap_content,
    write_mp4,
    write_pickle,
    write_recording,
    write_seed_labels,
    write_seed_session,
)

# ---------------------------------------------------------------- studies in their release layouts


@dataclass
class Study:
    """A raw study, how to read it, and what prepare needs besides."""

    raw: Path
    source: str
    stimuli: Path | None = None
    config: object = field(default_factory=small_config)

    def prepare(self, out: Path) -> PrepareResult:
        return prepare(self.raw, self.source, out, stimuli=self.stimuli, config=self.config, workers=1,
                       progress=False)


def manifest_study(tmp: Path) -> Study:
    """2 subjects x 3 trials (clips A with audio, B without, C missing), one EDF per subject."""
    raw = make_manifest_raw(tmp)
    set_manifest_cell(raw / "manifest.csv", "s01", 1, "valence", "7.81")
    return Study(raw, "manifest")


def write_deap_subject(path: Path, seed: int = 0, seconds: float = 8.0, labels=None) -> Path:
    """A DEAP ``sNN.dat`` (40 trials, 40 channels) with ``seconds`` of EEG after the 3 s baseline."""
    content = deap_content(seed)
    data = content["data"][:, :, : 384 + int(seconds * 128)].copy()
    return write_pickle(path, {"data": data, "labels": content["labels"] if labels is None else labels}, protocol=4)


def deap_study(tmp: Path) -> Study:
    """2 DEAP subjects of 8 s trials; trial 0 shows clip 01 (tmp/clips/01.mp4)."""
    raw = tmp / "deap" / "data_preprocessed_python"
    write_deap_subject(raw / "s01.dat", seed=0)
    write_deap_subject(raw / "s02.dat", seed=1)
    write_mp4(tmp / "clips" / "01.mp4", 8.0)
    return Study(tmp / "deap", "deap", stimuli=tmp / "clips")


def seed_study(tmp: Path) -> Study:
    """2 SEED subjects, one session each of 15 trials x 6 s, label.mat; clip 03 in tmp/clips."""
    raw = tmp / "seed" / "Preprocessed_EEG"
    write_seed_session(raw / "1_20131027.mat", n_samples=1200, seed=0)
    write_seed_session(raw / "2_20131030.mat", n_samples=1200, seed=1)
    write_seed_labels(raw)
    write_mp4(tmp / "clips" / "03.mp4", 6.0)
    config = small_config(**{"source.channels": ["FP1", "FZ", "CZ", "PZ", "OZ"]})
    return Study(tmp / "seed", "seed", stimuli=tmp / "clips", config=config)


def set_manifest_cell(path: Path, subject: str, trial: int, column: str, value: str) -> None:
    rows = read_csv_rows(path)
    for row in rows:
        if row["subject"] == subject and int(row["trial"]) == trial:
            row[column] = value
    write_csv_rows(path, rows)


def read_csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def shard(result: PrepareResult, rel: str) -> pd.DataFrame:
    return pd.read_parquet(result.dataset_dir / rel)


def eeg_of(result: PrepareResult, rel: str) -> np.ndarray:
    return np.stack(shard(result, rel)["eeg"].to_numpy())


# ---------------------------------------------------------------- the edits, per source


@dataclass
class Edit:
    """An edit of a study and what the second prepare must show for it."""

    apply: Callable[[Study], None]
    rebuilt: set[str]
    removed: set[str]
    message: str  # a console line
    check: Callable[[PrepareResult, PrepareResult], None]  # (before, after): the edit is in the data


def _valence(result: PrepareResult, rel: str, trial: int) -> set[float]:
    rows = shard(result, rel)
    return set(np.round(rows.loc[rows["trial"] == trial, "valence"].astype(float), 4))


def _eeg_changed(rel: str):
    def check(before, after):
        assert len(shard(after, rel)) == len(shard(before, rel))
        assert not np.allclose(eeg_of(after, rel), eeg_of(before, rel))
    return check


def _clip_lost_audio(rel: str):
    def check(before, after):
        assert shard(before, rel)["audio_present"].all()
        assert not shard(after, rel)["audio_present"].any()
    return check


def _manifest_edits() -> dict[str, Edit]:
    def rating(study):
        set_manifest_cell(study.raw / "manifest.csv", "s01", 1, "valence", "1.0")

    def rating_check(before, after):
        assert _valence(before, "eeg/s01.parquet", 1) == {7.81}
        assert _valence(after, "eeg/s01.parquet", 1) == {1.0}

    def eeg(study):
        n = int(3 * TRIAL_S * SFREQ)
        noise = np.random.default_rng(7).standard_normal((len(CHANNELS), n)) * 30e-6
        write_recording(study.raw / "s02.edf", noise, SFREQ, CHANNELS)

    def clip(study):
        write_mp4(study.raw / "stimuli" / "A.mp4", TRIAL_S, audio=False)

    def remove_row(study):
        rows = read_csv_rows(study.raw / "manifest.csv")
        write_csv_rows(study.raw / "manifest.csv", [r for r in rows if (r["subject"], r["trial"]) != ("s01", "0")])

    def removed_check(before, after):
        assert sorted(set(shard(before, "eeg/s01.parquet")["trial"])) == [0, 1, 2]
        assert sorted(set(shard(after, "eeg/s01.parquet")["trial"])) == [1, 2]
        assert after.manifest["counts"]["segments"] == before.manifest["counts"]["segments"] - 5

    return {
        "changed rating": Edit(rating, {"eeg/s01.parquet"}, set(),
                               "1 shard rebuilt: manifest.csv (subject s01 trial 1) changed", rating_check),
        "replaced EEG file": Edit(eeg, {"eeg/s02.parquet"}, set(), "1 shard rebuilt: s02.edf changed",
                                  _eeg_changed("eeg/s02.parquet")),
        "replaced clip": Edit(clip, {"stimuli/A.parquet"}, set(), "1 shard rebuilt: stimuli/A.mp4 changed",
                              _clip_lost_audio("stimuli/A.parquet")),
        "removed row": Edit(remove_row, {"eeg/s01.parquet"}, set(),
                            "1 shard rebuilt: manifest.csv (subject s01 trial 0) changed", removed_check),
    }


def _deap_edits() -> dict[str, Edit]:
    folder = "data_preprocessed_python"

    def rating(study):
        labels = deap_content(0)["labels"]
        labels[3, 0] = 1.0
        write_deap_subject(study.raw / folder / "s01.dat", seed=0, labels=labels)

    def rating_check(before, after):
        assert _valence(before, "eeg/s01.parquet", 3) != {1.0}
        assert _valence(after, "eeg/s01.parquet", 3) == {1.0}

    def eeg(study):
        write_deap_subject(study.raw / folder / "s02.dat", seed=2)

    def clip(study):
        write_mp4(study.stimuli / "01.mp4", 8.0, audio=False)

    def remove_subject(study):
        (study.raw / folder / "s02.dat").unlink()

    def removed_check(before, after):
        assert not (after.dataset_dir / "eeg" / "s02.parquet").exists()
        assert set(load_dataset(after.dataset_dir).subjects) == {"s01"}
        assert set(pd.read_parquet(after.dataset_dir / "eeg")["subject"]) == {"s01"}

    return {
        "changed rating": Edit(rating, {"eeg/s01.parquet"}, set(), f"1 shard rebuilt: {folder}/s01.dat changed",
                               rating_check),
        "replaced EEG file": Edit(eeg, {"eeg/s02.parquet"}, set(), f"1 shard rebuilt: {folder}/s02.dat changed",
                                  _eeg_changed("eeg/s02.parquet")),
        "replaced clip": Edit(clip, {"stimuli/01.parquet"}, set(), "1 shard rebuilt: ../clips/01.mp4 changed",
                              _clip_lost_audio("stimuli/01.parquet")),
        "removed row": Edit(remove_subject, set(), {"eeg/s02.parquet"}, "1 shard removed: eeg/s02.parquet",
                            removed_check),
    }


def _seed_edits() -> dict[str, Edit]:
    folder = "Preprocessed_EEG"
    labels = np.array([[1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1]])

    def rating(study):
        changed = labels.copy()
        changed[0, 2] = 1  # clip 3: negative -> positive
        write_seed_labels(study.raw / folder, changed)

    def rating_check(before, after):
        for rel in ("eeg/1.parquet", "eeg/2.parquet"):
            assert set(shard(before, rel).query("trial == 2")["label"]) == {-1}
            assert set(shard(after, rel).query("trial == 2")["label"]) == {1}

    def eeg(study):
        write_seed_session(study.raw / folder / "2_20131030.mat", n_samples=1200, seed=9)

    def clip(study):
        write_mp4(study.stimuli / "03.mp4", 6.0, audio=False)

    def remove_trial(study):
        write_seed_session(study.raw / folder / "1_20131027.mat", clips=range(1, 15), n_samples=1200, seed=0)

    def removed_check(before, after):
        assert 14 in set(shard(before, "eeg/1.parquet")["trial"])
        assert sorted(set(shard(after, "eeg/1.parquet")["trial"])) == list(range(14))
        assert len(load_dataset(after.dataset_dir)) == len(load_dataset(before.dataset_dir)) - 2

    return {
        "changed rating": Edit(rating, {"eeg/1.parquet", "eeg/2.parquet"}, set(),
                               f"2 shards rebuilt: {folder}/label.mat changed", rating_check),
        "replaced EEG file": Edit(eeg, {"eeg/2.parquet"}, set(), f"1 shard rebuilt: {folder}/2_20131030.mat changed",
                                  _eeg_changed("eeg/2.parquet")),
        "replaced clip": Edit(clip, {"stimuli/03.parquet"}, set(), "1 shard rebuilt: ../clips/03.mp4 changed",
                              _clip_lost_audio("stimuli/03.parquet")),
        "removed row": Edit(remove_trial, {"eeg/1.parquet"}, set(),
                            f"1 shard rebuilt: {folder}/1_20131027.mat changed", removed_check),
    }


STUDIES = {"manifest": (manifest_study, _manifest_edits()), "deap": (deap_study, _deap_edits()),
           "seed": (seed_study, _seed_edits())}
CASES = [(source, edit) for source, (_, edits) in STUDIES.items() for edit in edits]


def _snapshot(result: PrepareResult) -> PrepareResult:
    """A copy of the first dataset's shards (the second prepare rebuilds them in place)."""
    import shutil

    copy = result.dataset_dir.parent.parent / "before" / result.dataset_dir.name
    shutil.copytree(result.dataset_dir, copy)
    return PrepareResult(copy, result.manifest, result.built, result.skipped)


@pytest.mark.parametrize(("source", "edit_name"), CASES, ids=[f"{s}-{e}".replace(" ", "-") for s, e in CASES])
def test_an_edited_input_rebuilds_exactly_its_shards(tmp_path, source, edit_name):
    make, edits = STUDIES[source]
    edit = edits[edit_name]
    study = make(tmp_path)
    first = study.prepare(tmp_path / "out")
    held = load_dataset_once(first.dataset_dir)  # what a worker process of an earlier run holds
    assert load_dataset_once(first.dataset_dir) is held
    before = _snapshot(first)
    edit.apply(study)
    after = study.prepare(tmp_path / "out")

    assert after.dataset_dir == first.dataset_dir  # the same -o, the same config: the same folder
    edit.check(before, after)  # the edit is in the shards
    assert set(after.built) == edit.rebuilt
    assert set(after.removed) == edit.removed
    assert set(after.skipped) == set(first.manifest["files"]) - edit.rebuilt - edit.removed
    assert any(line.startswith(edit.message) for line in after.changes), after.changes
    assert after.manifest["content_digest"] != first.manifest["content_digest"]
    fresh = load_dataset(after.dataset_dir)  # every shard the manifest lists checks out
    reloaded = load_dataset_once(after.dataset_dir)  # the held copy is stale: read again
    assert reloaded is not held and len(reloaded) == len(fresh) and np.array_equal(reloaded.eeg, fresh.eeg)

    again = study.prepare(tmp_path / "out")  # nothing changed since: everything reused
    assert again.built == [] and again.changes == []
    assert again.manifest["content_digest"] == after.manifest["content_digest"]


def test_the_issue_reproduction_through_the_cli(tmp_path, capsys):
    """Prepare, change one trial's valence in manifest.csv from 7.81 to 1.0, prepare again into
    the same -o: the shards say 1.0 and the console names the row."""
    raw = manifest_study(tmp_path).raw
    argv = ["prepare", str(raw), "--source", "manifest", "-o", str(tmp_path / "out"), "--video-size", "32",
            "--workers", "1", "--no-progress"]
    assert cli_main(argv) == 0
    (dataset,) = [p.parent for p in (tmp_path / "out").glob("*/manifest.json")]
    capsys.readouterr()
    set_manifest_cell(raw / "manifest.csv", "s01", 1, "valence", "1.0")
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    rows = pd.read_parquet(dataset / "eeg" / "s01.parquet")
    assert set(rows.loc[rows["trial"] == 1, "valence"]) == {1.0}
    assert "1 shard rebuilt: manifest.csv (subject s01 trial 1) changed" in out
    assert "built 1 shards, reused 3" in out


def test_shards_of_a_recording_that_left_the_manifest_are_removed(tmp_path):
    study = manifest_study(tmp_path)
    first = study.prepare(tmp_path / "out")
    rows = read_csv_rows(study.raw / "manifest.csv")
    write_csv_rows(study.raw / "manifest.csv", [r for r in rows if r["subject"] != "s02"])
    after = study.prepare(tmp_path / "out")
    assert set(after.removed) == {"eeg/s02.parquet"}
    assert not (first.dataset_dir / "eeg" / "s02.parquet").exists()
    assert set(pd.read_parquet(after.dataset_dir / "eeg")["subject"]) == {"s01"}
    assert set(load_dataset(after.dataset_dir).subjects) == {"s01"}
    progress = (after.dataset_dir / "progress.json").read_text()
    assert "eeg/s02.parquet" not in progress


def test_a_dataset_without_input_fingerprints_is_rebuilt_once(tmp_path):
    """A dataset an older mercl wrote (progress.json of {shard: sha256}, no fingerprints) cannot
    be trusted to match its inputs: the next prepare rebuilds it, and says why."""
    study = manifest_study(tmp_path)
    first = study.prepare(tmp_path / "out")
    root = first.dataset_dir
    (root / "progress.json").write_text("".join(json.dumps({rel: digest}) + "\n"
                                                for rel, digest in first.manifest["files"].items()))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.pop("inputs")
    (root / "manifest.json").write_text(json.dumps(manifest))
    after = study.prepare(tmp_path / "out")
    assert set(after.built) == set(first.manifest["files"])
    assert after.changes == ["4 shards rebuilt: no input fingerprint recorded (prepared by an older mercl)"]
    assert study.prepare(tmp_path / "out").built == []


# ---------------------------------------------------------------- caches keyed by content


def test_experiment_units_are_not_reused_for_an_edited_dataset(tmp_path):
    from mercl.experiments.runner import Experiment, experiment_rows, run_experiment
    from mercl.training.config import load_train_config

    study = manifest_study(tmp_path)
    dataset = study.prepare(tmp_path / "out").dataset_dir
    cfg = load_train_config("tiny")

    def run() -> tuple[int, int, pd.DataFrame]:
        exp = Experiment("paper", dataset, ["trial"], ["valence2"], experiment_rows("paper", cfg, ["majority"]),
                         2, cfg, "tiny")
        outcome = run_experiment(exp, tmp_path / "run", show_progress=False, console=None)
        return outcome.computed, outcome.cached, outcome.results

    computed, cached, _ = run()
    assert computed > 0 and cached == 0
    assert run()[:2] == (0, computed)  # the same data: every unit from the cache
    set_manifest_cell(study.raw / "manifest.csv", "s01", 1, "valence", "1.0")
    study.prepare(tmp_path / "out")
    assert run()[:2] == (computed, 0)  # an edited rating: nothing computed on the old data is reused


def test_backbone_feature_cache_follows_the_clips(tmp_path):
    """The frozen backbones' cache keys on the stimulus shards: a replaced clip gets a new cache, an
    edited rating (EEG rows only) keeps the clip features."""
    import torch
    from builders import tiny

    from mercl.models.mercl_model import build_model
    from mercl.training.crossval import data_shapes
    from mercl.training.feature_cache import cache_key

    study = manifest_study(tmp_path)
    first = load_dataset(study.prepare(tmp_path / "out").dataset_dir)
    torch.manual_seed(0)
    model = build_model(tiny().model, data_shapes(first, n_classes=2))
    key = cache_key(model, first)
    set_manifest_cell(study.raw / "manifest.csv", "s01", 1, "valence", "1.0")
    assert cache_key(model, load_dataset(study.prepare(tmp_path / "out").dataset_dir)) == key
    write_mp4(study.raw / "stimuli" / "A.mp4", TRIAL_S, audio=False)
    assert cache_key(model, load_dataset(study.prepare(tmp_path / "out").dataset_dir)) != key


def test_predict_force_does_not_reuse_a_stale_prepared_folder(tmp_path, capsys):
    """``mercl predict --force`` after an edit of the input: OUT/prepared is brought up to date (the
    edited rating is the label predictions are scored against), not reused as it was."""
    study = manifest_study(tmp_path)
    dataset = study.prepare(tmp_path / "shards").dataset_dir
    run = tmp_path / "run"
    assert cli_main(["train", str(dataset), "--label", "valence2", "--config", "tiny", "--modalities", "e",
                     "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1", "--no-progress", "-o", str(run)]) == 0
    predict = ["predict", str(run / "model.pt"), str(study.raw), "--source", "manifest", "-o", str(tmp_path / "pred"),
               "--no-progress"]

    def labels_of_s01_trial_1() -> set[str]:
        segments = pd.read_csv(tmp_path / "pred" / "segments.csv")
        return set(segments.loc[(segments["subject"] == "s01") & (segments["trial"] == 1), "label"])

    assert cli_main(predict) == 0
    assert labels_of_s01_trial_1() == {"high valence"}  # 7.81
    set_manifest_cell(study.raw / "manifest.csv", "s01", 1, "valence", "1.0")
    capsys.readouterr()
    assert cli_main([*predict, "--force"]) == 0
    assert labels_of_s01_trial_1() == {"low valence"}
    assert "1 shard rebuilt: manifest.csv (subject s01 trial 1) changed" in capsys.readouterr().out
