#!/usr/bin/env python
"""Benchmark of the distributed search on this machine; prints every figure in one run.

0. Trial shapes (the default, issue 19): one table from one run, on the same data and the same
   sampled configurations (the first search's, replayed as ``points_to_evaluate``), with ASHA:
   * ``train x2``: today's path, every trial a Ray Train run of 2 DDP workers, 1 trial at a time;
   * ``train x1``: a Ray Train run of 1 worker per trial (the warm path's cold reference);
   * ``inprocess x1``: the warm path (``runner: inprocess``), 1 trial at a time and 2 at a time;
   * ``optuna``: an in-process Optuna loop in this process (one torch thread) over the same
     configurations, epochs and pruning (Optuna's ``SuccessiveHalvingPruner``, the same grace
     period and reduction factor as ASHA): the floor.
   For each: trials/hour, the trial phase (``Tuner.fit``'s wall time; the loop's for optuna)
   against the floor, epochs trained, the trial phase per epoch trained against the floor's
   (ASHA and Optuna's pruner stop trials at different epochs), and the per-trial time to the first epoch split into
   actor/process start, process group, imports, data reaching the worker, model build and first
   epoch (medians over the trials; warm trials after an actor's first shown apart), beside Tune's
   own time to the first report (``time_this_iter_s`` of iteration 1).
   DDP: the seconds per later epoch of ``train x2`` against ``train x1`` at the same configs.

Older sections (flags):

1. (``--asha-savings``) Trials per hour: a search of N trials with ASHA (grace 1 epoch, reduction factor 3) over
   `tuning/configs/demo.yaml`'s space with the `tiny` training config, on a synthetic study
   (4-class quadrant labels), on a local Ray cluster.
2. (``--asha-savings``) What ASHA saved: the same N sampled configurations run again to the end (no scheduler;
   Optuna replays the first search's configurations as ``points_to_evaluate``). Compute is
   counted as epochs trained and as trial-seconds; both searches' best inner-validation scores
   are printed beside it (target: ASHA at <= 1/3 of the compute for the same best).
3. (``--overhead``) The overhead of a Ray Train trial over the same training loop in-process: one
   configuration trained with ``mercl.training.crossval.train_split`` in this process vs. the
   same configuration as a one-trial search with one Ray Train worker (both one torch thread),
   sized to take about a minute in-process (target <= 10 %): a short in-process run measures
   the seconds per epoch first, then the epochs are set for ``--overhead-seconds``. The
   in-process time is the mean of one run before and one after the Ray Train trial (this kind
   of VM drifts in speed by 20-50 % within minutes). The overhead
   is split into start-up and per-epoch cost, and the start-up set beside Ray Train's own floor
   on this machine: the trial time of an empty TorchTrainer trial (its workers only report
   once), measured in the same run.
4. (``--nested-trials N``) Nested search: a 4-fold nested search (one search per outer fold, ``--nested-trials`` trials
   each, all in one Tune run) vs. one plain search of the same total trial count, both under
   the data's default protocol, no outer scores or final model (the searches alone): wall
   time of ``Tuner.fit`` and of the whole run (data preparation included: the nested search
   materialises train/validation datasets for every fold), and trials per hour.

5. (``--budget-minutes M``) Search value at a fixed budget: a nested search (``--nested-folds``
   outer folds, a study per fold, round robin) given M minutes of trials (``time_budget_s``;
   the trial count is whatever fits) in the old trial shape (Ray Train, 2 workers, 1 at a time)
   and in the new default (warm, 1 worker, 2 at a time); each fold's best config is then trained
   on the fold's training side and scored on its test rows (the nested headline, mean +- std
   over the folds). Beside them, on the same outer folds and epochs: the base config with no
   search (the defaults' cross-validation), majority and clip-majority. Cheaper trials buy more
   trials in the same budget; this shows whether that buys a better headline.

    python bench/search.py [--trials 8] [--label quadrant4] [--work out/bench-search] [--shapes ...]
        [--asha-savings] [--overhead [--overhead-seconds 60]] [--nested-trials 4] [--nested-folds 4]
        [--budget-minutes 10 [--no-shapes]]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_dataset(work: Path, subjects: int, stimuli: int, duration: float) -> Path:
    """A synthetic study prepared with 32 px frames (reused when already there)."""
    from mercl.data.prepare import load_prepare_config, prepare
    from mercl.data.synth import SynthConfig, synthesize

    raw = work / "raw"
    if not (raw / "manifest.csv").is_file():
        synthesize(raw, SynthConfig(subjects=subjects, stimuli=stimuli, duration=duration, video_size=32, fps=4),
                   force=True)
    config = load_prepare_config(None, {"video.size": 32, "video.fps": 1.0})
    return prepare(raw, "manifest", work / "shards", config=config, workers=2, progress=False).dataset_dir


def quiet(_msg: str) -> None:
    pass


def plan_for(dataset: Path, work: Path, name: str, overrides: dict):
    from tuning.search import plan_search

    base = {"data.dataset": str(dataset), "storage": str(work / "searches"), "name": name,
            "crossval.enabled": False, "progress": "quiet"}
    return plan_search(str(ROOT / "tuning" / "configs" / "demo.yaml"), {**base, **overrides})


def fresh(plan) -> None:
    import shutil

    if plan.exp_dir.exists():
        shutil.rmtree(plan.exp_dir)


def in_process_seconds(plan) -> tuple[float, float]:
    """Train the plan's base config on its inner split in this process (1 torch thread): (seconds, best val)."""
    import torch

    from mercl.data.reader import load_dataset
    from mercl.training.crossval import train_split
    from tuning.data import prepare_search_data

    data = prepare_search_data(plan.cfg.data, plan.base_cfg)
    prepared = load_dataset(plan.cfg.data.dataset, verify=False)
    train_rows = data.split_rows(plan.cfg.data.test_fold, "train")
    val_rows = data.split_rows(plan.cfg.data.test_fold, "val")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        run = train_split(prepared, plan.cfg.data.label, train_rows, val_rows, plan.base_cfg)
        return time.perf_counter() - start, run.result.best_val_metric
    finally:
        torch.set_num_threads(threads)


def _empty_train_loop(config: dict) -> None:
    import ray.train

    ray.train.report({"epoch": 1})


def _empty_trial(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    ray.train.torch.TorchTrainer(
        _empty_train_loop,
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": config["cpus"]}),
        run_config=ray.train.RunConfig(name=ray.tune.get_context().get_trial_id(), storage_path=config["runs"],
                                       callbacks=[TuneReportCallback()]),
    ).fit()


def ray_train_floor_seconds(work: Path, cpus_per_worker: float) -> float:
    """Tune's trial time of a TorchTrainer trial whose workers only report once (same resources):
    what any Ray Train trial costs on this machine before its training loop runs."""
    import shutil

    import ray.tune

    runs = work / "floor"
    shutil.rmtree(runs, ignore_errors=True)
    trainable = ray.tune.with_resources(_empty_trial, {"cpu": 0.01})
    results = ray.tune.Tuner(
        trainable, param_space={"cpus": cpus_per_worker, "runs": str(runs / "train")},
        run_config=ray.tune.RunConfig(storage_path=str(runs), name="empty", verbose=0),
    ).fit()
    return float(results[0].metrics["time_total_s"])


def epoch_times(exp_dir: Path) -> tuple[float, float]:
    """(seconds until the first epoch was reported, mean seconds per later epoch) of a one-trial search."""
    import glob
    import json

    (path,) = glob.glob(str(exp_dir / "run_trial_*" / "result.json"))
    times = [json.loads(line)["time_total_s"] for line in Path(path).read_text().splitlines() if line.strip()]
    return times[0], (times[-1] - times[0]) / max(len(times) - 1, 1)


def one_trial(label: str, pre: int, fine: int) -> dict:
    """Overrides of a one-trial search with one Ray Train worker, ``pre``+``fine`` epochs, no ASHA."""
    return {"train_overrides.pretrain.epochs": pre, "train_overrides.finetune.epochs": fine, "data.label": label,
            "num_samples": 1, "resources.runner": "train", "resources.num_workers": 1, "resources.cpus_per_worker": 0.9,
            "scheduler.asha": False, "space": {"l1": {"choices": [1.0]}}}


def overhead_epochs(dataset: Path, work: Path, args) -> tuple[int, int]:
    """(pre-training, fine-tuning) epochs, 1:3, for about ``--overhead-seconds`` of in-process training."""
    if args.overhead_epochs:
        pre, fine = (int(x) for x in args.overhead_epochs.split(","))
        return pre, fine
    seconds, _ = in_process_seconds(plan_for(dataset, work, "bench-calibrate", one_trial(args.label, 20, 60)))
    epochs = args.overhead_seconds / (seconds / 80)
    pre = max(1, round(epochs / 4))
    print(f"overhead comparison: {seconds / 80:.3f} s per epoch in-process -> {pre}+{3 * pre} epochs "
          f"for ~{args.overhead_seconds:g} s")
    return pre, 3 * pre


def report_searches(a, b, args, pre: int, fine: int) -> None:
    """Print figures 1 and 2 (trials per hour; what ASHA saved)."""
    key = "best_finetune_val_metric"

    def best(table) -> float:
        done = table[table["status"] == "completed"][key].dropna()
        return float(done.max()) if len(done) else float("nan")

    same = sorted(map(str, a.table["lr"])) == sorted(map(str, b.table["lr"]))
    n = len(a.table)
    print(f"search with ASHA: {n} trials in {a.tuning_seconds:.0f} s -> {3600 * n / a.tuning_seconds:.1f} trials/hour "
          f"({args.trials} x (2 workers DDP, {pre}+{fine} epochs)); without ASHA: "
          f"{3600 * len(b.table) / b.tuning_seconds:.1f} trials/hour")
    ea, eb = int(a.table["epochs_run"].sum()), int(b.table["epochs_run"].sum())
    sa, sb = float(a.table["time_s"].sum()), float(b.table["time_s"].sum())
    stopped = int((a.table["status"] == "stopped_early").sum())
    print(f"ASHA stopped {stopped} of {n} trials; compute with ASHA vs. the same configurations to the end"
          f"{'' if same else ' (WARNING: the replayed configurations differ)'}:")
    print(f"  epochs trained   {ea:5d} vs {eb:5d}  -> {ea / eb:.2f}x  (target <= 0.33)")
    print(f"  trial-seconds    {sa:5.0f} vs {sb:5.0f}  -> {sa / sb:.2f}x  (per-trial start-up is not saved by ASHA)")
    print(f"  search wall time {a.tuning_seconds:5.0f} vs {b.tuning_seconds:5.0f}  -> "
          f"{a.tuning_seconds / b.tuning_seconds:.2f}x")
    print(f"  best inner-validation accuracy: {best(a.table):.3f} with ASHA, {best(b.table):.3f} run to the end")


def nested_vs_plain(dataset: Path, work: Path, epochs: dict, per_fold: int, folds: int = 4):
    """(nested outcome, plain outcome, protocol): a ``folds``-fold nested search of ``per_fold`` trials per
    fold and one search of ``folds * per_fold`` trials, same space, epochs and resources."""
    from tuning.search import execute_search

    common = {**epochs, "crossval.enabled": False, "final_model": False, "data.folds": folds}
    nested = plan_for(dataset, work, "bench-nested", {**common, "num_samples": per_fold, "data.nested": True})
    fresh(nested)
    n = execute_search(nested, say=quiet)
    plain = plan_for(dataset, work, "bench-plain", {**common, "num_samples": folds * per_fold})
    fresh(plain)
    p = execute_search(plain, say=quiet)
    return n, p, nested.cfg.data.protocol


def report_nested(n, p, protocol: str, per_fold: int, folds: int = 4) -> None:
    """Print figure 4: the nested search beside one search of the same total trial count."""
    for name, o in ((f"nested ({folds} folds x {per_fold} trials)", n), (f"plain ({folds * per_fold} trials)", p)):
        trials = len(o.table)
        print(f"  {name:28s} {trials:3d} trials: Tuner.fit {o.tuning_seconds:6.0f} s -> "
              f"{3600 * trials / o.tuning_seconds:5.1f} trials/hour; whole run {o.total_seconds:6.0f} s -> "
              f"{3600 * trials / o.total_seconds:5.1f} trials/hour; epochs trained {int(o.table['epochs_run'].sum())}")
    print(f"  nested / plain wall time: Tuner.fit {n.tuning_seconds / p.tuning_seconds:.2f}x, whole run "
          f"{n.total_seconds / p.total_seconds:.2f}x  [protocol {protocol}; the nested search's {folds} held-out "
          f"scores need {folds} outer-fold trainings more, not counted here]")


SHAPES = {  # name: resources overrides (every rank 0.45 CPU: one torch thread; 2 at a time leave Ray Data a CPU)
    "train x2, 1 at a time": {"resources.runner": "train", "resources.num_workers": 2,
                              "resources.max_concurrent_trials": 1},
    "inprocess x1, 1 at a time": {"resources.runner": "inprocess", "resources.num_workers": 1,
                                  "resources.max_concurrent_trials": 1},
    "inprocess x1, 2 at a time": {"resources.runner": "inprocess", "resources.num_workers": 1,
                                  "resources.max_concurrent_trials": 2},
    "train x1, 1 at a time": {"resources.runner": "train", "resources.num_workers": 1,
                              "resources.max_concurrent_trials": 1},
}
PHASES = ("actor_start", "process_group", "imports", "data", "model", "first_epoch")


def result_rows(exp_dir: Path) -> list[list[dict]]:
    """Every trial's result.json rows."""
    import glob
    import json

    out = []
    for path in glob.glob(str(exp_dir / "*run_trial_*" / "result.json")):
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if rows:
            out.append(rows)
    return out


def read_timings(folder: Path) -> list[dict]:
    import json

    path = folder / "timings.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def run_shape(dataset: Path, work: Path, name: str, overrides: dict, epochs: dict, points: list[dict] | None):
    """One search of the shape; returns its figures (dict)."""
    import statistics

    from tuning.search import execute_search

    slug = "bench-" + "".join(c if c.isalnum() else "-" for c in name)
    plan = plan_for(dataset, work, slug, {**epochs, **overrides, "final_model": False})
    fresh(plan)
    plan.points_to_evaluate = points
    plan.timings_dir = str(work / "timings" / slug)
    fresh_dir(Path(plan.timings_dir))
    outcome = execute_search(plan, say=quiet)
    rows = result_rows(plan.exp_dir)
    later = [r["time_this_iter_s"] for trial in rows for r in trial[1:] if "global_epoch" in r]
    timings = read_timings(Path(plan.timings_dir))
    configs = [dict(r.config) for r in sorted(outcome.results, key=lambda r: r.metrics.get("trial_id", ""))]
    return {"name": name, "trials": len(outcome.table), "seconds": outcome.tuning_seconds,
            "epochs": int(outcome.table["epochs_run"].sum()),
            "stopped": int((outcome.table["status"] == "stopped_early").sum()),
            "first_report": statistics.median(trial[0]["time_this_iter_s"] for trial in rows),
            "epoch_s": statistics.median(later) if later else float("nan"),
            "cold": [t for t in timings if t.get("trial_in_process", 1) == 1],
            "warm": [t for t in timings if t.get("trial_in_process", 1) > 1],
            "configs": configs, "best": float(outcome.table["best_finetune_val_metric"].max())}


def fresh_dir(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def optuna_floor(dataset: Path, work: Path, epochs: dict, configs: list[dict], grace: int, reduction: float) -> dict:
    """The same configurations trained in this process (one torch thread) by an Optuna loop with
    Optuna's successive-halving pruner on the validation metric of every epoch of both stages."""
    import statistics

    import optuna
    import torch

    from mercl.data.reader import load_dataset
    from mercl.training.config import train_config_from_dict
    from mercl.training.crossval import train_split
    from tuning.data import prepare_search_data
    from tuning.search import _setup_like
    from tuning.trial_driver import trial_train_config

    plan = plan_for(dataset, work, "bench-optuna", epochs)
    data = prepare_search_data(plan.cfg.data, plan.base_cfg)
    prepared = load_dataset(plan.cfg.data.dataset, verify=False)
    fold = plan.cfg.data.test_fold
    train_rows, val_rows = data.split_rows(fold, "train"), data.split_rows(fold, "val")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.SuccessiveHalvingPruner(
        min_resource=grace, reduction_factor=int(reduction), min_early_stopping_rate=0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    firsts, later, trained, pruned = [], [], 0, 0
    started = time.perf_counter()
    try:
        for params in configs:
            trial = study.ask()
            cfg = train_config_from_dict(trial_train_config(params, _setup_like(plan)))
            marks = [time.perf_counter()]  # the trial's start, then every epoch's end

            def on_epoch_end(report, trial=trial, marks=marks):
                marks.append(time.perf_counter())
                trial.report(float(report.metrics["val_metric"]), int(report.global_epoch))
                if trial.should_prune():
                    raise optuna.TrialPruned()

            try:
                run = train_split(prepared, plan.cfg.data.label, train_rows, val_rows, cfg, on_epoch_end=on_epoch_end)
                study.tell(trial, float(run.result.best_val_metric))
            except optuna.TrialPruned:
                pruned += 1
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            firsts.append(marks[1] - marks[0])
            later += [b - a for a, b in zip(marks[1:], marks[2:], strict=False)]
            trained += len(marks) - 1
    finally:
        torch.set_num_threads(threads)
    return {"name": "optuna in-process (floor)", "trials": len(configs), "seconds": time.perf_counter() - started,
            "epochs": trained, "stopped": pruned, "first_report": statistics.median(firsts),
            "epoch_s": statistics.median(later) if later else float("nan"), "cold": [], "warm": [],
            "best": float(study.best_value) if study.best_trial else float("nan")}


def phase_text(timings: list[dict]) -> str:
    import statistics

    if not timings:
        return "-"
    return " ".join(f"{statistics.median(t.get(p, 0.0) for t in timings):5.2f}" for p in PHASES)


def report_shapes(rows: list[dict], floor: dict) -> None:
    """The trial-shape table (section 0)."""
    # ASHA and Optuna's pruner stop different trials at different epochs: "x floor/epoch" sets the
    # trial phase per epoch trained beside the floor's, i.e. against the same epochs in-process
    floor_per_epoch = floor["seconds"] / floor["epochs"]
    print(f"{'shape':28s} {'trials':>6s} {'trials/h':>8s} {'trial phase':>11s} {'x floor':>7s} {'epochs':>6s} "
          f"{'x floor/epoch':>13s} {'stopped':>7s} {'1st report':>10s} {'s/epoch':>7s} {'best val':>8s}")
    for row in [*rows, floor]:
        print(f"{row['name']:28s} {row['trials']:6d} {3600 * row['trials'] / row['seconds']:8.0f} "
              f"{row['seconds']:10.1f}s {row['seconds'] / floor['seconds']:7.2f} {row['epochs']:6d} "
              f"{row['seconds'] / row['epochs'] / floor_per_epoch:13.2f} "
              f"{row['stopped']:7d} {row['first_report']:9.2f}s {row['epoch_s']:7.3f} {row['best']:8.3f}")
    print(f"time to the first epoch, medians in s ({' / '.join(PHASES)}):")
    for row in rows:
        print(f"  {row['name']:28s} first trial of a process: {phase_text(row['cold'])}")
        if row["warm"]:
            print(f"  {'':28s} later trials (warm actor): {phase_text(row['warm'])}")
    print(f"  {floor['name']:28s} model + data + first epoch in this process: {floor['first_report']:.2f}")
    by = {r["name"]: r for r in rows}
    one, two = by.get("train x1, 1 at a time"), by.get("train x2, 1 at a time")
    if one and two:
        print(f"DDP on this machine (same configs): 2 gloo ranks {two['epoch_s']:.3f} s per later epoch vs 1 rank "
              f"{one['epoch_s']:.3f} s -> x{one['epoch_s'] / two['epoch_s']:.2f} speed-up")


def trial_shapes(dataset: Path, work: Path, epochs: dict, args) -> None:
    """Section 0: every shape on the same sampled configurations, then the in-process floor."""
    names = [n for n in SHAPES if not args.shapes or n in args.shapes.split(";")]
    from tuning.config import parse_set

    device = {"resources.gpus_per_worker": args.gpus_per_worker, **parse_set(args.set)}
    if args.cpus_per_worker is not None:
        device["resources.cpus_per_worker"] = args.cpus_per_worker
    rows, points = [], None
    for name in names:
        row = run_shape(dataset, work, name, {**SHAPES[name], **device}, epochs, points)
        points = points or row["configs"]
        rows.append(row)
        print(f"  ran {name}: {row['seconds']:.0f} s", flush=True)
    floor = optuna_floor(dataset, work, {**epochs, **parse_set(args.set)}, points, epochs["scheduler.grace_period"],
                         epochs["scheduler.reduction_factor"])
    report_shapes(rows, floor)


BUDGET_SHAPES = ("train x2, 1 at a time", "inprocess x1, 2 at a time")  # the old default, the new one


def outer_table(results) -> dict:
    """{method: accuracy per outer fold (a Series indexed by fold)} of a crossval results table."""
    return {method: part.set_index("fold")["accuracy"] for method, part in results.groupby("method")}


def budget_search(dataset: Path, work: Path, name: str, epochs: dict, budget_s: float, folds: int) -> dict:
    """A nested search of the shape ``name`` with ``budget_s`` seconds of trials; its outer scores."""
    import pandas as pd

    from tuning.results import STATUS_BUDGET, STATUS_COMPLETED, STATUS_STOPPED
    from tuning.search import execute_search

    slug = "bench-budget-" + "".join(c if c.isalnum() else "-" for c in name)
    plan = plan_for(dataset, work, slug, {**epochs, **SHAPES[name], "num_samples": 10_000, "time_budget_s": budget_s,
                                          "data.nested": True, "data.folds": folds, "crossval.enabled": True,
                                          "final_model": False})
    fresh(plan)
    outcome = execute_search(plan, say=quiet)
    table = outcome.table
    status = table["status"].value_counts()
    return {"name": name, "trials": len(table), "seconds": outcome.tuning_seconds,
            "scoring": outcome.total_seconds - outcome.tuning_seconds,
            "completed": int(status.get(STATUS_COMPLETED, 0)), "epochs": int(table["epochs_run"].sum()),
            "stopped": int(status.get(STATUS_STOPPED, 0)), "cut": int(status.get(STATUS_BUDGET, 0)),
            "per_fold": table.groupby("fold").size().to_dict() if "fold" in table else {},
            "scores": outer_table(pd.read_csv(plan.exp_dir / "crossval" / "results.csv"))}


def defaults_crossval(dataset: Path, work: Path, epochs: dict, folds: int) -> dict:
    """The base config, no search, on the nested searches' outer folds (same epochs, inner split, tasks)."""
    from mercl.config import to_dict
    from tuning.data import prepare_search_data
    from tuning.outer import crossval_result
    from tuning.remote import run_outer_folds

    plan = plan_for(dataset, work, "bench-budget-defaults", {**epochs, "data.nested": True, "data.folds": folds})
    data = prepare_search_data(plan.cfg.data, plan.base_cfg)
    started = time.perf_counter()
    configs = {fold: to_dict(plan.base_cfg) for fold in range(data.n_folds)}
    outputs = run_outer_folds(str(data.dataset_dir), data.label, configs, data.protocol, data.n_folds,
                              plan.cfg.resources, 0, quiet)
    result = crossval_result(data, outputs, plan.base_cfg, None)
    return {"seconds": time.perf_counter() - started, "scores": outer_table(result.results),
            "protocol": data.protocol, "train": plan.cfg.train}


def search_value(dataset: Path, work: Path, epochs: dict, args) -> None:
    """Section 5: the nested headline each trial shape reaches in the same budget, beside no search."""
    import pandas as pd

    budget_s = 60 * args.budget_minutes
    rows = []
    for name in BUDGET_SHAPES:
        rows.append(budget_search(dataset, work, name, epochs, budget_s, args.nested_folds))
        print(f"  ran the budgeted nested search, {name}: {rows[-1]['trials']} trials", flush=True)
    base = defaults_crossval(dataset, work, epochs, args.nested_folds)

    def cell(scores: dict, method: str) -> str:
        accuracy = scores.get(method)
        return "-" if accuracy is None else f"{accuracy.mean():.3f} +- {accuracy.std(ddof=0):.3f}"

    def gain(scores: dict) -> float:
        """The search's mean gain over no search on the folds it scored (a fold whose search
        finished no trial within the budget has no best config, hence no outer score)."""
        ours = scores.get("mercl", pd.Series(dtype=float))
        return float((ours - base["scores"]["mercl"].loc[ours.index]).mean())

    print(f"search value at a fixed budget: {args.budget_minutes:g} min of trials, nested search over "
          f"{args.nested_folds} outer folds [{base['protocol']}; mean +- std of the outer folds' "
          f"test accuracy, each fold scored by a search that never saw it]:")
    print(f"  {'':42s} {'trials':>6s} {'done':>5s} {'ASHA':>5s} {'cut':>4s} {'epochs':>6s} {'per fold':>14s} "
          f"{'trials s':>8s} {'scoring s':>9s} {'folds':>5s} {'mercl':>15s} {'vs no search':>12s}")
    blank = f"{'':6s} {'':5s} {'':5s} {'':4s} {'':6s} {'':>14s} {'':8s}"
    for row in rows:
        per_fold = "/".join(str(row["per_fold"][f]) for f in sorted(row["per_fold"]))
        print(f"  {'nested search, ' + row['name']:42s} {row['trials']:6d} {row['completed']:5d} {row['stopped']:5d} "
              f"{row['cut']:4d} {row['epochs']:6d} {per_fold:>14s} {row['seconds']:8.0f} {row['scoring']:9.0f} "
              f"{len(row['scores'].get('mercl', ())):>2d}/{args.nested_folds:<2d} {cell(row['scores'], 'mercl'):>15s} "
              f"{gain(row['scores']):+12.3f}")
    print(f"  {'no search: the ' + base['train'] + ' defaults':42s} {blank} {base['seconds']:9.0f} "
          f"{len(base['scores']['mercl']):>2d}/{args.nested_folds:<2d} {cell(base['scores'], 'mercl'):>15s}")
    for method in ("majority", "clip-majority"):
        print(f"  {method:42s} {blank} {'':9s} {'':5s} {cell(base['scores'], method):>15s}")
    print("  (done / ASHA / cut: trials completed, stopped by ASHA, cut by the budget; trials s: Tuner.fit, "
          "the budget; scoring s: the rest of the run: data, each fold's best config trained and tested, outputs; folds: outer folds scored; vs no search: the mean gain over the defaults on those folds)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per search (default 8)")
    parser.add_argument("--label", default="quadrant4", help="label scheme (default quadrant4: 4 classes)")
    parser.add_argument("--epochs", default="4,12", help="pre-training,fine-tuning epochs per trial")
    parser.add_argument("--shapes", default="", help="section 0: only these shapes, ';'-separated (default all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="section 0: a search config field for every shape, e.g. --set space.width='{choices: [256]}' "
                             "--set train_overrides.pretrain.batch_size=256 (when DDP pays)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="section 0: GPUs per rank (NCCL when > 0)")
    parser.add_argument("--cpus-per-worker", type=float, default=None, help="section 0: CPUs per rank (default 0.45)")
    parser.add_argument("--asha-savings", action="store_true", help="also sections 1 and 2 (what ASHA saves)")
    parser.add_argument("--overhead", action="store_true", help="also section 3 (one Ray Train trial's overhead)")
    parser.add_argument("--no-shapes", action="store_true", help="skip section 0")
    parser.add_argument("--overhead-seconds", type=float, default=60.0,
                        help="in-process length of the overhead comparison's training (default 60 s)")
    parser.add_argument("--overhead-epochs", default=None,
                        help="pre-training,fine-tuning epochs of the overhead comparison (default: sized "
                             "to --overhead-seconds by a short in-process run)")
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--stimuli", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--work", default=str(ROOT / "out" / "bench-search"), help="data and results folder")
    parser.add_argument("--nested-trials", type=int, default=0,
                        help="section 4: trials per fold of the 4-fold nested search (0: skip, the default)")
    parser.add_argument("--nested-folds", type=int, default=4, help="outer folds of the nested cases (4)")
    parser.add_argument("--budget-minutes", type=float, default=0.0,
                        help="section 5: minutes of trials per budgeted nested search (0: skip, the default)")
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    pre, fine = (int(x) for x in args.epochs.split(","))

    import ray

    from tuning.search import connect_ray, execute_search

    t0 = time.perf_counter()
    dataset = make_dataset(work, args.subjects, args.stimuli, args.duration)
    print(f"dataset {dataset.name}: {args.subjects} subjects x {args.stimuli} clips x {args.duration:g} s "
          f"(prepared in {time.perf_counter() - t0:.0f} s)")
    print(connect_ray("local", None))
    epochs = {"train_overrides.pretrain.epochs": pre, "train_overrides.finetune.epochs": fine,
              "num_samples": args.trials, "data.label": args.label,
              "scheduler.grace_period": 1, "scheduler.reduction_factor": 3}

    if not args.no_shapes:  # 0: trial shapes against the in-process floor
        trial_shapes(dataset, work, epochs, args)

    nested = None  # 4: nested search vs one search of the same total trial count
    if args.nested_trials:
        nested = nested_vs_plain(dataset, work, epochs, args.nested_trials, args.nested_folds)

    a = b = None  # 1 + 2: ASHA search, then the same configurations to the end
    if args.asha_savings:
        asha = plan_for(dataset, work, "bench-asha", epochs)
        fresh(asha)
        a = execute_search(asha, say=quiet)
        configs = [dict(r.config) for r in sorted(a.results, key=lambda r: r.metrics.get("trial_id", ""))]
        full = plan_for(dataset, work, "bench-full", {**epochs, "scheduler.asha": False})
        full.points_to_evaluate = configs
        fresh(full)
        b = execute_search(full, say=quiet)
        report_searches(a, b, args, pre, fine)
    if args.overhead:
        overhead_section(dataset, work, args)
    if args.budget_minutes:
        search_value(dataset, work, epochs, args)
    ray.shutdown()
    if nested is not None:
        print("nested search vs one search of the same total trial count:")
        report_nested(*nested, args.nested_trials, args.nested_folds)
    print(f"total bench time {time.perf_counter() - t0:.0f} s; results in {work / 'searches'}")
    return 0


def overhead_section(dataset: Path, work: Path, args) -> None:
    """Section 3: one Ray Train trial (one worker) against the same loop in-process."""
    from tuning.search import execute_search

    o_pre, o_fine = overhead_epochs(dataset, work, args)
    one = plan_for(dataset, work, "bench-one", one_trial(args.label, o_pre, o_fine))
    fresh(one)
    # in-process before and after the Ray Train trial: this VM's speed drifts by 20-50 % within
    # minutes, and one sequential pair compared the drift as much as Ray Train
    before_s, local_best = in_process_seconds(one)
    o = execute_search(one, say=quiet)
    trial_s = float(o.table["time_s"].iloc[0])
    after_s, _ = in_process_seconds(one)
    local_s = (before_s + after_s) / 2
    floor_s = ray_train_floor_seconds(work, 0.9)
    first, per_epoch = epoch_times(one.exp_dir)
    print(f"Ray Train trial overhead ({o_pre}+{o_fine} epochs, 1 worker, 1 torch thread each): in-process "
          f"{local_s:.1f} s (mean of {before_s:.1f} before and {after_s:.1f} after the Ray Train trial; "
          f"{local_s / (o_pre + o_fine):.2f} s/epoch, best val {local_best:.3f}); Ray Train trial "
          f"{trial_s:.1f} s (Tune's trial time: first epoch reported after {first:.1f} s, then {per_epoch:.2f} "
          f"s/epoch), search wall time {o.tuning_seconds:.1f} s -> overhead {100 * (trial_s / local_s - 1):+.0f} % "
          f"(trial), {100 * (o.tuning_seconds / local_s - 1):+.0f} % (wall)  (target <= 10 %)")
    local_epoch = local_s / (o_pre + o_fine)
    print(f"  where it goes: start-up {first - local_epoch:.1f} s (the first epoch's report minus an in-process "
          f"epoch), of which Ray Train's own floor is {floor_s:.1f} s (an empty TorchTrainer trial, same resources, "
          f"measured now) and the rest data, imports and model; per epoch {per_epoch - local_epoch:+.3f} s "
          f"(report + checkpoint) x {o_pre + o_fine - 1} epochs = {(per_epoch - local_epoch) * (o_pre + o_fine - 1):.1f} s")


if __name__ == "__main__":
    sys.exit(main())
