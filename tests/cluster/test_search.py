"""The search's pieces that need no cluster: config checks, the space, the Ray Data row path, outputs.

Bad configs must fail before anything starts (no Ray, no experiment folder), with one line
naming the field. The per-row batches the Ray Data path builds must equal mercl's own
reader's items. The Ray side (trials, kills, restore) is in test_search_reliability.py.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from builders import make_tiny_dataset

from mercl.data.reader import SegmentDataset, collate, load_dataset
from mercl.errors import ConfigError
from tuning import search
from tuning.config import load_search_config, parse_set
from tuning.data import SPLIT_IDS, prepare_search_data, select_split_rows, split_column
from tuning.space import (
    BaseModelShape,
    SpaceSampler,
    check_space_against_base,
    parse_space,
    readable_hparams,
    trial_overrides,
)

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "tuning" / "configs" / "test.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("search-data"))


def run_main(args: list[str], capsys) -> tuple[int, str]:
    code = search.main(args)
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("space.l1.low=-0.5", "space.l1.low"),  # a negative loss weight in the space
        ("train_overrides.loss.l2=-1", "train_overrides.loss.l2"),  # ... or in the fixed config
        ("space.heads={choices: [3, 5]}", "space.heads"),  # no heads choice divides widths 16/32
        ("train_overrides.model.heads=3", "train_overrides.model.heads"),  # base heads vs base width
        ("data.modalities=[eeg, smell]", "data.modalities[1]"),  # unknown modality
        ("space={}", "space"),  # empty search space
        ("data.label=valence9", "data.label"),
        ("resources.cpus_per_worker=-1", "resources.cpus_per_worker"),
        ("resources.custom_per_worker={fake_gpu: 0}", "resources.custom_per_worker"),
        ("resources.custom_per_worker={GPU: 1}", "resources.custom_per_worker"),  # not a custom resource
        ("space.tcn_growth={choices: [0, 2]}", "space.tcn_growth.choices[0]"),
        ("data.protocol=clips", "data.protocol"),  # not a protocol
        ("data.protocol=stimulus", "data.protocol"),  # 4 clips cannot make 8 stimulus folds
        ("time_budget_s=-5", "time_budget_s"),
        ("time_budget_s=.nan", "time_budget_s"),
    ],
)
def test_bad_config_fails_before_anything_starts(setting, field, dataset, tmp_path, capsys):
    code, err = run_main(["--config", str(TEST_CONFIG), "--dataset", str(dataset), "--storage", str(tmp_path),
                          "--set", "data.folds=8", "--set", setting], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("search: error:"), err
    assert f"'{field}'" in lines[0]
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing was created


def test_missing_shard_is_named_before_anything_starts(dataset, tmp_path, capsys):
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(dataset, broken)
    victim = sorted((broken / "eeg").glob("*.parquet"))[1]
    victim.unlink()
    code, err = run_main(["--config", str(TEST_CONFIG), "--dataset", str(broken), "--storage",
                          str(tmp_path / "res")], capsys)
    assert code == 2
    assert err.strip() == f"search: error: {victim}: shard listed in manifest.json is missing; re-run mercl prepare"
    assert not (tmp_path / "res").exists()


def test_the_entry_point_exits_2_with_one_line_and_no_ray(dataset, tmp_path):
    """As a user runs it: a subprocess, a bad field, exit status 2, one stderr line, no Ray started."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tuning" / "search.py"), "--config", str(TEST_CONFIG), "--dataset",
         str(dataset), "--storage", str(tmp_path), "--set", "space.alpha.high=1.5"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"search: error: {TEST_CONFIG}: config field 'space.alpha.high': "
                                   "must be <= 1.0, got 1.5")
    assert "ray" not in proc.stdout.lower()
    assert not any(tmp_path.iterdir())


def test_check_mode_accepts_the_shipped_configs(dataset, tmp_path, capsys):
    for config in ("test.yaml", "demo.yaml"):
        code = search.main(["--config", str(ROOT / "tuning" / "configs" / config), "--dataset", str(dataset),
                            "--storage", str(tmp_path), "--check"])
        assert code == 0, capsys.readouterr().err
    assert "config OK" in capsys.readouterr().out


def test_cli_overrides_reach_the_config():
    args = search.build_parser().parse_args(
        ["--name", "n1", "--num-samples", "5", "--storage", "/x", "--dataset", "/d", "--workers", "3",
         "--set", "scheduler.grace_period=3", "--set", "space.lr={low: 0.001, high: 0.01, log: true}",
         "--time-budget", "600",
         "--set", "space.model.eeg.dropout={low: 0.1, high: 0.3}", "--no-crossval"])
    cfg = load_search_config(TEST_CONFIG, search.cli_overrides(args))
    assert (cfg.name, cfg.num_samples, cfg.storage, cfg.data.dataset) == ("n1", 5, "/x", "/d")
    assert cfg.time_budget_s == 600
    assert cfg.resources.num_workers == 3 and cfg.scheduler.grace_period == 3 and not cfg.crossval.enabled
    assert cfg.space["lr"] == {"low": 0.001, "high": 0.01, "log": True}
    assert cfg.space["model.eeg.dropout"] == {"low": 0.1, "high": 0.3}
    assert cfg.space["l1"] == {"low": 0.1, "high": 2.0}  # untouched entries stay
    with pytest.raises(Exception, match="expected KEY=VALUE"):
        parse_set(["nothing"])


# ----------------------------------------------------------------------------- the space


def test_heads_are_drawn_from_divisors_of_the_sampled_width():
    specs = parse_space({"width": {"choices": [12, 16]}, "heads": {"choices": [2, 3, 4, 8]}, "l1": [0.5, 1.0]})
    sampler = SpaceSampler(specs, BaseModelShape(width=32, heads=4, dilations=[1, 2]))
    assert sampler.conditional_heads
    assert sampler.heads_by_width == {12: [2, 3, 4], 16: [2, 4, 8]}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        constants = sampler(trial)
        width, heads = trial.params["width"], constants["heads"]
        assert width % heads == 0
        assert trial.params[f"heads_w{width}"] == heads
        seen.add((width, heads))
        study.tell(trial, float(heads))
    assert {(12, 3), (16, 8)} <= seen  # each width's own divisors are explored


def test_plain_heads_choice_when_every_choice_divides_every_width():
    specs = parse_space({"width": {"choices": [32, 64]}, "heads": {"choices": [1, 2, 4]}})
    sampler = SpaceSampler(specs, BaseModelShape(width=32, heads=4, dilations=[1, 2]))
    assert not sampler.conditional_heads
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    assert sampler(trial) is None and set(trial.params) == {"width", "heads"}


def test_dilation_schedule_from_blocks_and_growth():
    base = BaseModelShape(width=32, heads=4, dilations=[1, 2, 4, 8])
    assert base.blocks == 4 and base.growth == 2
    assert trial_overrides({"tcn_blocks": 3, "tcn_growth": 3}, base)["model.tcn.dilations"] == [1, 3, 9]
    assert trial_overrides({"tcn_blocks": 2}, base)["model.tcn.dilations"] == [1, 2]  # growth from the base
    row = readable_hparams({"tcn_blocks": np.int64(4), "lr": np.float64(0.01), "heads_w32": 4, "heads": 4}, base)
    assert row == {"tcn_blocks": 4, "lr": 0.01, "heads": 4, "dilations": "1-2-4-8"}
    assert type(row["tcn_blocks"]) is int and type(row["lr"]) is float
    overrides = trial_overrides({"lr": 0.002, "dropout": 0.3, "l3": 0.5, "model.eeg.dropout": 0.2}, base)
    assert overrides == {"pretrain.lr": 0.002, "finetune.lr": 0.002, "model.tcn.dropout": 0.3,
                         "model.dropout": 0.3, "loss.l3": 0.5, "model.eeg.dropout": 0.2}


def test_space_corners_are_checked_against_the_training_config():
    specs = parse_space({"model.eeg.dropout": {"low": 0.1, "high": 1.5}})
    with pytest.raises(ConfigError, match="space.model.eeg.dropout"):
        check_space_against_base(specs, "tiny", {})
    with pytest.raises(ConfigError, match="cannot be searched"):
        parse_space({"model.video.img_size": [32, 64]})
    with pytest.raises(ConfigError, match="'space.bogus'.*unknown hyperparameter"):
        parse_space({"bogus": [1, 2]})


def test_optuna_search_with_the_sampler_checkpoints_and_restores(tmp_path):
    """Tune pickles the searcher (plain pickle): the define-by-run space and the study history survive."""
    from ray.tune.search.optuna import OptunaSearch

    specs = parse_space({"width": {"choices": [12, 16]}, "heads": {"choices": [2, 3, 4]}, "lr": {"low": 1e-4,
                                                                                                   "high": 1e-2,
                                                                                                   "log": True}})
    searcher = OptunaSearch(space=SpaceSampler(specs, BaseModelShape(32, 4, [1, 2])), metric="m", mode="max",
                            seed=3)
    for i in range(3):
        config = searcher.suggest(f"t{i}")
        assert config["width"] % config["heads"] == 0
        searcher.on_trial_complete(f"t{i}", {"m": float(i), "training_iteration": 1})
    searcher.save(str(tmp_path / "s.pkl"))
    fresh = OptunaSearch()
    fresh.restore(str(tmp_path / "s.pkl"))
    assert len(fresh._ot_study.trials) == 3
    assert fresh.suggest("t3")["width"] in (12, 16)
    assert len(fresh._ot_study.trials) == 4
    pickle.loads(pickle.dumps(fresh))  # stays picklable


# ----------------------------------------------------------------------------- the data path


def test_outer_fold_held_out_and_rows_match_mercls_reader(dataset):
    """What the Ray Data path feeds a worker equals mercl's SegmentDataset batches, normalised."""
    from mercl.training.config import load_train_config

    base = load_train_config("tiny", {"val_fraction": 0.25})
    cfg = load_search_config(TEST_CONFIG, {"data.dataset": str(dataset)})
    data = prepare_search_data(cfg.data, base)
    rows = data.rows
    # the outer test fold never reaches the search: it is exactly mercl's fold 0 of the same seed
    from mercl.data.protocols import make_folds

    prepared = load_dataset(dataset)
    labels = prepared.labels("valence2")
    cv = make_folds("trial", prepared.subjects, prepared.trials, labels, 4, seed=base.seed)
    assert np.array_equal(data.split_rows(0, "test"), cv.folds[0].test)
    inner_train, inner_val = cv.inner_split(cv.folds[0].train, labels, 0.25)
    assert np.array_equal(data.split_rows(0, "train"), inner_train)
    assert np.array_equal(data.split_rows(0, "val"), inner_val)
    groups = prepared.trial_groups()
    assert not set(groups[inner_train]) & set(groups[cv.folds[0].test])

    # the map_batches function on the real shards, then the worker-side join
    parts = [part for f in data.eeg_files
             for part in select_split_rows(pq.read_table(f), rows, SPLIT_IDS["val"], tuple(data.shapes.eeg),
                                           split_column(0))]
    core = {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]}
    assert set(core["index"].tolist()) == set(inner_val.tolist())
    order = torch.argsort(core["index"])
    core = {k: v[order] for k, v in core.items()}
    ours = data.folds[0].norm.apply(data.stimuli.join(core))

    extra = (data.feature_table,) if data.feature_table is not None else ()
    reference = SegmentDataset(prepared, inner_val, "valence2", base.model.modalities, extra)
    theirs = data.folds[0].norm.apply(collate([reference[i] for i in range(len(reference))]))
    assert data.feature_table is not None and "video_feat" in ours and "video" not in ours
    assert set(ours) == set(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    assert not ours["present"][:, 1].all()  # the clip without audio is marked missing


def test_protocol_default_is_the_datasets_and_the_inner_split_follows_the_protocol(dataset, tmp_path):
    """``auto`` resolves as mercl evaluate resolves it; under ``stimulus`` no clip, under
    ``subject-stimulus`` no subject and no clip, is on two sides of any searched fold."""
    from mercl.data.protocols import default_protocol

    prepared = load_dataset(dataset)
    expected, _ = default_protocol(prepared.subjects, prepared.stimulus_ids, prepared.labels("valence2"), 2)
    plan = search.plan_search(str(TEST_CONFIG), {"data.dataset": str(dataset), "storage": str(tmp_path),
                                                  "data.protocol": "auto", "data.folds": 2})
    assert plan.cfg.data.protocol == expected == "stimulus" and "stimulus" in plan.protocol_note
    assert not any(tmp_path.iterdir())

    for protocol, nested in (("stimulus", True), ("subject-stimulus", False)):
        plan = search.plan_search(str(TEST_CONFIG), {"data.dataset": str(dataset), "storage": str(tmp_path),
                                                      "data.protocol": protocol, "data.folds": 2,
                                                      "data.nested": nested})
        data = prepare_search_data(plan.cfg.data, plan.base_cfg)
        assert sorted(data.folds) == ([0, 1] if nested else [0])
        for fold in data.folds:
            sides = {name: data.rows.iloc[data.split_rows(fold, name)] for name in ("train", "val", "test")}
            assert all(len(side) for side in sides.values())
            keys = ["stimulus"] + (["subject"] if protocol == "subject-stimulus" else [])
            for key in keys:
                values = {name: set(side[key]) for name, side in sides.items()}
                assert not values["train"] & values["val"], (protocol, fold, key)
                assert not values["train"] & values["test"] and not values["val"] & values["test"]
            # what the Ray Data map function keeps for each side is exactly that side
            for name in ("train", "val"):
                kept = [part["index"] for f in data.eeg_files for part in select_split_rows(
                    pq.read_table(f), data.rows, SPLIT_IDS[name], tuple(data.shapes.eeg), split_column(fold))]
                assert np.array_equal(np.sort(np.concatenate(kept)), data.split_rows(fold, name))
        if protocol == "subject-stimulus":
            assert data.folds[0].counts["unused_rows"] > 0  # rows sharing a viewer or a clip are left out


def test_heavy_tasks_ask_for_what_a_trial_worker_asks_for():
    """The feature cache, outer folds and final model go where a DDP rank would go (its GPU too)."""
    from tuning.config import ResourcesSection
    from tuning.remote import task_options

    gpu = task_options(ResourcesSection(num_workers=2, cpus_per_worker=4, gpus_per_worker=1))
    assert (gpu["num_cpus"], gpu["num_gpus"]) == (4, 1)
    cpu = task_options(ResourcesSection(cpus_per_worker=0.45, gpus_per_worker=0))
    assert cpu["num_cpus"] == 0.45 and "num_gpus" not in cpu and "resources" not in cpu
    a10g = {"accelerator_type:A10G": 0.001}
    pinned = task_options(ResourcesSection(cpus_per_worker=4, gpus_per_worker=1, custom_per_worker=a10g))
    assert pinned["resources"] == a10g and pinned["num_gpus"] == 1


def test_ranks_ask_for_the_custom_resources_of_the_config():
    """resources.custom_per_worker reaches every rank's resources_per_worker, beside its CPUs and GPUs."""
    from tuning.trial_driver import TrialSetup, rank_resources

    def ranks(**resources):
        return rank_resources(TrialSetup(base_config={}, base_shape=None, worker=None, datasets={}, runs_path="",
                                         num_workers=2, placement_strategy="PACK", max_failures=0,
                                         keep_checkpoints=1, **resources))

    assert ranks(cpus_per_worker=4, gpus_per_worker=1, custom_per_worker={"accelerator_type:A10G": 0.001}) == \
        {"CPU": 4, "GPU": 1, "accelerator_type:A10G": 0.001}
    assert ranks(cpus_per_worker=0.45, gpus_per_worker=0) == {"CPU": 0.45}


def test_fold_searcher_keeps_one_study_per_fold_through_save_and_restore(tmp_path):
    """Round robin over folds, every config names its fold, each fold's results reach its own study."""
    from ray.tune.search.optuna import OptunaSearch

    from tuning.nested import FoldSearcher, studies_in_state

    specs = parse_space({"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "width": [16, 32]})
    base = BaseModelShape(32, 4, [1, 2])

    def make():
        return FoldSearcher({f: OptunaSearch(space=SpaceSampler(specs, base), metric="m", mode="max", seed=0)
                             for f in (0, 1)}, per_fold=2, metric="m", mode="max")

    searcher = make()
    folds = []
    for i in range(3):
        config = searcher.suggest(f"t{i}")
        folds.append(config["fold"])
        searcher.on_trial_complete(f"t{i}", {"m": float(i), "training_iteration": 1})
    assert folds == [0, 1, 0]
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    restored = make()
    restored.restore(str(path))
    studies = studies_in_state(pickle.loads(path.read_bytes()))
    assert {f: len(s.trials) for f, s in studies.items()} == {0: 2, 1: 1}
    assert [t.value for t in restored.searchers[0]._ot_study.trials] == [0.0, 2.0]
    last = restored.suggest("t3")
    assert last["fold"] == 1 and restored.suggest("t4") == restored.FINISHED
    assert len(restored.searchers[1]._ot_study.trials) == 2  # the new trial joined fold 1's own study
    # the same seed in every fold: fold 1's first draw is fold 0's first draw
    assert {k: v for k, v in restored.searchers[1]._ot_study.trials[0].params.items()} == \
        restored.searchers[0]._ot_study.trials[0].params


def test_asha_compares_a_trial_only_with_trials_of_its_fold(tmp_path):
    from types import SimpleNamespace

    from tuning.asha import recording_asha

    asha = recording_asha(tmp_path / "asha" / "state.json", time_attr="global_epoch", metric="m", mode="max",
                          max_t=8, grace_period=1, reduction_factor=2)
    trials = {name: SimpleNamespace(trial_id=name, config={"fold": fold})
              for name, fold in (("a0", 0), ("b0", 0), ("a1", 1))}
    for trial in trials.values():
        asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, trials["a0"], {"global_epoch": 1, "m": 0.9}) == "CONTINUE"
    assert asha.on_trial_result(None, trials["b0"], {"global_epoch": 1, "m": 0.1}) == "STOP"  # below a0
    # fold 1's first trial is alone in its rungs, however poor next to fold 0
    assert asha.on_trial_result(None, trials["a1"], {"global_epoch": 1, "m": 0.05}) == "CONTINUE"
    saved = json.loads((tmp_path / "asha" / "state.json").read_text())
    assert set(saved["fold_brackets"]) == {"0", "1"} and saved["stopped"] == {"b0": 1}
    again = recording_asha(tmp_path / "asha" / "state.json", time_attr="global_epoch", metric="m", mode="max",
                           max_t=8, grace_period=1, reduction_factor=2)
    again = pickle.loads(pickle.dumps(again))  # as Tuner.restore gets it back from tuner.pkl
    late = SimpleNamespace(trial_id="c0", config={"fold": 0})
    again.on_trial_add(None, late)  # after a restore, fold 0's rungs still hold a0 and b0
    assert again.on_trial_result(None, late, {"global_epoch": 1, "m": 0.2}) == "STOP"


def test_summary_leads_with_the_scores_no_search_saw(tmp_path):
    from types import SimpleNamespace

    from tuning.results import SearchSummary, headline_text

    rows = [{"method": m, "fold": f, "accuracy": a, "macro_f1": a / 2}
            for f, accs in enumerate([(0.7, 0.5, 0.5), (0.6, 0.4, 0.4)])
            for m, a in zip(("mercl", "majority", "clip-majority"), accs, strict=True)]
    crossval = SimpleNamespace(results=pd.DataFrame(rows), protocol="stimulus", leaky=False)
    table = pd.DataFrame({"trial_id": ["t0", "t1"], "status": ["completed"] * 2, "fold": [0, 1], "lr": [0.1, 0.2],
                          "best_val_metric": [0.8, 0.9], "best_finetune_val_metric": [0.8, 0.9],
                          "last_val_metric": [0.8, 0.9], "epochs_run": [3, 3]})
    plain_text = headline_text(crossval, nested=False, test_fold=1, n_folds=2)
    assert plain_text == ("mercl 0.600, majority 0.400, clip-majority 0.400 "
                          "[stimulus; held-out test fold 1 of 2, never seen by the search]")
    nested_text = headline_text(crossval, nested=True, test_fold=0, n_folds=2)
    assert nested_text.startswith("mercl 0.650 ± 0.050, majority 0.450 ± 0.050, clip-majority 0.450 ± 0.050")
    assert "over 2 outer folds, each scored" in nested_text
    # a fold whose search finished no trial (e.g. within a time budget) has no outer score: the
    # headline says over how many folds its mean is, not "over 3"
    short = headline_text(crossval, nested=True, test_fold=0, n_folds=3)
    assert "mean ± std over 2 of 3 outer folds (no finished trial in the search of fold 2)" in short
    text = SearchSummary(name="s", exp_dir=tmp_path, table=table, best=table.iloc[1], hparam_names=["lr", "fold"],
                         metric="val_metric", data_text="d", protocol_text="stimulus, 2 folds", crossval=crossval,
                         test_fold=0, plots={}, study_trials=2, tensorboard_cmd="tb", nested=True,
                         fold_bests={0: table.iloc[0], 1: table.iloc[1]}, n_folds=2,
                         model_file=str(tmp_path / "model.pt"), final_text="all data").markdown()
    lines = text.splitlines()
    assert lines[2] == "## Headline: accuracy on data no part of the search saw"
    assert lines[4] == f"**{nested_text}**"
    assert "| 1 | `t1` | 0.9000 | 0.600 | 0.400 | 0.400 | 0.2 |" in lines
    assert f"final model: `{tmp_path / 'model.pt'}`" in text


# ----------------------------------------------------------------------------- outputs


def test_plots_and_summary_from_a_trial_table(tmp_path):
    from tuning.results import SearchSummary, study_from_table, write_plots

    specs = parse_space({"l1": {"low": 0.1, "high": 2.0}, "width": [16, 32], "tcn_blocks": [1, 2]})
    rng = np.random.default_rng(0)
    table = pd.DataFrame({
        "trial_id": [f"t{i}" for i in range(6)],
        "status": ["completed", "completed", "stopped_early", "completed", "stopped_early", "error"],
        "l1": rng.uniform(0.1, 2.0, 6), "width": [16, 32, 16, 32, 16, 32], "tcn_blocks": [1, 2, 1, 2, 2, 1],
        "dilations": ["1", "1-2", "1", "1-2", "1-2", "1"],
        "best_val_metric": [0.6, 0.7, 0.5, 0.65, 0.4, np.nan], "best_finetune_val_metric": [0.6, 0.7, np.nan,
                                                                                          0.65, np.nan, np.nan],
        "last_val_metric": [0.6, 0.68, 0.5, 0.6, 0.4, np.nan], "best_epoch": [4, 5, 2, 5, 2, -1],
        "epochs_run": [5, 5, 2, 5, 2, 0],
    })
    study = study_from_table(table, specs, "val_metric", "max")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states.count("PRUNED") == 2
    assert study.best_value == pytest.approx(0.7)
    plots = write_plots(study, tmp_path / "plots")
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert plots[name].endswith(".png"), plots[name]
        assert Path(plots[name]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = SearchSummary(name="s", exp_dir=tmp_path, table=table, best=table.iloc[1], hparam_names=["l1"],
                         metric="val_metric", data_text="d", protocol_text="trial-grouped, 4 folds",
                         crossval=None, test_fold=0, plots=plots, study_trials=6, tensorboard_cmd="tb").markdown()
    assert "**2 stopped early by ASHA**" in text and "Trial `t1`" in text


def test_trials_the_time_budget_cut_read_stopped_by_budget():
    """Tune's Result of a trial the budget stopped mid-run (never ``done``), of one it cut before its
    first report (no result files: no metrics, no config), and of one that returned."""
    from types import SimpleNamespace

    from tuning.results import trial_table

    def result(trial_id: str | None, epochs: int, done: bool, config=None):
        frame = pd.DataFrame({"global_epoch": range(1, epochs + 1), "val_metric": np.linspace(0.5, 0.6, epochs),
                              "stage": "finetune"})
        metrics = {"trial_id": trial_id, "done": done} if trial_id else {}
        return SimpleNamespace(metrics=metrics, config=config, error=None, metrics_dataframe=frame if epochs else None,
                               path=f"/x/fold0_run_trial_{trial_id or 'a5945669'}_5_alpha=0.5")

    base = BaseModelShape(width=32, heads=4, dilations=[1, 2])
    results = [result("aaaa0001", 5, True, {"l1": 1.0}), result("aaaa0002", 3, False, {"l1": 0.5}),
               result(None, 0, False), result("aaaa0004", 5, False, {"l1": 0.2})]
    with_budget = trial_table(results, base, {}, "val_metric", "max", planned_epochs=5, budget=True)
    assert with_budget.set_index("trial_id")["status"].to_dict() == {
        "aaaa0001": "completed", "aaaa0002": "stopped_by_budget", "a5945669": "stopped_by_budget",
        "aaaa0004": "completed"}  # the last one finished its last epoch before the budget cut it
    without = trial_table(results, base, {}, "val_metric", "max", planned_epochs=5)
    assert without.set_index("trial_id")["status"].to_dict()["a5945669"] == "unfinished"


def test_tensorboard_hparams_are_plain_values_with_a_readable_schedule(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from tuning.hparams_view import HParamsWriter

    specs = parse_space({"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "tcn_blocks": [2, 4], "tcn_growth": [2]})
    writer = HParamsWriter(tmp_path, specs, BaseModelShape(32, 4, [1, 2]), "val_metric", "max")
    for epoch, value in enumerate([0.5, 0.7, 0.6], start=1):
        writer.result("abc", {"global_epoch": epoch, "val_metric": np.float64(value), "stage": "pretrain"})
    writer.hparams("abc", {"lr": np.float64(0.001), "tcn_blocks": np.int64(4), "tcn_growth": 2}, "completed")
    acc = EventAccumulator(str(tmp_path / "abc"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("epoch/val_metric")] == pytest.approx([0.5, 0.7, 0.6])
    assert acc.Scalars("hparam/best_val_metric")[0].value == pytest.approx(0.7)
    content = acc.PluginTagToContent("hparams")
    info = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = info.session_start_info.hparams
    assert hp["dilations"].string_value == "1-2-4-8"
    assert hp["tcn_blocks"].number_value == 4 and hp["lr"].number_value == pytest.approx(0.001)
    assert hp["status"].string_value == "completed"
    assert json.dumps({k: str(v) for k, v in hp.items()})  # every value is a plain proto value


def test_in_memory_ranks_take_equal_disjoint_shares_of_one_seeded_permutation():
    """DDP ranks must run the same number of steps; together they see each row at most once per epoch."""
    from tuning.worker import ShardFeed, WorkerSetup

    class Rows:  # what ShardFeed reads from a Ray Dataset: iter_torch_batches
        def __init__(self, block_order=(0, 10, 20)):
            self.block_order = block_order

        def iter_torch_batches(self, batch_size, device):
            ids = torch.arange(23)
            for start in self.block_order:
                yield {"label": ids[start:start + 10], "row": ids[start:start + 10], "index": ids[start:start + 10]}

    class Identity:
        def join(self, core):
            return core

        def apply(self, batch):
            return batch

    setup = WorkerSetup(shapes=None, class_names=[], norm=Identity(), stimuli_ref=None, in_memory=True)
    feeds = [ShardFeed(Rows(), setup, Identity(), seed=3, rank=r, world=2) for r in range(2)]

    def epoch(feed, e):
        return torch.cat([b["row"] for b in feed.batches(e, 4, shuffle=True)]).tolist()

    shares = [epoch(f, 0) for f in feeds]
    assert len(shares[0]) == len(shares[1]) == 8  # 11 rows each, 2 full batches of 4
    assert not set(shares[0]) & set(shares[1])
    assert epoch(feeds[0], 0) == shares[0] and epoch(feeds[0], 1) != shares[0]  # seeded by epoch
    whole = [torch.cat([b["row"] for b in f.batches(0, 4, shuffle=False)]).tolist() for f in feeds]
    assert sorted(set(whole[0]) | set(whole[1])) == list(range(22))  # one row dropped for equal shares
    # blocks arriving in another order (Ray Data's parallel reads) give the same batches
    again = ShardFeed(Rows(block_order=(20, 0, 10)), setup, Identity(), seed=3, rank=0, world=2)
    assert epoch(again, 0) == shares[0] and epoch(again, 1) == epoch(feeds[0], 1)


def test_a_trial_resumed_at_its_last_checkpoint_reports_its_final_epoch_again(dataset):
    """A search driver killed after a trial's last checkpoint, before Tune saved that the trial
    ended, restores it as running: its run resumes at the end and trains nothing. It must still
    tell Tune its final result (and that it restarted), or Optuna and trials.csv keep the epoch
    Tune's saved state held. Resumed mid-run, it reports the remaining epochs and nothing more."""
    from mercl.training.config import load_train_config
    from mercl.training.crossval import train_split
    from tuning.worker import CHECKPOINT_FILE, TuneReporter

    prepared = load_dataset(dataset)
    rows = np.arange(len(prepared))
    val = np.isin(prepared.trial_groups(), np.unique(prepared.trial_groups())[::4])
    cfg = load_train_config("tiny", {"pretrain.epochs": 1, "finetune.epochs": 2})
    epochs = {"pretrain": 1, "finetune": 2}

    def run(resume=None, restarts=0, rank=0):
        calls = []
        reporter = TuneReporter(lambda metrics, folder=None: calls.append((metrics, folder)), rank, 1, epochs,
                                restarts)
        train_split(prepared, "valence2", rows[~val], rows[val], cfg, on_epoch_end=reporter.on_epoch_end,
                    resume=resume)
        reporter.finish(resume)
        return calls

    first = run()
    assert [m["global_epoch"] for m, _ in first] == [1, 2, 3] and all(folder for _, folder in first)
    assert [m["stage"] for m, _ in first] == ["pretrain", "finetune", "finetune"]
    states = [torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=True) for _, folder in first]

    again = run(resume=states[-1], restarts=1)  # resumed at its end: the final epoch once more
    assert len(again) == 1 and again[0][1] is None
    assert again[0][0] == {**first[-1][0], "restarts": 1}
    middle = run(resume=states[0], restarts=1, rank=1)  # mid-run, rank 1: two epochs, no checkpoints
    assert [(m["global_epoch"], m["restarts"], folder) for m, folder in middle] == [(2, 1, None), (3, 1, None)]


def test_plain_and_nested_searches_differ_only_through_their_folds_object():
    """OneFold / EveryFold (tuning.nested) decide the trainable, the setup, the searcher, the best rows
    and the outer configs; the driver asks them instead of branching on a flag."""
    from ray.tune.search import Searcher

    from tuning.nested import (
        EveryFold,
        FoldSearcher,
        OneFold,
        fold_trial_name,
        run_fold_trial,
        searched_folds,
    )
    from tuning.trial_driver import run_trial

    plain, nested = searched_folds(False, 1), searched_folds(True, 1)
    assert isinstance(plain, OneFold) and isinstance(nested, EveryFold)
    setups = {0: "setup0", 1: "setup1"}
    assert plain.trainable() is run_trial and plain.trial_setup(setups) == "setup1"
    assert nested.trainable() is run_fold_trial and nested.trial_setup(setups) == setups

    class Stub(Searcher):
        def suggest(self, trial_id):
            return {}

    searcher, n, name = plain.searcher(Stub, 4, [1], "val_metric", "max")
    assert isinstance(searcher, Stub) and n == 4 and name is None
    searcher, n, name = nested.searcher(Stub, 4, [0, 1], "val_metric", "max")
    assert isinstance(searcher, FoldSearcher) and sorted(searcher.searchers) == [0, 1] and n == 8
    assert name is fold_trial_name

    table = pd.DataFrame({"fold": [0, 0, 1], "trial_id": ["a", "b", "c"], "score": [0.5, 0.7, 0.6]})
    best = lambda rows: rows.loc[rows["score"].idxmax()] if len(rows) else None  # noqa: E731
    assert plain.fold_bests(table, [1], best) == {}
    bests = nested.fold_bests(table, [0, 1], best)
    assert {f: r["trial_id"] for f, r in bests.items()} == {0: "b", 1: "c"}
    assert plain.outer_configs({"best": 1}, {}, 3) == {0: {"best": 1}, 1: {"best": 1}, 2: {"best": 1}}
    assert nested.outer_configs({"best": 1}, {0: {"own": 0}}, 3) == {0: {"own": 0}}
    assert plain.scores_outer({}) and not nested.scores_outer({}) and nested.scores_outer(bests)
