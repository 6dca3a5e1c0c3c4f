"""Warm single-worker trials: a trial that fits one worker trains inside its Tune actor.

``resources.runner: inprocess`` (``auto`` picks it when ``num_workers == 1``) makes the Tune
function trainable itself the trial's only rank: it asks for the rank's resources
(``cpus_per_worker``, ``gpus_per_worker``, ``custom_per_worker``), so training lands where a
Ray Train rank would, and runs the same loop a Ray Train worker runs
(:func:`tuning.worker.run_training`). With ``TuneConfig(reuse_actors=True)`` Tune hands the
next trial to the same actor (``FunctionTrainable.reset_config``): no process start, no
imports, no controller, no process group, no Ray Train worker group per trial.

Per-epoch metrics and checkpoints go through ``ray.tune.report``; Tune keeps the checkpoints
(``CheckpointConfig(num_to_keep=fault.keep_checkpoints)``) and, after a driver restart
(``Tuner.restore``) or a dead actor (Tune's ``FailureConfig(max_failures=fault.max_failures)``),
gives the newest back through ``ray.tune.get_checkpoint()``: the run resumes from it with
:class:`tuning.worker.TuneReporter`'s semantics (``restarts`` counts; a run resumed at its
last epoch reports it again).

What a warm actor keeps between trials is only the data (:class:`ProcessCache`): the
stimulus arrays (one ``ray.get`` of the search's object ref) and the in-memory train and
validation rows of each searched fold (read from the materialised Ray Datasets once per
process), keyed by the search's data key. Each trial starts clean (:func:`clean_slate`):
seeds, model and optimizer are made by the trial, torch's global switches are put back to
their defaults, and CUDA's cached blocks are released.
"""

from __future__ import annotations

import gc
import logging
import shutil
import time
from typing import Any


class ProcessCache:
    """Data a warm actor keeps across the trials of one search (the only state it keeps).

    Entries are keyed ``(data_key, name)``; ``data_key`` names one search's data (a new search
    in the same process drops the previous search's entries). Tensors and arrays count against
    ``max_bytes``: past it the least recently used entries go (a nested search's folds take
    turns, each fold's rows are read again only when they no longer fit).
    """

    def __init__(self, max_bytes: int = 4 * 2**30):
        self.data_key: str | None = None
        self.entries: dict[str, Any] = {}
        self.max_bytes = max_bytes
        self.hits = 0

    def get(self, data_key: str, name: str, make):
        if data_key != self.data_key:
            self.entries.clear()
            self.data_key = data_key
        if name in self.entries:
            self.hits += 1
            self.entries[name] = self.entries.pop(name)  # most recently used last
            return self.entries[name]
        value = make()
        while self.entries and sum(map(nbytes, self.entries.values())) + nbytes(value) > self.max_bytes:
            self.entries.pop(next(iter(self.entries)))
        self.entries[name] = value
        return value


def nbytes(value: Any) -> int:
    """Bytes held by a cached value: a dict of tensors, or anything with ``nbytes``."""
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if hasattr(value, "element_size") and hasattr(value, "numel"):
        return int(value.element_size() * value.numel())
    return int(getattr(value, "nbytes", 0))


CACHE = ProcessCache()


def clean_slate(use_gpu: bool) -> None:
    """Put back what an earlier trial in this process may have changed (torch's global switches,
    CUDA's cached blocks); seeds, model and optimizer are made by the trial itself.

    On a GPU the earlier trial's tensors are collected first (a stopped trial's frames may hold
    them in a reference cycle) and the allocator's cache emptied, so the trial starts with no
    leftover CUDA memory. On a CPU that collection (~0.1-0.3 s with torch loaded) buys nothing:
    freed memory goes back to the allocator either way.
    """
    import torch

    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = False
    if use_gpu and torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def quiet_tune_checkpoints() -> None:
    """Silence the INFO line Ray logs in the trial's actor for every checkpoint it reports
    ("Checkpoint successfully created at: ..."): one per epoch on the console otherwise."""
    try:
        from ray.train._internal import storage
    except ImportError:  # another Ray version: keep its logging as it is
        return
    for name in (storage.__name__, storage.__file__):
        logging.getLogger(name).setLevel(logging.WARNING)


def tune_report(metrics: dict[str, Any], folder: str | None = None) -> None:
    """``ray.tune.report``, with the checkpoint folder (copied to the trial's storage) removed after."""
    import ray.tune

    if folder is None:
        ray.tune.report(metrics)
        return
    try:
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(folder))
    finally:  # also when Tune stops the trial inside report (SystemExit)
        shutil.rmtree(folder, ignore_errors=True)


def run_inprocess_trial(params: dict[str, Any], setup) -> None:
    """Tune function trainable body of a one-rank trial (``setup``: :class:`tuning.trial_driver.TrialSetup`)."""
    started = time.time()
    import ray
    import ray.tune

    from mercl.training.config import train_config_from_dict
    from tuning.trial_driver import trial_train_config
    from tuning.worker import (
        ShardFeed,
        Timings,
        first_report_timer,
        load_resume_state,
        read_rows,
        require_cuda,
        run_training,
        write_pid_file,
    )

    context = ray.tune.get_context()
    worker = setup.worker
    use_gpu = setup.gpus_per_worker > 0
    timings = Timings(worker.timings_dir, context.get_trial_name(), "inprocess", started)
    timings.process_start(started)
    require_cuda(use_gpu)
    write_pid_file(worker.pid_dir, context.get_trial_name(), 0)
    ray.data.DataContext.get_current().enable_progress_bars = False
    quiet_tune_checkpoints()
    clean_slate(use_gpu)
    cfg = train_config_from_dict(trial_train_config(params, setup))
    cfg.device = "cuda:0" if use_gpu else "cpu"  # Ray shows the actor only its own GPU(s)
    timings.mark("imports")
    key = setup.data_key
    stimuli = CACHE.get(key, "stimuli", lambda: ray.get(worker.stimuli_ref))
    feeds = {}
    for split in ("train", "val"):
        rows = (CACHE.get(key, f"rows/{setup.fold}/{split}", lambda s=split: read_rows(setup.datasets[s]))
                if worker.in_memory else None)
        feeds[split] = ShardFeed(setup.datasets[split], worker, stimuli, seed=cfg.seed, rows=rows)
    resume = load_resume_state(ray.tune.get_checkpoint())
    timings.mark("data")
    run_training(worker, cfg, first_report_timer(tune_report, timings), train_feed=feeds["train"],
                 val_feed=feeds["val"], checkpoint_every=setup.checkpoint_every, resume=resume, mark=timings.mark)
