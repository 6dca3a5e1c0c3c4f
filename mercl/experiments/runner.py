"""Run the paper's experiments as method x fold units, each cached on disk.

An experiment (``paper``, ``modalities``, ``ablation``) is a list of table *rows* (a MERCL
variant or a baseline) evaluated for every label scheme and protocol on the same folds
(:func:`mercl.data.protocols.make_folds` seeded with the training config's seed, so MERCL and
every baseline see the same splits). One *unit* = (row, scheme, protocol, fold). Its result
is one small JSON file ``RUN_DIR/cache/<key>.json`` written atomically; ``key`` hashes
everything the result depends on (dataset id, method and its config, scheme, protocol,
folds, seed, fold index), so a re-run computes only what changed, and a unit shared by two
tables (the full model of Tables 8 and 9) is computed once.

Per-unit JSON: scores (accuracy, macro_f1, n_test, confusion), timings (train_s,
predict_s), per-row predictions (row, subject, label, prediction), and for MERCL the
training history and a sample of test-fold shared embeddings (for the report's t-SNE).
``RUN_DIR/experiment.json`` lists the experiment and its unit files; ``results.csv`` holds
one row per unit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mercl import atomic
from mercl.config import config_hash, to_dict
from mercl.data.labels import available_schemes, class_names
from mercl.data.protocols import (
    parse_protocols,
    protocol_folds,
    protocol_label,
    resolve_protocol,
    shared_stimuli,
)
from mercl.data.reader import PreparedDataset, load_dataset, load_dataset_once
from mercl.errors import MerclError
from mercl.training.config import TrainConfig
from mercl.training.crossval import apply_ablations, modalities_for_dataset, variant_name
from mercl.training.metrics import (
    TRIVIAL_BASELINES,
    classification_metrics,
    clip_majority_baseline,
    majority_baseline,
)

EXPERIMENTS = ("paper", "modalities", "ablation")
BASELINE_METHODS = ("ve_bilstm", "ave_rt", "ave_kelm", "ave_lstm")
PAPER_METHODS = ("mercl", *BASELINE_METHODS, *TRIVIAL_BASELINES)
CONTENT_ONLY = "MERCL A+V (content only)"  # MERCL without EEG: what the clip alone gives
EMBEDDING_SAMPLE = 64  # test rows per MERCL fold whose shared embeddings are kept for the report
CACHE_VERSION = 2  # 2: stimulus protocols, clip-majority, round-robin clip folds


@dataclass
class Row:
    """One table row: ``label`` as printed, ``method`` (``mercl``, a baseline, ``majority``),
    the MERCL config of the row (None for the baselines), and the paper table it belongs to."""

    label: str
    method: str
    cfg: TrainConfig | None = None
    table: str = ""


@dataclass
class Experiment:
    """What ``mercl experiment`` runs."""

    kind: str
    dataset: Path
    protocols: list[str]  # "stimulus" / "subject-stimulus" / "trial" / "subject" / "segment"
    schemes: list[str]
    rows: list[Row]
    folds: int
    cfg: TrainConfig
    config_name: str = ""

    @property
    def seed(self) -> int:
        return self.cfg.seed


@dataclass
class Unit:
    row: Row
    scheme: str
    protocol: str
    fold: int
    key: str

    @property
    def file_name(self) -> str:
        return f"{self.key}.json"


@dataclass
class RunOutcome:
    """What :func:`run_experiment` returns: per-unit results and how many were computed now."""

    results: pd.DataFrame
    computed: int
    cached: int
    units: list[Unit] = field(default_factory=list)


# ----------------------------------------------------------------------------- experiment definitions


def protocols_of(choice: str, prepared: PreparedDataset | None = None, scheme: str | None = None,
                 folds: int = 5, seed: int = 0) -> tuple[list[str], str | None]:
    """``--protocol`` -> (protocol names, a note): a comma list; ``both`` = segment and trial;
    ``auto`` = the dataset's default (needs ``prepared``; decided on ``scheme``'s labels)."""
    names = parse_protocols(choice)
    note = None
    if "auto" in names:
        labels = prepared.labels(scheme) if scheme else None
        default, note = resolve_protocol(None, prepared, labels, folds, seed)
        names = list(dict.fromkeys(default if n == "auto" else n for n in names))
    return names, note


def _trivial_rows(table: str) -> list[Row]:
    return [Row(m, m, None, table) for m in TRIVIAL_BASELINES]


def experiment_rows(kind: str, cfg: TrainConfig, methods: list[str] | None = None,
                    content_only: bool = False) -> list[Row]:
    """The rows of an experiment's tables; ``methods`` keeps only rows of those methods (paper).

    Every table ends with the trivial baselines (majority, clip-majority). ``content_only`` adds
    MERCL on audio + video alone to the paper's methods table (data with clips shared across
    subjects: it shows how much a model scores from the clip alone, protocol by protocol).
    """
    if kind == "paper":
        chosen = list(methods) if methods else list(PAPER_METHODS)
        unknown = [m for m in chosen if m not in PAPER_METHODS]
        if unknown:
            raise MerclError(f"--methods: unknown method(s) {', '.join(unknown)} "
                             f"(choose from {', '.join(PAPER_METHODS)})")
        rows = [Row(m, m, cfg if m == "mercl" else None, "methods") for m in chosen if m not in TRIVIAL_BASELINES]
        if content_only and "mercl" in chosen:
            rows.append(Row(CONTENT_ONLY, "mercl", apply_ablations(cfg, modalities=["video", "audio"]), "methods"))
        return rows + _trivial_rows("methods")
    if kind == "modalities":
        combos = (("A+V", ["video", "audio"]), ("A+E", ["audio", "eeg"]), ("V+E", ["video", "eeg"]),
                  ("A+V+E", ["video", "audio", "eeg"]))
        rows = [Row(name, "mercl", apply_ablations(cfg, modalities=mods), "modalities") for name, mods in combos]
        return rows + _trivial_rows("modalities")
    if kind == "ablation":
        return [
            Row("w/o contrastive learning", "mercl", apply_ablations(cfg, contrastive=False), "ablation"),
            Row("w/o cross-modal attention", "mercl", apply_ablations(cfg, cross_attention=False), "ablation"),
            Row("w/o both", "mercl", apply_ablations(cfg, contrastive=False, cross_attention=False), "ablation"),
            Row("full", "mercl", cfg, "ablation"),
            *_trivial_rows("ablation"),
            Row("w/o energy sample selection", "mercl", apply_ablations(cfg, energy_gate=False), "energy"),
            Row("with energy sample selection", "mercl", cfg, "energy"),
            *_trivial_rows("energy"),
        ]
    raise MerclError(f"unknown experiment '{kind}' (choose from {', '.join(EXPERIMENTS)})")


def dataset_schemes(prepared: PreparedDataset, wanted: list[str] | None = None) -> list[str]:
    """The label schemes the dataset supports (``wanted`` must be among them)."""
    have = available_schemes(prepared.rows.columns, prepared.rows)
    if not wanted:
        return have
    missing = [s for s in wanted if s not in have]
    if missing:
        raise MerclError(f"{prepared.path}: label scheme(s) {', '.join(missing)} not available "
                         f"(this dataset supports {', '.join(have)})")
    return list(wanted)


def dataset_modalities(kind: str, cfg: TrainConfig, prepared: PreparedDataset,
                       wanted: list[str] | None = None) -> tuple[TrainConfig, str | None]:
    """MERCL's config for this dataset: its modalities are ``wanted`` (``--modalities``) or the
    config's, less any the dataset lacks in every row (e.g. EEG-only recordings). Returns the
    config and a line saying what changed (None when nothing did)."""
    have = prepared.present_modalities()
    lacking = [m for m in ("video", "audio") if m not in have]
    if kind == "modalities":
        if wanted:
            raise MerclError("--modalities: not with experiment 'modalities', which runs every combination")
        if lacking:
            raise MerclError(f"{prepared.path}: experiment 'modalities' needs audio, video and EEG; "
                             f"the dataset has no {' and no '.join(lacking)}")
        return cfg, None
    return modalities_for_dataset(cfg, prepared, wanted)


def method_signature(row: Row) -> dict:
    """Everything a row's results depend on besides data/fold (part of the cache key)."""
    if row.method == "mercl":
        return {"method": "mercl", "config": config_hash(row.cfg)}
    if row.method in TRIVIAL_BASELINES:
        return {"method": row.method}
    from mercl.baselines import CPU_OPTIONS

    return {"method": row.method, "options": CPU_OPTIONS.get(row.method, {})}


def dataset_content(manifest: dict) -> str:
    """The digest of a prepared dataset's shards (``content_digest`` of manifest.json, or computed
    from its checksums for an older one): a unit's cache key holds it, so results computed on a
    dataset are never read back for an edited one."""
    from mercl.data.shards import files_digest

    return manifest.get("content_digest") or files_digest(manifest.get("files") or {})


def plan_units(exp: Experiment, dataset_id: str, n_folds: dict[str, int], content: str = "") -> list[Unit]:
    """Every (row, scheme, protocol, fold) unit; units with equal keys are listed once.

    content: the dataset's content digest (:func:`dataset_content`), part of every key.
    """
    units, seen = [], set()
    for protocol in exp.protocols:
        for scheme in exp.schemes:
            for row in exp.rows:
                for fold in range(n_folds[protocol]):
                    key_data = {"v": CACHE_VERSION, "dataset": dataset_id, "content": content,
                                **method_signature(row),
                                "scheme": scheme, "protocol": protocol, "folds": exp.folds,
                                "seed": exp.seed, "fold": fold}
                    key = f"{row.method}-{scheme}-{protocol}-f{fold}-{config_hash(key_data)}"
                    if (key, row.label, row.table) in seen:
                        continue
                    seen.add((key, row.label, row.table))
                    units.append(Unit(row, scheme, protocol, fold, key))
    return units


# ----------------------------------------------------------------------------- one unit


def _scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    sc = classification_metrics(y_true, y_pred, n_classes)
    return {"accuracy": sc.accuracy, "macro_f1": sc.macro_f1, "n_test": sc.n, "confusion": sc.confusion.tolist()}


def _embedding_sample(run, prepared: PreparedDataset, rows: np.ndarray, scheme: str, cfg: TrainConfig) -> dict:
    """Shared embeddings of up to EMBEDDING_SAMPLE test rows: {modality: (n, D) list}, labels, valid."""
    import torch

    from mercl.training.loop import embed_batches

    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(rows, size=min(EMBEDDING_SAMPLE, len(rows)), replace=False))
    with torch.no_grad():
        _, labels, z, valid = embed_batches(run.model, run.batches(prepared, sample, scheme, cfg), cfg, run.device)
    return {
        "labels": labels.astype(int).tolist(),
        "z": {m: np.round(v.numpy(), 4).tolist() for m, v in z.items()},
        "valid": {m: v.numpy().astype(bool).tolist() for m, v in valid.items()},
    }


def run_mercl_fold(prepared: PreparedDataset, scheme: str, cfg: TrainConfig, cv, fold) -> dict:
    """Train MERCL on one outer fold with crossval's :func:`train_split` (inner split for early
    stopping, normalisation from inner-train rows) and predict the test rows."""
    from mercl.training.crossval import train_split
    from mercl.training.loop import predict_batches

    labels = prepared.labels(scheme)
    inner_train, inner_val = cv.inner_split(fold.train, labels, cfg.val_fraction)
    start = time.perf_counter()
    run = train_split(prepared, scheme, inner_train, inner_val, cfg, show_progress=False)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    pred = predict_batches(run.model, run.batches(prepared, fold.test, scheme, cfg), run.device)
    predict_s = time.perf_counter() - start
    order = np.argsort(pred["index"], kind="stable")
    if not np.array_equal(pred["index"][order], fold.test):
        raise RuntimeError("predictions do not cover the test fold")  # a bug, not a user error
    return {
        "y_true": pred["label"][order], "y_pred": pred["pred"][order], "train_s": train_s, "predict_s": predict_s,
        "history": run.result.history, "best_epoch": run.result.best_epoch, "variant": variant_name(cfg),
        "embeddings": _embedding_sample(run, prepared, fold.test, scheme, cfg),
    }


def run_baseline_fold(prepared: PreparedDataset, features, method: str, scheme: str, seed: int, fold) -> dict:
    """Fit a baseline on the fold's training rows and predict its test rows."""
    labels = prepared.labels(scheme)
    if method in TRIVIAL_BASELINES:
        start = time.perf_counter()
        n_classes = len(class_names(scheme))
        if method == "majority":
            pred, _ = majority_baseline(labels[fold.train], labels[fold.test], n_classes)
        else:
            stimuli = prepared.stimulus_ids
            pred, _ = clip_majority_baseline(labels[fold.train], stimuli[fold.train], stimuli[fold.test],
                                             labels[fold.test], n_classes)
        return {"y_true": labels[fold.test], "y_pred": pred, "train_s": time.perf_counter() - start,
                "predict_s": 0.0}
    from mercl.baselines import CPU_OPTIONS, get_baseline

    model = get_baseline(method)(seed=seed, **CPU_OPTIONS.get(method, {}))
    start = time.perf_counter()
    model.fit(features, fold.train, labels[fold.train])
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    pred = model.predict(features, fold.test)
    return {"y_true": labels[fold.test], "y_pred": pred, "train_s": train_s,
            "predict_s": time.perf_counter() - start}


def unit_record(unit: Unit, prepared: PreparedDataset, fold, out: dict, plabel: str) -> dict:
    """The JSON stored for one unit."""
    n_classes = len(class_names(unit.scheme))
    meta = prepared.rows.iloc[fold.test]
    record = {
        "key": unit.key, "row": unit.row.label, "method": unit.row.method, "table": unit.row.table,
        "scheme": unit.scheme, "protocol": unit.protocol, "protocol_label": plabel, "fold": unit.fold,
        "held_out_subject": fold.held_out_subject or "",
        **_scores(out["y_true"], out["y_pred"], n_classes),
        "train_s": float(out["train_s"]), "predict_s": float(out["predict_s"]),
        "predictions": {"row": fold.test.astype(int).tolist(), "subject": meta["subject"].astype(str).tolist(),
                        "label": np.asarray(out["y_true"]).astype(int).tolist(),
                        "prediction": np.asarray(out["y_pred"]).astype(int).tolist()},
    }
    for extra in ("history", "best_epoch", "variant", "embeddings"):
        if extra in out:
            record[extra] = out[extra]
    return record


def compute_unit(prepared: PreparedDataset, features, unit: Unit, cv, seed: int) -> dict:
    """One unit's JSON record (``features``: the baselines' inputs, None for MERCL/majority)."""
    fold = cv.folds[unit.fold]
    if unit.row.method == "mercl":
        result = run_mercl_fold(prepared, unit.scheme, unit.row.cfg, cv, fold)
    else:
        result = run_baseline_fold(prepared, features, unit.row.method, unit.scheme, seed, fold)
    return unit_record(unit, prepared, fold, result, protocol_label(unit.protocol, cv.clip_shared))


_FEATURES: dict[str, object] = {}  # per worker process: the baselines' features of the dataset it holds


def compute_unit_from_path(dataset: str, unit: Unit, cv, seed: int) -> dict:
    """:func:`compute_unit` in a worker process (a Ray task or a local worker): the dataset
    (:func:`~mercl.data.reader.load_dataset_once`) and the baselines' features (read from
    DATASET/cache) are loaded once per process, not per unit."""
    prepared = load_dataset_once(dataset)
    features = None
    if unit.row.method in BASELINE_METHODS:
        key = dataset_content(prepared.manifest)
        if key not in _FEATURES:
            from mercl.baselines import build_features

            _FEATURES.clear()
            _FEATURES[key] = build_features(prepared, progress=False)
        features = _FEATURES[key]
    return compute_unit(prepared, features, unit, cv, seed)


def build_shared_caches(units: list[Unit], prepared: PreparedDataset, show_progress: bool) -> None:
    """Build the baselines' features and every MERCL config's frozen-backbone feature cache here,
    once, before parallel workers start (each would otherwise compute the same caches)."""
    if any(u.row.method in BASELINE_METHODS for u in units):
        from mercl.baselines import build_features

        build_features(prepared, progress=show_progress)
    from mercl.models import build_model
    from mercl.training.crossval import data_shapes
    from mercl.training.feature_cache import ensure_feature_cache
    from mercl.training.loop import resolve_device, seed_everything

    configs = {config_hash(u.row.cfg): (u.row.cfg, u.scheme) for u in units if u.row.method == "mercl"}
    for cfg, scheme in configs.values():
        if cfg.cache_backbone_features:
            seed_everything(cfg.seed)  # as crossval.train_split does: the same backbones, the same cache
            model = build_model(cfg.model, data_shapes(prepared, len(class_names(scheme))))
            ensure_feature_cache(model, prepared, batch_size=64, device=resolve_device(cfg.device),
                                 show_progress=show_progress)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_in_processes(exp: Experiment, units: list[Unit], cvs: dict, workers: int, show_progress: bool):
    """Yield (unit, record) as ``workers`` local processes (spawned, ``cpus // workers`` torch
    threads each) finish the units, the slowest kinds first so none is left alone at the end."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    threads = max(1, (os.cpu_count() or 1) // workers)
    cost = {"mercl": 0, "ve_bilstm": 1, "ave_lstm": 2}
    ordered = sorted(units, key=lambda u: cost.get(u.row.method, 3))
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    dataset = str(Path(exp.dataset).resolve())
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_set_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(compute_unit_from_path, dataset, u, cvs[u.protocol, u.scheme], exp.seed): u
                   for u in ordered}
        with tqdm(total=len(futures), desc=f"method x fold ({workers} processes)", unit="unit",
                  disable=not show_progress) as bar:
            for future in as_completed(futures):
                yield futures[future], future.result()
                bar.update(1)


NETWORK_METHODS = ("mercl", "ve_bilstm", "ave_lstm")  # train a torch network: worth a GPU


def unit_gpus(method: str, gpus_per_unit: float | None, cluster_gpus: float) -> float:
    """GPUs one unit's Ray task asks for: ``gpus_per_unit`` when given, else 1 for a method that
    trains a network on a cluster with GPUs, 0 for the tree/ELM baselines and the majority rows."""
    if gpus_per_unit is not None:
        return gpus_per_unit if method in NETWORK_METHODS else 0.0
    return 1.0 if cluster_gpus > 0 and method in NETWORK_METHODS else 0.0


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has now or, per its autoscaler's config, may add (node
    types that start at zero show up only there)."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    try:  # Ray's own view of the autoscaler's node types (what Ray Train also reads); private API
        from ray._private.state import state

        gpus = max(gpus, (state.get_max_resources_from_cluster_config() or {}).get("GPU", 0) or 0)
    except Exception:
        pass
    return float(gpus)


def _placement() -> dict:
    """Where the calling Ray task runs: node id, host, the GPU ids Ray gave it."""
    import socket

    import ray

    context = ray.get_runtime_context()
    return {"node_id": context.get_node_id(), "host": socket.gethostname(),
            "gpu_ids": [str(g) for g in context.get_accelerator_ids().get("GPU", [])]}


def _compute_unit_placed(dataset: str, unit: Unit, cv, seed: int) -> dict:
    """:func:`compute_unit_from_path` in a Ray task; the record says where it ran (``placement``)."""
    record = compute_unit_from_path(dataset, unit, cv, seed)
    record["placement"] = _placement()
    return record


def _build_shared_caches_placed(dataset: str, units: list[Unit]) -> dict:
    """:func:`build_shared_caches` in a Ray task (on a worker with the units' accelerator, not on
    the head that runs the driver); returns where it ran."""
    build_shared_caches(units, load_dataset_once(dataset), show_progress=False)
    return _placement()


def _run_on_ray(exp: Experiment, units: list[Unit], cvs: dict, address: str, show_progress: bool,
                gpus_per_unit: float | None = None, cache_placement: dict | None = None):
    """Yield (unit, record) as the Ray tasks (one per unit) finish. Ray is imported only here.

    Each task asks for one CPU and :func:`unit_gpus` GPUs, so a network's unit gets a GPU of
    its own in Ray's accounting (``device: auto`` then resolves to that GPU) and never runs on
    a GPU-less head. On a cluster with GPUs the tasks that ask for none see none
    (``CUDA_VISIBLE_DEVICES=""``): they would otherwise see every GPU of their node and take
    ``cuda:0`` outside Ray's accounting.
    """
    import ray
    from tqdm.auto import tqdm

    started = not ray.is_initialized()
    if started:
        if address == "local":
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        gpus_here = cluster_gpus()
        task = ray.remote(num_cpus=1)(_compute_unit_placed)

        def submit(unit: Unit):
            gpus = unit_gpus(unit.row.method, gpus_per_unit, gpus_here)
            options: dict = {"num_gpus": gpus}
            if gpus == 0 and gpus_here > 0:
                options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
            return task.options(**options).remote(dataset, unit, cvs[unit.protocol, unit.scheme], exp.seed)

        dataset = str(Path(exp.dataset).resolve())
        # The shared caches (the backbones over every clip, the baselines' features) on the cluster,
        # with the GPU a MERCL unit gets: computing them in the driver would run the ViT on the head.
        cache_gpus = max([unit_gpus(u.row.method, gpus_per_unit, gpus_here) for u in units], default=0.0)
        cache_task = ray.remote(num_cpus=1, num_gpus=cache_gpus)(_build_shared_caches_placed)
        placed = ray.get(cache_task.remote(dataset, units))
        if cache_placement is not None:
            cache_placement.update(placed)
        pending = {submit(u): u for u in units}
        with tqdm(total=len(pending), desc="method x fold (ray)", unit="unit", disable=not show_progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                unit = pending.pop(done[0])
                yield unit, ray.get(done[0])
                bar.update(1)
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------- the whole experiment


def load_record(path: Path) -> dict | None:
    """A unit's stored result, or None when absent/unreadable (then it is recomputed)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _compute_units(exp: Experiment, prepared, distinct: list, cvs: dict, cache: Path, say, *, show_progress: bool,
                   ray_address: str | None, workers: int, gpus_per_unit: float | None) -> dict:
    """Compute ``distinct`` units into ``cache`` (here, in local processes or as Ray tasks);
    returns where Ray built the shared caches (empty without Ray)."""
    cache_placement: dict = {}
    if not distinct:
        return cache_placement
    if ray_address is not None or (workers > 1 and len(distinct) > 1):
        say("shared caches (baseline features, backbone features): building or reading DATASET/cache"
            + (" in a Ray task" if ray_address is not None else ""))
        if ray_address is not None:
            fanned = _run_on_ray(exp, distinct, cvs, ray_address, show_progress, gpus_per_unit, cache_placement)
        else:
            build_shared_caches(distinct, prepared, show_progress)
            fanned = _run_in_processes(exp, distinct, cvs, min(workers, len(distinct)), show_progress)
        for unit, record in fanned:
            atomic.write_json(cache / unit.file_name, record, indent=None)
        return cache_placement
    features = None
    if any(u.row.method in BASELINE_METHODS for u in distinct):
        from mercl.baselines import build_features

        say("baseline features: building or reading DATASET/cache")
        features = build_features(prepared, progress=show_progress)
    from tqdm.auto import tqdm

    for unit in tqdm(distinct, desc="method x fold", unit="unit", disable=not show_progress):
        record = compute_unit(prepared, features, unit, cvs[unit.protocol, unit.scheme], exp.seed)
        atomic.write_json(cache / unit.file_name, record, indent=None)
    return cache_placement


def _results_table(units: list, cache: Path, labels_of: dict[str, str]) -> pd.DataFrame:
    """results.csv: one row per unit (method x scheme x protocol x fold) from its cached record."""
    rows = []
    for unit in units:
        record = load_record(cache / unit.file_name)
        rows.append({"row": unit.row.label, "table": unit.row.table, "method": unit.row.method,
                     "scheme": unit.scheme, "protocol": unit.protocol,
                     "protocol_label": labels_of[unit.protocol], "fold": unit.fold,
                     "accuracy": record["accuracy"], "macro_f1": record["macro_f1"],
                     "n_test": record["n_test"], "train_s": record["train_s"],
                     "predict_s": record["predict_s"], "unit_file": f"cache/{unit.file_name}"})
    return pd.DataFrame(rows)


def run_experiment(
    exp: Experiment,
    out_dir: str | Path,
    *,
    show_progress: bool = True,
    console: Callable[[str], None] | None = print,
    ray_address: str | None = None,
    workers: int = 1,
    gpus_per_unit: float | None = None,
) -> RunOutcome:
    """Run (or read from RUN_DIR/cache) every unit of ``exp``; writes experiment.json and results.csv.

    ray_address: None computes the units here, one after the other; otherwise one Ray task per
    unit (``"local"``: a fresh local Ray instance; else a cluster address such as ``"auto"``);
    the dataset path must be readable by the workers. Same results either way.
    workers > 1 (without Ray): that many local processes share the units.
    gpus_per_unit (with Ray): GPUs per unit of a method that trains a network (None: 1 when the
    cluster has GPUs; see :func:`unit_gpus`).
    """
    say = console or (lambda _msg: None)
    out = Path(out_dir)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    prepared = load_dataset(exp.dataset)
    dataset_id = prepared.manifest.get("dataset_id", prepared.path.name)

    cvs = {}
    for protocol in exp.protocols:
        for scheme in exp.schemes:
            cvs[protocol, scheme] = protocol_folds(protocol, prepared, prepared.labels(scheme), exp.folds, exp.seed)
    n_folds = {p: len(cvs[p, exp.schemes[0]]) for p in exp.protocols}
    units = plan_units(exp, dataset_id, n_folds, dataset_content(prepared.manifest))
    todo = [u for u in units if load_record(cache / u.file_name) is None]
    n_keys = len({u.key for u in units})
    n_todo = len({u.key for u in todo})
    say(f"experiment {exp.kind} on {dataset_id}: {n_keys} units (method x scheme x protocol x fold), "
        f"{n_keys - n_todo} cached, {n_todo} to compute")
    labels_of = {p: protocol_label(p, cvs[p, exp.schemes[0]].clip_shared) for p in exp.protocols}
    for protocol in exp.protocols:
        cv = cvs[protocol, exp.schemes[0]]
        if cv.warning:
            say(f"{'LEAKY' if cv.leaky else 'NOTE'}: protocol {labels_of[protocol]}: {cv.warning}")
        if sum(f.dropped for f in cv):
            say(f"{protocol}: training sides leave out {', '.join(str(f.dropped) for f in cv)} rows per fold "
                "(they share a subject or a clip with the test side)")

    distinct = list({u.key: u for u in todo}.values())  # a unit shared by two tables runs once
    cache_placement = _compute_units(exp, prepared, distinct, cvs, cache, say, show_progress=show_progress,
                                     ray_address=ray_address, workers=workers, gpus_per_unit=gpus_per_unit)
    results = _results_table(units, cache, labels_of)
    meta = {
        "kind": exp.kind, "dataset": str(exp.dataset), "dataset_id": dataset_id, "protocols": exp.protocols,
        "schemes": exp.schemes, "folds": exp.folds, "n_folds": n_folds, "seed": exp.seed,
        "config_name": exp.config_name, "config_hash": config_hash(exp.cfg), "config": to_dict(exp.cfg),
        "rows": [{"label": r.label, "method": r.method, "table": r.table} for r in exp.rows],
        "warnings": {p: cvs[p, exp.schemes[0]].warning for p in exp.protocols if cvs[p, exp.schemes[0]].warning},
        "leaky": [p for p in exp.protocols if cvs[p, exp.schemes[0]].leaky],
        "dropped": {p: [f.dropped for f in cvs[p, exp.schemes[0]]] for p in exp.protocols},
        "protocol_labels": labels_of,
        "shared_clips": shared_stimuli(prepared.subjects, prepared.stimulus_ids),
        "units": [f"cache/{u.file_name}" for u in units],
        **({"shared_caches_placement": cache_placement} if cache_placement else {}),
    }
    atomic.write_atomic(out / "results.csv", lambda p: results.to_csv(p, index=False))
    atomic.write_json(out / "experiment.json", meta, indent=None)
    computed = len(distinct)
    say(f"computed {computed} units, {n_keys - computed} from the cache; wrote {out / 'results.csv'}")
    return RunOutcome(results, computed, n_keys - computed, units)
