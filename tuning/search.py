#!/usr/bin/env python
"""The Ray job entry point: hyperparameter search of MERCL with Ray Tune, Optuna and ASHA.

    ray job submit --working-dir . -- python tuning/search.py --config tuning/configs/demo.yaml
    python tuning/search.py --config tuning/configs/demo.yaml --storage /abs/results

Run as a Ray job it attaches to the job's cluster; run directly it attaches to the cluster
named by ``RAY_ADDRESS`` or started with ``ray start`` on this machine, else it starts a
local one (``--address local`` always starts a local one). Every trial is a Ray Train
``TorchTrainer`` (DDP) launched from a Tune function trainable (:mod:`tuning.trial_driver`),
or, with one worker, trained inside its warm Tune actor (:mod:`tuning.warm`);
OptunaSearch (TPE, seeded, with a concurrency limit) samples the space, ASHA stops bad trials
on the validation metric of every epoch of both training stages.

The config is validated before anything starts (one-line error naming the field, exit 2).
Re-running with the same ``--name`` and ``--storage`` resumes an interrupted search: its
finished trials are kept, unfinished ones resume from their checkpoints, and the Optuna
sampler continues with its history. Results: ``<storage>/<name>/`` (see :mod:`tuning.results`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mercl.errors import MerclError
from tuning.config import SearchConfig, dump_config, load_search_config, parse_set
from tuning.space import BaseModelShape, ParamSpec, check_space_against_base, parse_space

TUNING_DIR = Path(__file__).resolve().parent  # shipped to Ray workers as a py_module

PROG = "search"


@dataclass
class SearchPlan:
    """A validated search, ready to run (nothing of Ray touched yet)."""

    cfg: SearchConfig
    config_path: str | None
    specs: dict[str, ParamSpec]
    base_cfg: Any  # mercl.training.config.TrainConfig (the data's modalities applied)
    base_shape: BaseModelShape
    dataset_dir: Path
    exp_dir: Path  # local: our outputs (a mirror uploaded to ``location`` for cloud storage)
    location: str  # where Tune and Ray Train keep the experiment (local path or URI)
    points_to_evaluate: list[dict[str, Any]] | None = None  # configurations to try first (bench/search.py)
    timings_dir: str | None = None  # trials append their start-up phases to <dir>/timings.jsonl (bench/search.py)
    protocol_note: str = ""  # why data.protocol 'auto' became what it is

    @property
    def nested(self) -> bool:
        return self.cfg.data.nested

    @property
    def folds(self):
        """What differs between a plain and a nested search (:mod:`tuning.nested`)."""
        from tuning.nested import searched_folds

        return searched_folds(self.cfg.data.nested, self.cfg.data.test_fold)

    @property
    def planned_epochs(self) -> int:
        """Epochs of both stages a trial runs at most (ASHA's ``max_t``)."""

        def most(key: str, default: int) -> int:
            spec = self.specs.get(key)
            return int(max(spec.values_at_bounds())) if spec is not None else default

        pre = most("pretrain.epochs", self.base_cfg.pretrain.epochs) if self.base_cfg.contrastive else 0
        return pre + most("finetune.epochs", self.base_cfg.finetune.epochs)


# ----------------------------------------------------------------------------- CLI and validation


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Hyperparameter search of MERCL on Ray (Tune + Optuna + ASHA; every trial a Ray Train DDP run).",
    )
    parser.add_argument("--config", help="search config YAML (e.g. tuning/configs/demo.yaml)")
    parser.add_argument("--storage", help="results folder; the search lands in <storage>/<name>")
    parser.add_argument("--name", help="experiment name (re-use it to resume an interrupted search)")
    parser.add_argument("--num-samples", type=int, help="number of trials")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="stop the trials after this many seconds (time_budget_s; num_samples stays the cap)")
    parser.add_argument("--dataset", help="prepared dataset dir (mercl prepare ... -o OUT)")
    parser.add_argument("--label", help="label scheme, e.g. valence2")
    parser.add_argument("--train", help="base training config: paper | small | tiny | a YAML file")
    parser.add_argument("--max-concurrent", type=int, help="trials running at the same time")
    parser.add_argument("--workers", type=int, help="Ray Train workers (DDP ranks) per trial")
    parser.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (0: CPU, gloo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field, e.g. --set scheduler.grace_period=2 (repeatable)")
    parser.add_argument("--protocol", help="stimulus | subject-stimulus | trial | subject | segment | default "
                                           "(outer folds and inner validation split; default: the dataset's)")
    parser.add_argument("--nested", action="store_true",
                        help="one search per outer fold; the headline is the k-fold mean no search saw")
    parser.add_argument("--no-crossval", action="store_true", help="skip the outer CV of the best config")
    parser.add_argument("--no-final-model", action="store_true", help="skip training the final model.pt")
    parser.add_argument("--address", help="Ray cluster address; 'local' starts a local cluster "
                                          "(default: RAY_ADDRESS, else a running `ray start` cluster, else local)")
    parser.add_argument("--check", action="store_true", help="validate the config and the dataset, then exit")
    return parser


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI options -> dotted config overrides (``--set`` first, named options win)."""
    overrides = parse_set(args.set)
    named = {
        "storage": args.storage, "name": args.name, "num_samples": args.num_samples,
        "time_budget_s": args.time_budget,
        "data.dataset": args.dataset, "data.label": args.label, "train": args.train,
        "resources.max_concurrent_trials": args.max_concurrent, "resources.num_workers": args.workers,
        "resources.gpus_per_worker": args.gpus_per_worker, "data.protocol": args.protocol,
    }
    overrides.update({k: v for k, v in named.items() if v is not None})
    if args.nested:
        overrides["data.nested"] = True
    if args.no_crossval:
        overrides["crossval.enabled"] = False
    if args.no_final_model:
        overrides["final_model"] = False
    return overrides


def plan_search(config_path: str | None, overrides: dict[str, Any]) -> SearchPlan:
    """Load and check everything that can be checked without a cluster (raises MerclError)."""
    from tuning.data import check_dataset, check_protocol

    cfg = load_search_config(config_path, overrides)
    specs = parse_space(cfg.space, config_path)
    dataset_dir, _ = check_dataset(cfg.data, config_path)
    cfg.data.dataset = str(dataset_dir.resolve())  # the dataset dir itself, absolute (saved, compared on resume)
    train_overrides = {**cfg.train_overrides, "model.modalities": list(cfg.data.modalities)}
    base_cfg, base_shape = check_space_against_base(specs, cfg.train, train_overrides)
    note = check_protocol(cfg.data, base_cfg.seed, config_path)  # 'auto' -> the dataset's protocol
    return SearchPlan(cfg, config_path, specs, base_cfg, base_shape, dataset_dir, cfg.experiment_dir,
                      cfg.experiment_location, protocol_note=note)


def check_experiment_dir(plan: SearchPlan) -> bool:
    """True when ``<storage>/<name>`` holds an earlier run of this search (to resume).

    A folder from a search with a different config is refused (pick another --name).
    """
    saved = plan.exp_dir / "search_config.yaml"
    if not saved.is_file():
        return False
    import yaml

    from mercl.config import from_dict

    old = from_dict(SearchConfig, yaml.safe_load(saved.read_text()), source=saved)
    fields = ("space", "train", "train_overrides", "data", "metric", "mode", "sampler", "scheduler")
    changed = [f for f in fields if dump_section(old, f) != dump_section(plan.cfg, f)]
    if changed:
        raise MerclError(f"{plan.exp_dir}: holds search '{plan.cfg.name}' with a different config "
                         f"(changed: {', '.join(changed)}); use another --name to start a new search")
    return True


def dump_section(cfg: SearchConfig, name: str) -> Any:
    """A config section as compared on resume (settings that change no result left out)."""
    from mercl.config import to_dict

    section = to_dict(getattr(cfg, name))
    if name == "data":
        section = {k: v for k, v in section.items() if k not in ("verify_checksums", "in_memory_max_mb", "read")}
    return section


# ----------------------------------------------------------------------------- Ray


def connect_ray(address: str | None, num_cpus: int | None) -> str:
    """Attach to a running cluster or start a local one; returns a one-line description.

    The ``tuning`` package travels to every worker as a ``py_modules`` runtime env entry
    (a Ray job's ``--working-dir`` provides it too; the two merge).
    """
    import ray
    from ray._private.services import canonicalize_bootstrap_address, get_node_ip_address

    if ray.is_initialized():  # a caller (e.g. bench/search.py) already connected this process
        return f"using the Ray session of this process ({ray.cluster_resources().get('CPU', 0):g} CPUs)"

    def runtime_env(gcs_address: str) -> dict:
        # RAY_ADDRESS: Ray Train's PlacementGroupCleaner (a detached actor that frees the workers of
        # a trial Tune stopped) finds the State API by auto-detection, which fails or picks the
        # wrong cluster when a machine runs more than one; name ours for every task and actor.
        # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: a worker's report waits until the trial's controller
        # has taken the previous one, and the controller looks every 2 s by default: epochs shorter
        # than that would be stretched to 2 s.
        env = {"RAY_ADDRESS": gcs_address,
               "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")}
        return {"py_modules": [str(TUNING_DIR)], "env_vars": env}

    if address is None:
        address = canonicalize_bootstrap_address(None)
    elif address == "local":
        address = None
    if address is not None:
        try:
            ray.init(address=address, runtime_env=runtime_env(address))
        except Exception as exc:
            if "authentication" not in str(exc).lower() or os.environ.get("RAY_AUTH_MODE"):
                raise
            os.environ["RAY_AUTH_MODE"] = "token"  # the cluster uses token auth (~/.ray/auth_token)
            ray.init(address=address, runtime_env=runtime_env(address))
        return f"attached to the Ray cluster at {address} ({ray.cluster_resources().get('CPU', 0):g} CPUs)"
    # A local cluster on a port chosen here, so that its address is known before it starts. It has
    # the dashboard: the State API the PlacementGroupCleaner needs is served there; without it every
    # trial ASHA stops keeps its workers' CPUs reserved and the next trial's data read deadlocks.
    port = free_port()
    gcs_address = f"{get_node_ip_address()}:{port}"
    previous = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, runtime_env=runtime_env(gcs_address))
    finally:
        if previous is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = previous
    return f"started a local Ray cluster at {gcs_address} ({ray.cluster_resources().get('CPU', 0):g} CPUs)"


def free_port() -> int:
    """A TCP port free on this machine right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def check_resources(plan: SearchPlan, say) -> None:
    """Warn when a trial cannot fit, or leaves Ray Data no whole CPU (its read tasks need one)."""
    import ray

    res = plan.cfg.resources
    total_cpu = ray.cluster_resources().get("CPU", 0)
    total_gpu = ray.cluster_resources().get("GPU", 0)
    if res.gpus_per_worker * res.num_workers > total_gpu and res.use_gpu:
        say(f"warning: a trial asks for {res.gpus_per_worker * res.num_workers:g} GPUs, the cluster has "
            f"{total_gpu:g} now (an autoscaling cluster adds GPU nodes on demand)")
    busy = res.trial_cpus * res.max_concurrent_trials
    if total_cpu - busy < 1:
        say(f"warning: {res.max_concurrent_trials} trial(s) reserve {busy:g} of {total_cpu:g} CPUs: Ray Data "
            "needs one whole free CPU; lower resources.cpus_per_worker or max_concurrent_trials")


def build_tuner(plan: SearchPlan, setup, searched: list[int], restore: bool, say=print):
    """A new Tuner, or the restored one of ``<storage>/<name>`` (same searcher, scheduler, callbacks)."""
    import ray.tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from tuning.asha import recording_asha
    from tuning.console import StopLine
    from tuning.hparams_view import hparams_callback
    from tuning.results import asha_state_path, asha_stopped, upload_outputs
    from tuning.space import SpaceSampler
    from tuning.trial_driver import (
        trainable_resources,  # a rank's (inprocess), or the head's trial_driver resource where it has one
    )

    cfg, folds = plan.cfg, plan.folds
    trainable = ray.tune.with_resources(ray.tune.with_parameters(folds.trainable(), setup=setup),
                                        trainable_resources(cfg.resources, ray.cluster_resources()))
    if restore:
        return ray.tune.Tuner.restore(plan.location, trainable=trainable,
                                      resume_unfinished=True, resume_errored=True)

    import optuna

    def optuna_search() -> OptunaSearch:
        sampler = optuna.samplers.TPESampler(seed=cfg.sampler.seed, n_startup_trials=cfg.sampler.n_startup_trials,
                                             multivariate=cfg.sampler.multivariate)
        return OptunaSearch(space=SpaceSampler(plan.specs, plan.base_shape), metric=cfg.metric, mode=cfg.mode,
                            sampler=sampler, points_to_evaluate=plan.points_to_evaluate)

    searcher, num_samples, name_trial = folds.searcher(optuna_search, cfg.num_samples, searched, cfg.metric,
                                                       cfg.mode)
    searcher = ConcurrencyLimiter(searcher, max_concurrent=cfg.resources.max_concurrent_trials)
    scheduler = None
    if cfg.scheduler.asha:
        scheduler = recording_asha(
            asha_state_path(plan.exp_dir), time_attr="global_epoch", metric=cfg.metric, mode=cfg.mode,
            max_t=cfg.scheduler.max_t or plan.planned_epochs, grace_period=cfg.scheduler.grace_period,
            reduction_factor=cfg.scheduler.reduction_factor, brackets=cfg.scheduler.brackets)
    exp_dir = plan.exp_dir
    callbacks = [JsonLoggerCallback(), CSVLoggerCallback(),
                 StopLine(lambda trial_id: asha_stopped(exp_dir).get(trial_id), cfg.metric, say),
                 hparams_callback(exp_dir / "tensorboard", plan.specs, plan.base_shape, cfg.metric, cfg.mode,
                                  stopped_lookup=lambda trial_id: trial_id in asha_stopped(exp_dir),
                                  after_trial=lambda: upload_outputs(exp_dir, plan.location))]
    reporter = None
    if cfg.progress == "table":
        reporter = ray.tune.CLIReporter(
            metric_columns={cfg.metric: "val", "global_epoch": "epoch", "stage": "stage", "loss": "loss"},
            parameter_columns=[n for n in plan.specs if n != "heads"] + (["heads"] if "heads" in plan.specs else []),
            max_report_frequency=20, sort_by_metric=True, metric=cfg.metric, mode=cfg.mode,
            max_column_length=12)
    # inprocess: Tune's actor is the rank: Tune reuses it for the next trial, keeps the checkpoints
    # the trial reports and restarts a trial whose actor died from its newest one. train: Ray Train
    # does both inside each trial, Tune must not retry on top of it.
    warm = cfg.resources.resolved_runner == "inprocess"
    if warm:  # Tune snapshots its state after every num_to_keep checkpoints of a trial (so that a
        # restore never points at a deleted one); with sub-second epochs it warns about that each time
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    return ray.tune.Tuner(
        trainable,
        tune_config=ray.tune.TuneConfig(num_samples=num_samples, search_alg=searcher, scheduler=scheduler,
                                        metric=None if scheduler else cfg.metric,
                                        mode=None if scheduler else cfg.mode, trial_name_creator=name_trial,
                                        reuse_actors=warm, time_budget_s=cfg.time_budget_s or None),
        run_config=ray.tune.RunConfig(
            name=cfg.name, storage_path=plan.location.rsplit("/", 1)[0], callbacks=callbacks,
            progress_reporter=reporter,
            verbose=1 if cfg.progress == "table" else 0,
            checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=cfg.fault.keep_checkpoints) if warm else None,
            failure_config=ray.tune.FailureConfig(max_failures=cfg.fault.max_failures if warm else 0)),
    )


# ----------------------------------------------------------------------------- the search


@dataclass
class SearchOutcome:
    """What :func:`execute_search` returns (bench/search.py reads the timings)."""

    status: int
    table: Any  # pandas DataFrame, one row per trial (trials.csv)
    results: Any  # ray.tune.ResultGrid
    tuning_seconds: float  # Tuner.fit() alone
    total_seconds: float  # connect + data + search + outputs


def run_search(plan: SearchPlan, address: str | None = None, say=print) -> int:
    """Run (or resume) the search and write its outputs; returns the exit status."""
    return execute_search(plan, address, say).status


def execute_search(plan: SearchPlan, address: str | None = None, say=print) -> SearchOutcome:
    """Run (or resume) the search: connect, prepare the data once, tune, write the outputs."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our own TensorBoard HParams writer
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the CLIReporter table with our columns
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    # Save the experiment state (finished trials, searcher) every few seconds, not Tune's >= 10 s:
    # a driver killed right after a trial finished must not run that trial again on resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3")
    # A restored trial reports Tune's training_iteration from 1 again; Optuna only warns about it.
    warnings.filterwarnings("ignore", message="The reported value is ignored because this")
    import ray
    import ray.tune

    from mercl.atomic import write_text
    from mercl.config import to_dict
    from tuning.data import build_ray_datasets, core_row_bytes, prepare_search_data
    from tuning.remote import feature_cache_task, remote
    from tuning.results import download_outputs, upload_outputs
    from tuning.trial_driver import TrialSetup
    from tuning.worker import WorkerSetup

    cfg = plan.cfg
    download_outputs(plan.location, plan.exp_dir)
    resuming = check_experiment_dir(plan)
    started = time.time()
    say(connect_ray(address, cfg.resources.num_cpus))
    check_resources(plan, say)
    if plan.protocol_note:
        say(plan.protocol_note)
    placement = Placement(plan.exp_dir, ray.get_runtime_context().get_node_id())

    def compute_features(model, prepared):
        """The backbone features as a Ray task with a trial worker's resources (not in this driver)."""
        say(f"backbone features: {len(prepared.stimuli)} stimulus segments, as a Ray task "
            f"({cfg.resources.cpus_per_worker:g} CPU, {cfg.resources.gpus_per_worker:g} GPU)")
        task = remote(feature_cache_task, cfg.resources)
        features, node = ray.get(task.remote(model, prepared.stimuli))
        placement.record("feature_cache", node)
        return features

    data = prepare_search_data(cfg.data, plan.base_cfg, compute_features=compute_features)
    say(f"data: {data.describe()}")
    datasets = build_ray_datasets(data, cfg.data.read)
    rows_per_worker = max(f.counts["train_rows"] + f.counts["val_rows"] for f in data.folds.values())
    in_memory = rows_per_worker * core_row_bytes(data) / 2**20 <= cfg.data.in_memory_max_mb
    stimuli_ref = ray.put(data.stimuli)
    data_key = f"{cfg.name}/{stimuli_ref.hex()}"  # this run's data: what warm actors cache (tuning.warm)
    setups = {
        fold: TrialSetup(
            base_config=to_dict(plan.base_cfg),
            base_shape=plan.base_shape,
            worker=WorkerSetup(shapes=data.shapes, class_names=data.class_names, norm=split.norm,
                               stimuli_ref=stimuli_ref, in_memory=in_memory, pid_dir=cfg.pid_dir,
                               cached_backbones=data.cached_backbones, timings_dir=plan.timings_dir),
            datasets=datasets[fold],
            runs_path=f"{plan.location}/train_runs",
            num_workers=cfg.resources.num_workers,
            cpus_per_worker=cfg.resources.cpus_per_worker,
            gpus_per_worker=cfg.resources.gpus_per_worker,
            placement_strategy=cfg.resources.placement_strategy,
            max_failures=cfg.fault.max_failures,
            keep_checkpoints=cfg.fault.keep_checkpoints,
            checkpoint_every=cfg.fault.checkpoint_every,
            custom_per_worker=dict(cfg.resources.custom_per_worker),
            runner=cfg.resources.resolved_runner,
            data_key=data_key,
            fold=fold,
        )
        for fold, split in data.folds.items()
    }
    setup = plan.folds.trial_setup(setups)
    restore = resuming and ray.tune.Tuner.can_restore(plan.location)
    if restore:
        say(f"resuming search {cfg.name} from {plan.location}: {describe_restored_searcher(plan.location)}")
    else:
        plan.exp_dir.mkdir(parents=True, exist_ok=True)
        write_text(plan.exp_dir / "search_config.yaml", dump_config(cfg))
        upload_outputs(plan.exp_dir, plan.location)
    tuner = build_tuner(plan, setup, list(data.folds), restore, say)
    budget = f" (or until the time budget of {cfg.time_budget_s:g} s is spent)" if cfg.time_budget_s else ""
    say(f"search {cfg.name}: {plan.folds.folds_text(len(data.folds))}{cfg.num_samples} trials{budget} x "
        f"{trial_shape_text(cfg.resources)}, protocol {data.protocol}, results in {plan.exp_dir}")
    fit_started = time.time()
    results = tuner.fit()
    tuning_seconds = time.time() - fit_started
    status, table = finish_search(plan, results, data, say, placement)
    upload_outputs(plan.exp_dir, plan.location)
    say(f"search took {time.time() - started:.0f} s")
    return SearchOutcome(status, table, results, tuning_seconds, time.time() - started)


def trial_shape_text(res) -> str:
    """How each trial trains, in words (the search's start line)."""
    device = "GPU" if res.use_gpu else "CPU"
    if res.resolved_runner == "inprocess":
        return f"1 worker in its warm Tune actor ({device}), {res.max_concurrent_trials} at a time"
    return (f"{res.num_workers} DDP workers ({'GPU, nccl' if res.use_gpu else 'CPU, gloo'}), "
            f"{res.max_concurrent_trials} at a time")


class Placement:
    """``placement.json``: on which Ray node the driver and each heavy step ran (node ids)."""

    def __init__(self, exp_dir: Path, driver_node: str):
        self.path = exp_dir / "placement.json"
        self.nodes: dict[str, Any] = {"driver": driver_node}

    def record(self, step: str, node: str, key: str | None = None) -> None:
        if key is None:
            self.nodes[step] = node
        else:
            self.nodes.setdefault(step, {})[key] = node
            self.nodes[step] = dict(sorted(self.nodes[step].items()))
        self.save()

    def save(self) -> None:
        import json

        from mercl.atomic import write_text

        if self.path.parent.is_dir():
            write_text(self.path, json.dumps(self.nodes, indent=1))


def describe_restored_searcher(location: str) -> str:
    """What the saved searcher state holds (the searcher Tune restores from it)."""
    from tuning.results import searcher_studies

    studies = searcher_studies(location)
    if not studies:
        return "no saved searcher state (trials restart, the sampler starts afresh)"
    if None in studies:
        return f"OptunaSearch state with {len(studies[None].trials)} trials in its Optuna study"
    per_fold = ", ".join(f"fold {fold}: {len(study.trials)}" for fold, study in sorted(studies.items()))
    return f"per-fold OptunaSearch states with trials in their Optuna studies ({per_fold})"


def finish_search(plan: SearchPlan, results, data, say, placement: Placement | None = None) -> tuple[int, Any]:
    """Trial table, best config(s), plots, outer scores, final model, summary.md; prints where they are.

    The outer scores and the final model are trained in Ray tasks with a trial worker's resources
    (:mod:`tuning.remote`), the outer folds in parallel.
    """
    from mercl.atomic import write_text
    from tuning.hparams_view import tensorboard_command
    from tuning.results import (
        SearchSummary,
        asha_stopped,
        result_trial_id,
        searcher_studies,
        study_from_table,
        trial_table,
        write_plots,
        write_trial_tables,
    )

    cfg, exp_dir = plan.cfg, plan.exp_dir
    placement = placement or Placement(exp_dir, "")
    table = trial_table(results, plan.base_shape, asha_stopped(exp_dir), cfg.metric, cfg.mode, plan.planned_epochs,
                        budget=cfg.time_budget_s > 0)
    write_trial_tables(table, exp_dir)
    # (a trial the time budget cut before its first report has no result files: no metrics, no config)
    configs = {result_trial_id(r): dict(r.config or {}) for r in results}
    best, best_train, fold_bests = _write_best_configs(plan, table, configs, data.folds)
    hparam_names = [c for c in table.columns if c in plan.specs or c in ("dilations", "fold")]
    run_outer = cfg.crossval.enabled and best is not None and plan.folds.scores_outer(fold_bests)
    run_final = cfg.final_model and best_train is not None
    source = _dataset_source(plan, data) if run_outer or run_final else None
    crossval = None
    if run_outer:
        crossval = outer_scores(plan, data, source, best_train, fold_bests, configs, say, placement)
    model_file, final_text = None, ""
    if run_final:
        model_file, final_text = final_model(plan, data, source, best, best_train, say, placement)
    study = study_from_table(table, plan.specs, cfg.metric, cfg.mode)
    plots = write_plots(study, exp_dir / "plots")
    saved = searcher_studies(plan.location)
    tb = tensorboard_command(exp_dir)
    summary = SearchSummary(
        name=cfg.name, exp_dir=exp_dir, table=table, best=best, hparam_names=hparam_names, metric=cfg.metric,
        data_text=data.describe(), protocol_text=f"{data.protocol}, {data.n_folds} folds", crossval=crossval,
        test_fold=cfg.data.test_fold, plots=plots,
        study_trials=sum(len(s.trials) for s in saved.values()) if saved else None,
        tensorboard_cmd=tb, nested=plan.nested, fold_bests=fold_bests, n_folds=data.n_folds,
        model_file=model_file, final_text=final_text).markdown()
    write_text(exp_dir / "summary.md", summary)
    placement.save()
    _print_outcome(plan, table, best, hparam_names, crossval, data.n_folds, say)
    if model_file is not None:
        say(f"final model: {model_file} ({final_text})")
    say(f"results: {plan.location} (summary.md, trials.csv, best_config.yaml, plots/)"
        + (f"; local copy {exp_dir}" if plan.location != str(exp_dir) else ""))
    say(f"TensorBoard: {tb}")
    return (0 if best is not None else 1), table


def _write_best_configs(plan: SearchPlan, table, configs: dict, folds) -> tuple[Any, Any, dict[int, Any]]:
    """The best trial's row and TrainConfig (best_config.yaml) and, for a nested search, each
    fold's best row (fold<k>/best_config.yaml)."""
    from tuning.results import best_trial, write_best_config
    from tuning.trial_driver import trial_train_config

    cfg = plan.cfg
    best = best_trial(table, cfg.metric, cfg.mode) if len(table) else None
    fold_bests = plan.folds.fold_bests(table, folds, lambda rows: best_trial(rows, cfg.metric, cfg.mode))
    best_train = None
    if best is not None:
        best_train = trial_train_config(configs[best["trial_id"]], _setup_like(plan))
        write_best_config(best_train, best, plan.exp_dir, cfg.metric)
    for fold, row in fold_bests.items():
        write_best_config(trial_train_config(configs[row["trial_id"]], _setup_like(plan)), row,
                          plan.exp_dir / f"fold{fold}", cfg.metric)
    return best, best_train, fold_bests


def _print_outcome(plan: SearchPlan, table, best, hparam_names: list[str], crossval, n_folds: int, say) -> None:
    """The best trial, the trial counts, the headline no search saw and the outer CV."""
    from tuning.results import STATUS_STOPPED, headline_text

    cfg = plan.cfg
    n_stopped = int((table["status"] == STATUS_STOPPED).sum()) if len(table) else 0
    say("")
    if best is not None:
        shown = ", ".join(f"{h}={_short(best[h])}" for h in hparam_names)
        say(f"best trial {best['trial_id']}: {cfg.metric} {best[f'best_finetune_{cfg.metric}']:.4f} "
            f"on its inner validation split ({shown})")
    else:
        say("no trial reported a validation metric")
    say(f"{len(table)} trials, {n_stopped} stopped early by ASHA")
    if crossval is None:
        return
    say(f"HEADLINE, accuracy on data no part of the search saw: "
        f"{headline_text(crossval, nested=plan.nested, test_fold=cfg.data.test_fold, n_folds=n_folds)}")
    if not plan.nested:
        say(f"outer CV of the best config over all {n_folds} folds (folds other than {cfg.data.test_fold} "
            f"were in the search's training data): mercl {crossval.mean('mercl'):.3f}, majority "
            f"{crossval.mean('majority'):.3f}, clip-majority {crossval.mean('clip-majority'):.3f} "
            f"[{crossval.protocol}]")


def _dataset_source(plan: SearchPlan, data):
    """What the heavy tasks load the dataset from: its path, or (``data.read: driver``) the dataset itself."""
    if plan.cfg.data.read != "driver":
        return str(data.dataset_dir)
    import ray

    from mercl.data.reader import load_dataset

    return ray.put(load_dataset(data.dataset_dir, verify=False))


def outer_scores(plan: SearchPlan, data, source, best_train: dict, fold_bests: dict, configs: dict, say,
                 placement: Placement):
    """The outer folds as Ray tasks: every fold with the best config (plain search), or each fold with
    its own search's best config (nested). Returns the CrossValResult (``crossval/`` written)."""
    from mercl.training.config import train_config_from_dict
    from tuning.outer import crossval_result
    from tuning.remote import run_outer_folds
    from tuning.trial_driver import trial_train_config

    cfg, exp_dir = plan.cfg, plan.exp_dir
    own_bests = {fold: trial_train_config(configs[row["trial_id"]], _setup_like(plan))
                 for fold, row in fold_bests.items()}
    fold_configs = plan.folds.outer_configs(best_train, own_bests, data.n_folds)
    if plan.nested:
        say(f"outer scores of the nested search: each fold's best config on its own test rows "
            f"({data.protocol}, {len(fold_configs)} folds as Ray tasks)")
        name = "the per-fold best configs (fold<k>/best_config.yaml)"
    else:
        say(f"outer cross-validation of the best config ({data.protocol}, {data.n_folds} folds as Ray tasks)")
        name = str(exp_dir / "best_config.yaml")
    outputs = run_outer_folds(source, data.label, fold_configs, data.protocol, data.n_folds, cfg.resources,
                              cfg.crossval.max_parallel, say)
    for fold, out in outputs.items():
        placement.record("outer_folds", out["node"], str(fold))
    return crossval_result(data, outputs, train_config_from_dict(best_train), exp_dir / "crossval", name)


def final_model(plan: SearchPlan, data, source, best, best_train: dict, say, placement: Placement):
    """The best config trained on all the data in a Ray task -> ``<exp_dir>/model.pt`` (+ its metrics)."""
    import ray

    from mercl.atomic import write_atomic
    from tuning.remote import final_model_task, remote

    exp_dir = plan.exp_dir
    which = plan.folds.best_text(best["trial_id"])
    say(f"final model: the best config ({which}) on all {len(data.rows)} rows, as a Ray task")
    task = remote(final_model_task, plan.cfg.resources)
    files, node = ray.get(task.remote(source, data.label, best_train, data.protocol))
    placement.record("final_model", node)
    if "model.pt" not in files:
        raise RuntimeError("the final model's training wrote no model.pt")  # a bug, not a user error
    for name, blob in files.items():  # model.pt last: its presence means the others are there too
        if name != "model.pt":
            write_atomic(exp_dir / "final" / name, lambda p, blob=blob: p.write_bytes(blob))
    write_atomic(exp_dir / "model.pt", lambda p: p.write_bytes(files["model.pt"]))
    return str(exp_dir / "model.pt"), (f"the best config ({which}) trained on all the data, a validation "
                                       f"split held out as {data.protocol} holds out for early stopping; its "
                                       "scores: final/metrics.json")


def _setup_like(plan: SearchPlan):
    """The two TrialSetup fields :func:`tuning.trial_driver.trial_train_config` reads."""
    from types import SimpleNamespace

    from mercl.config import to_dict

    return SimpleNamespace(base_config=to_dict(plan.base_cfg), base_shape=plan.base_shape)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = plan_search(args.config, cli_overrides(args))
        if args.check:
            print(f"{PROG}: config OK: {len(plan.specs)} hyperparameters, dataset {plan.dataset_dir}, protocol "
                  f"{plan.cfg.data.protocol}{' (nested)' if plan.nested else ''}, results in {plan.exp_dir}")
            if plan.protocol_note:
                print(plan.protocol_note)
            return 0
        return run_search(plan, address=args.address)
    except MerclError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
