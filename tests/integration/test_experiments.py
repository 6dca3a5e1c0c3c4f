"""`mercl experiment` + `mercl report`: tables equal the stored per-fold results, the cache works,
segment,trial,stimulus shows the window and clip leaks, figures are real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mercl.cli import main as mercl_main
from mercl.experiments.runner import Experiment, dataset_schemes, experiment_rows, run_experiment
from mercl.experiments.tables import parse_markdown_tables
from mercl.training.config import load_train_config

QUICK = ["--set", "pretrain.epochs=1", "--set", "finetune.epochs=2"]
METHODS = ["majority", "ave_rt", "mercl"]
CONTENT_ONLY = "MERCL A+V (content only)"
# Table rows: the methods asked for, MERCL on the clip alone (the study's clips are shared), the baselines.
ROWS = ["ave_rt", "mercl", CONTENT_ONLY, "majority", "clip-majority"]
PROTOCOLS = ("segment", "trial", "stimulus")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """3 subjects x 4 clips of 10 s, 32 px video at 1 fps -> 48 EEG rows."""
    root = tmp_path_factory.mktemp("experiments")
    assert mercl_main(["synth", str(root / "raw"), "--subjects", "3", "--stimuli", "4", "--duration", "10",
                       "--video-size", "32", "--fps", "4"]) == 0
    assert mercl_main(["prepare", str(root / "raw"), "--source", "manifest", "-o", str(root / "shards"),
                       "--video-size", "32", "--video-fps", "1", "--workers", "1", "--no-progress"]) == 0
    (found,) = [p.parent for p in (root / "shards").glob("*/manifest.json")]
    return found


@pytest.fixture(scope="module")
def run_dir(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "paper"
    assert mercl_main(["experiment", "paper", str(dataset), "--protocol", ",".join(PROTOCOLS), "--folds", "2",
                       "--config", "tiny", *QUICK, "--methods", *METHODS, "--schemes", "valence2",
                       "--no-progress", "-o", str(out)]) == 0
    assert mercl_main(["report", str(out)]) == 0
    return out


def _unit_results(run_dir: Path) -> pd.DataFrame:
    """Per-fold scores straight from the unit JSON files."""
    meta = json.loads((run_dir / "experiment.json").read_text())
    records = [json.loads((run_dir / rel).read_text()) for rel in meta["units"]]
    return pd.DataFrame(records)


def _mean_std(text: str) -> tuple[float, float]:
    mean, std = text.split("±")
    return float(mean), float(std)


def test_every_table_number_equals_the_stored_per_fold_results(run_dir):
    units = _unit_results(run_dir)
    assert len(units) == len(ROWS) * 3 * 2  # rows x protocols x folds
    report = (run_dir / "report.md").read_text()
    tables = parse_markdown_tables(report)
    method_tables = [t for t in tables if "valence2 Acc" in t.columns]
    assert len(method_tables) == 3  # one per protocol
    for table, protocol in zip(method_tables, PROTOCOLS, strict=True):
        assert list(table.index) == ROWS  # both baseline rows are there
        for method in ROWS:
            mine = units[(units["row"] == method) & (units["protocol"] == protocol)]
            assert len(mine) == 2
            for column, metric in (("valence2 Acc", "accuracy"), ("valence2 F1", "macro_f1")):
                mean, std = _mean_std(table.loc[method, column])
                assert mean == pytest.approx(mine[metric].mean(), abs=6e-4)
                assert std == pytest.approx(mine[metric].std(ddof=0), abs=6e-4)
    # a unit's stored accuracy is its stored predictions' accuracy
    for rec in units.itertuples():
        pred = rec.predictions
        assert rec.accuracy == pytest.approx(np.mean(np.equal(pred["label"], pred["prediction"])))
    assert "protocol segment (LEAKY)" in report and "LEAKY PROTOCOL" in report
    assert "protocol trial (clips shared with training)" in report and "CLIPS SHARED WITH TRAINING" in report
    assert "protocol stimulus" in report


def test_leakage_table_has_a_column_per_protocol_and_both_gaps(run_dir):
    units = _unit_results(run_dir)
    (leak,) = [t for t in parse_markdown_tables((run_dir / "report.md").read_text())
               if "valence2 clip leak (trial - stimulus)" in t.columns]
    assert list(leak.index) == ROWS
    for method in ROWS:
        acc = {p: units[(units["row"] == method) & (units["protocol"] == p)]["accuracy"].mean() for p in PROTOCOLS}
        assert float(leak.loc[method, "valence2 segment (LEAKY) Acc"]) == pytest.approx(acc["segment"], abs=6e-4)
        assert float(leak.loc[method, "valence2 trial (clips shared with training) Acc"]) == pytest.approx(
            acc["trial"], abs=6e-4)
        assert float(leak.loc[method, "valence2 stimulus Acc"]) == pytest.approx(acc["stimulus"], abs=6e-4)
        assert float(leak.loc[method, "valence2 window leak (segment - trial)"]) == pytest.approx(
            acc["segment"] - acc["trial"], abs=1.1e-3)
        assert float(leak.loc[method, "valence2 clip leak (trial - stimulus)"]) == pytest.approx(
            acc["trial"] - acc["stimulus"], abs=1.1e-3)
    # clip memory: with held-out clips it is the majority baseline, fold by fold
    for fold in (0, 1):
        pick = (units["protocol"] == "stimulus") & (units["fold"] == fold)
        clip = units[pick & (units["row"] == "clip-majority")].iloc[0]
        major = units[pick & (units["row"] == "majority")].iloc[0]
        assert clip["predictions"] == major["predictions"]


def test_html_tables_have_one_header_row(run_dir):
    page = (run_dir / "report.html").read_text()
    tables = page.split("<table")[1:]
    assert tables and all(t.count("<tr") - t.count("<tbody") >= 2 for t in tables)
    for table in tables:
        head = table.split("</thead>")[0]
        assert head.count("<tr") == 1, "one header row: the index name is the first column's header"
        assert "<th>method</th>" in head
    assert all("results" in t.split(">")[0] for t in tables), "styled tables"


def test_second_run_computes_nothing_and_a_changed_config_recomputes_only_mercl(run_dir, dataset):
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "cache").iterdir()}
    cfg = load_train_config("tiny", {"pretrain.epochs": 1, "finetune.epochs": 2})
    from mercl.data.reader import load_dataset

    schemes = dataset_schemes(load_dataset(dataset), ["valence2"])
    exp = Experiment("paper", dataset, list(PROTOCOLS), schemes,
                     experiment_rows("paper", cfg, METHODS, content_only=True), 2, cfg, "tiny")
    outcome = run_experiment(exp, run_dir, show_progress=False, console=None)
    assert outcome.computed == 0 and outcome.cached == len(ROWS) * 3 * 2
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "cache").iterdir()} == before

    # a different MERCL config, same cache: only MERCL's units are computed (trial protocol: 2 folds)
    other = run_dir.parent / "other"
    shutil.copytree(run_dir / "cache", other / "cache")
    cfg2 = load_train_config("tiny", {"pretrain.epochs": 1, "finetune.epochs": 1})
    exp2 = Experiment("paper", dataset, ["trial"], schemes, experiment_rows("paper", cfg2, METHODS), 2, cfg2, "tiny")
    outcome = run_experiment(exp2, other, show_progress=False, console=None)
    assert (outcome.computed, outcome.cached) == (2, 6)
    assert set(outcome.results.loc[outcome.results["method"] == "mercl", "fold"]) == {0, 1}


def test_figures_are_real_images_and_the_html_is_self_contained(run_dir):
    figures = sorted((run_dir / "figures").glob("*.png"))
    kinds = {p.name.split("-")[0] for p in figures}
    assert kinds == {"confusion", "per", "training", "tsne"}
    assert len(figures) == 12  # 4 kinds x 3 protocols
    for path in figures:
        with Image.open(path) as img:
            img.load()
            assert img.width > 50 and img.height > 50
            colours = img.convert("RGB").getcolors(maxcolors=1_000_000)
            assert colours is None or len(colours) > 10, path.name
    md = (run_dir / "report.md").read_text()
    for path in figures:
        assert f"](figures/{path.name})" in md
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures)
    assert "<table" in page and "segment (LEAKY)" in page


def test_report_includes_search_plots(tmp_path, run_dir):
    search = tmp_path / "search" / "my-search"
    (search / "plots").mkdir(parents=True)
    Image.open(next((run_dir / "figures").glob("tsne-*.png"))).save(search / "plots" / "optimization_history.png")
    assert mercl_main(["report", str(tmp_path / "search")]) == 0
    md = (tmp_path / "search" / "report.md").read_text()
    assert "](my-search/plots/optimization_history.png)" in md
    assert "data:image/png;base64," in (tmp_path / "search" / "report.html").read_text()


def test_bad_input_is_a_one_line_error(dataset, tmp_path, capsys):
    code = mercl_main(["experiment", "paper", str(dataset), "--schemes", "seed3", "-o", str(tmp_path / "x"),
                       "--config", "tiny", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "seed3" in err and "valence2" in err and len(err.strip().splitlines()) == 1
    code = mercl_main(["experiment", "paper", str(dataset), "--methods", "svm", "-o", str(tmp_path / "x"),
                       "--config", "tiny", "--no-progress"])
    assert code == 2 and "svm" in capsys.readouterr().err
    assert mercl_main(["report", str(tmp_path)]) == 2
    assert "neither an experiment run" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow  # starts a local Ray instance (~20 s on 2 busy cores)
def test_ray_gives_the_same_results_as_the_local_run(run_dir, dataset, tmp_path):
    out = tmp_path / "ray"
    assert mercl_main(["experiment", "paper", str(dataset), "--protocol", "trial", "--folds", "2",
                       "--config", "tiny", *QUICK, "--methods", "majority", "ave_rt", "--schemes", "valence2",
                       "--no-progress", "--ray", "-o", str(out)]) == 0
    local = pd.read_csv(run_dir / "results.csv")
    remote = pd.read_csv(out / "results.csv")
    assert len(remote) == 6  # ave_rt, majority, clip-majority x 2 folds
    for r in remote.itertuples():
        same = local[(local["unit_file"] == r.unit_file)]
        assert len(same) == 1 and same["accuracy"].item() == r.accuracy and same["macro_f1"].item() == r.macro_f1
        assert json.loads((out / r.unit_file).read_text())["predictions"] == \
            json.loads((run_dir / r.unit_file).read_text())["predictions"]


def test_serial_run_gives_the_same_results_as_the_default_worker_processes(run_dir, dataset, tmp_path):
    out = tmp_path / "serial"  # run_dir ran with the default workers (2 processes on 2 CPUs)
    assert mercl_main(["experiment", "paper", str(dataset), "--protocol", "trial", "--folds", "2",
                       "--config", "tiny", *QUICK, "--methods", "mercl", "ave_rt", "--schemes", "valence2",
                       "--no-progress", "--workers", "1", "-o", str(out)]) == 0
    parallel = pd.read_csv(run_dir / "results.csv")
    serial = pd.read_csv(out / "results.csv")
    assert len(serial) == 10  # mercl, ave_rt, MERCL A+V, majority, clip-majority x 2 folds
    for r in serial.itertuples():
        same = parallel[parallel["unit_file"] == r.unit_file]
        assert len(same) == 1 and same["n_test"].item() == r.n_test
        if r.method == "mercl":  # one torch thread per worker: float sums in another order
            assert abs(same["accuracy"].item() - r.accuracy) <= 0.05
        else:
            assert same["accuracy"].item() == r.accuracy and same["macro_f1"].item() == r.macro_f1


def test_units_ask_for_a_gpu_only_for_networks_and_only_on_a_cluster_with_gpus():
    from mercl.experiments.runner import unit_gpus

    assert [unit_gpus(m, None, 4) for m in ("mercl", "ve_bilstm", "ave_lstm")] == [1, 1, 1]
    assert [unit_gpus(m, None, 4) for m in ("ave_rt", "ave_kelm", "majority", "clip-majority")] == [0, 0, 0, 0]
    assert unit_gpus("mercl", None, 0) == 0  # a CPU cluster
    assert unit_gpus("mercl", 0.5, 4) == 0.5 and unit_gpus("ave_rt", 0.5, 4) == 0  # --gpus-per-unit
