"""The search's heavy steps as Ray tasks on the nodes trials run on, never in the driver.

On a cluster like ``cluster/aws.yaml`` the search's driver runs on a CPU-only head; the GPU
nodes host the trials. Three steps besides the trials train or run networks, and each runs
here as a Ray task asking for what one trial worker asks for (``resources.cpus_per_worker``
CPUs and ``resources.gpus_per_worker`` GPUs), so it lands on a node that can host a trial
and uses its accelerator (``device: auto`` resolves inside the task):

* :func:`feature_cache_task`: the frozen backbones (ViT/VGGish) over every stimulus segment;
  the driver writes the returned features into the dataset's feature cache;
* :func:`outer_fold_task`: one outer fold of a configuration (train on the fold's inner split,
  predict its test rows); all folds are submitted at once and run in parallel where the
  cluster has room (the outer CV of the best configuration, a nested search's outer scores);
* :func:`final_model_task`: the best configuration trained on all the data through
  ``mercl.training.train_model.train_once``; its output files come back as bytes, so the model
  lands in the search's results folder whatever node trained it.

Each task returns the id of the node it ran on; the search records them in
``placement.json``. The dataset reaches a task as its path (``data.read: parquet``: every
node reads the dataset, as Ray Data's read tasks do) or, with ``data.read: driver``, as the
loaded dataset through the object store.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FINAL_FILES = ("model.pt", "metrics.json", "history.csv", "config.json")


def task_options(resources) -> dict[str, Any]:
    """``ray.remote`` options of one trial worker's resources (:class:`tuning.config.ResourcesSection`)."""
    options: dict[str, Any] = {"num_cpus": resources.cpus_per_worker, "max_retries": 1}
    if resources.gpus_per_worker > 0:
        options["num_gpus"] = resources.gpus_per_worker
    if resources.custom_per_worker:
        options["resources"] = dict(resources.custom_per_worker)
    return options


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _dataset(source):
    """A PreparedDataset from a path (loaded on this node, once per worker process: Ray runs the
    next fold's task in the same process) or as it came through the object store."""
    from mercl.data.reader import PreparedDataset, load_dataset_once

    return source if isinstance(source, PreparedDataset) else load_dataset_once(source)


def feature_cache_task(model, stimuli, batch_size: int = 64) -> tuple[dict[str, np.ndarray], str]:
    """The frozen backbones' features of every stimulus row, on this task's device.

    model: the search's base model (its frozen backbones as the driver built them, so the
    features match the cache key's weights digest); stimuli: the dataset's StimulusTable.
    Returns ``({"video_feat": (M, T_v, D_v), ...}, node id)``.
    """
    from types import SimpleNamespace

    from mercl.training.feature_cache import compute_backbone_features
    from mercl.training.loop import resolve_device

    device = resolve_device("auto")
    model.to(device)
    features = compute_backbone_features(model, SimpleNamespace(stimuli=stimuli), batch_size, device)
    return features, _node_id()


def outer_fold_task(source, label: str, train_config: dict, protocol: str, n_folds: int, fold: int) -> dict:
    """Train ``train_config`` on outer fold ``fold``'s training side, predict its test rows.

    The folds and the inner split (early stopping) are ``mercl evaluate``'s for the same
    protocol and seed. Returns ``{"fold", "rows" (n,), "label", "pred", "prob" (n, C),
    "history", "best_epoch", "seconds", "node"}``.
    """
    from mercl.data.protocols import protocol_folds
    from mercl.training.config import train_config_from_dict
    from mercl.training.crossval import train_split
    from mercl.training.loop import predict_batches

    prepared = _dataset(source)
    cfg = train_config_from_dict(train_config)
    labels = prepared.labels(label)
    cv = protocol_folds(protocol, prepared, labels, n_folds, cfg.seed)
    outer = cv.folds[fold]
    inner_train, inner_val = cv.inner_split(outer.train, labels, cfg.val_fraction)
    run = train_split(prepared, label, inner_train, inner_val, cfg)
    pred = predict_batches(run.model, run.batches(prepared, outer.test, label, cfg), run.device)
    order = np.argsort(pred["index"], kind="stable")
    if not np.array_equal(pred["index"][order], outer.test):
        raise RuntimeError("predictions do not cover the test fold")  # a bug, not a user error
    return {"fold": fold, "rows": pred["index"][order], "label": pred["label"][order], "pred": pred["pred"][order],
            "prob": pred["prob"][order], "history": run.result.history, "best_epoch": run.result.best_epoch,
            "seconds": run.seconds, "node": _node_id()}


def final_model_task(source, label: str, train_config: dict, protocol: str) -> tuple[dict[str, bytes], str]:
    """``train_once`` on all the data (its validation split, held out the way ``protocol`` holds out,
    for early stopping).

    Returns ({file name: bytes} of :data:`FINAL_FILES` that were written, node id).
    """
    from mercl.training.config import train_config_from_dict
    from mercl.training.train_model import train_once

    prepared = _dataset(source)
    cfg = train_config_from_dict(train_config)
    with tempfile.TemporaryDirectory(prefix="mercl-final-") as folder:
        train_once(prepared, label, cfg, folder, show_progress=False, console=None, protocol=protocol)
        files = {name: (Path(folder) / name).read_bytes() for name in FINAL_FILES if (Path(folder) / name).is_file()}
    return files, _node_id()


def remote(function, resources):
    """``function`` as a Ray remote function with one trial worker's resources."""
    import ray

    return ray.remote(**task_options(resources))(function)


def run_outer_folds(source, label: str, configs: dict[int, dict], protocol: str, n_folds: int, resources,
                    max_parallel: int = 0, say=print) -> dict[int, dict]:
    """Outer folds as Ray tasks, at most ``max_parallel`` at a time (0: all at once).

    configs: {fold: training config dict} (the same config for every fold in a plain
    search's outer CV; each fold's own best config in a nested search).
    """
    import ray

    task = remote(outer_fold_task, resources)
    pending = list(configs.items())
    running: dict[Any, int] = {}
    done: dict[int, dict] = {}
    limit = max_parallel or len(pending)
    while pending or running:
        while pending and len(running) < limit:
            fold, cfg = pending.pop(0)
            running[task.remote(source, label, cfg, protocol, n_folds, fold)] = fold
        ready, _ = ray.wait(list(running), num_returns=1)
        fold = running.pop(ready[0])
        done[fold] = ray.get(ready[0])
        say(f"outer fold {fold}: trained in {done[fold]['seconds']:.0f} s on node {done[fold]['node'][:8]}")
    return done
