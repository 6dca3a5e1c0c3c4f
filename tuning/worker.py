"""``train_loop_per_worker``: one Ray Train DDP worker running mercl's two-stage training loop.

Each worker takes its share of the inner-train Ray Dataset (``ray.train.get_dataset_shard``)
and the whole inner-validation dataset, turns them into batch dicts (docs/CONTRACTS.md) with
``iter_torch_batches`` plus the stimulus arrays from the object store, and runs
:func:`mercl.training.loop.train_two_stage` (which wraps the model in DDP itself and gathers
the contrastive sets over the global batch). After every epoch of both stages it reports the
metrics with ``global_epoch`` (ASHA's time axis) and, from rank 0, a checkpoint; a restarted
worker group resumes from the newest checkpoint.

Data that fit ``in_memory_max_mb`` (the whole inner-train plus validation rows) are read from
Ray Data once per trial by every worker, unsplit, and put in dataset-row order: each epoch every
rank draws the same seeded permutation and takes its own equal share (``DistributedSampler``'s
scheme), so a resumed run, or the same configuration in another search, sees the same batches,
and no split coordinator actor is started (~3-6 s per trial on 2 cores).
Larger data are split by Ray Data (``streaming_split``) and stream through
``iter_torch_batches`` every epoch with a local shuffle buffer.

Batches leave here on the CPU. On a GPU the training loop
(:func:`mercl.training.loop.device_batches`) builds and pins the next batches in a
background thread and copies them to the device without blocking, one batch ahead, so the
step does not wait for this code. A worker of a GPU trial that finds no CUDA device stops at
once with one line naming its node and the fix (:func:`require_cuda`), instead of training
on the CPU or failing deep inside NCCL.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mercl.atomic import write_text

CHECKPOINT_FILE = "train_state.pt"


@dataclass
class WorkerSetup:
    """What every worker of every trial needs besides its trial's training config."""

    shapes: Any  # mercl.models.config.DataShapes
    class_names: list[str]
    norm: Any  # mercl.training.normalize.NormStats
    stimuli_ref: Any  # ObjectRef of tuning.data.StimulusArrays
    in_memory: bool
    pid_dir: str | None = None
    cached_backbones: dict[str, Any] | None = None  # {modality: mercl.models.CachedBackbone}
    timings_dir: str | None = None  # start-up phases of every trial -> <dir>/timings.jsonl (bench/search.py)


def read_rows(shard) -> dict[str, torch.Tensor]:
    """All rows of a Ray Dataset (or shard) as CPU tensors, sorted by their dataset ``index``.

    Ray Data's blocks can arrive in any order (parallel reads): rows sorted by their dataset
    index make each epoch's seeded batches the same in every run and restart.
    """
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in shard.iter_torch_batches(batch_size=4096, device="cpu"):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
    core = {key: torch.cat(values) for key, values in parts.items()}
    order = torch.argsort(core["index"])
    return {key: value[order] for key, value in core.items()}


class ShardFeed:
    """Batches of one worker's Ray Data shard, joined with the stimulus arrays and normalised.

    Batches stay on the CPU (the training loop moves them to the worker's device).
    """

    def __init__(self, shard, setup: WorkerSetup, stimuli, *, seed: int, rank: int = 0, world: int = 1,
                 rows: dict[str, torch.Tensor] | None = None):
        self.shard = shard
        self.setup = setup
        self.stimuli = stimuli
        self.seed = seed
        self.rank, self.world = rank, world  # in memory: this rank's share of each epoch's permutation
        self.core: dict[str, torch.Tensor] | None = None
        if setup.in_memory:  # ``rows``: what read_rows(shard) gave before (a warm actor's cache)
            self.core = rows if rows is not None else read_rows(shard)

    def __len__(self) -> int:
        return len(self.core["label"]) if self.core is not None else -1

    def _finish(self, core: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.setup.norm.apply(self.stimuli.join(core))

    def batches(self, epoch: int, batch_size: int, *, shuffle: bool) -> Iterator[dict[str, torch.Tensor]]:
        """One pass; training passes (``shuffle``) drop a last incomplete batch like mercl's own loader."""
        if self.core is not None:
            n = len(self)
            if shuffle:
                generator = torch.Generator()
                generator.manual_seed(self.seed * 100_003 + epoch)
                order = torch.randperm(n, generator=generator)
            else:
                order = torch.arange(n)
            if self.world > 1:  # equal shares: DDP ranks must run the same number of steps
                order = order[: (n // self.world) * self.world][self.rank::self.world]
                n = len(order)
            drop_last = shuffle and n > batch_size
            stop = (n // batch_size) * batch_size if drop_last else n
            for start in range(0, stop, batch_size):
                idx = order[start:start + batch_size]
                yield self._finish({k: v[idx] for k, v in self.core.items()})
            return
        options: dict[str, Any] = {"batch_size": batch_size, "drop_last": shuffle, "device": "cpu"}
        if shuffle:
            options.update(local_shuffle_buffer_size=max(4 * batch_size, 256),
                           local_shuffle_seed=self.seed * 100_003 + epoch)
        for core in self.shard.iter_torch_batches(**options):
            yield self._finish(core)


def cuda_unavailable_reason() -> str | None:
    """Why torch sees no CUDA device here (None when it sees one), in one line."""
    import torch.cuda

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as exc:  # e.g. "The NVIDIA driver on your system is too old (found version 12020)"
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for warning in caught:
        text = str(warning.message).strip()
        if text:
            return text.splitlines()[0]
    return f"no CUDA device visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r})"


def node_name() -> str:
    """This machine's host name and, inside Ray, its node IP."""
    try:
        import ray.util

        return f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
    except Exception:
        return socket.gethostname()


def require_cuda(use_gpu: bool) -> None:
    """A GPU trial's worker without a usable CUDA device: one-line MerclError naming the node and the fix."""
    if not use_gpu:
        return
    reason = cuda_unavailable_reason()
    if reason is None:
        return
    from mercl.errors import MerclError

    raise MerclError(
        f"node {node_name()}: resources.gpus_per_worker > 0 but torch {torch.__version__} (CUDA "
        f"{torch.version.cuda}) finds no usable GPU: {reason}. Fix: give the GPU nodes an NVIDIA driver "
        f"that supports CUDA {torch.version.cuda} (torch 2.14.1+cu130 needs driver >= 580) and the NVIDIA "
        "container runtime, see cluster/README.md 'GPU driver and image'; or search on CPUs with "
        "--gpus-per-worker 0")


def quiet_ray_train_reports() -> None:
    """Silence Ray Train's per-report INFO lines in the worker (two per epoch per worker).

    ``RunConfig(logging_config=LoggingConfig("WARNING"))`` does not reach them in Ray 2.60:
    one logger is named after its file instead of its module.
    """
    try:
        from ray.train.v2._internal.execution import context, storage
    except ImportError:  # another Ray version: keep its logging as it is
        return
    for module in (context, storage):
        logging.getLogger(module.__file__).setLevel(logging.WARNING)
        logging.getLogger(module.__name__).setLevel(logging.WARNING)


def write_pid_file(pid_dir: str | None, trial_name: str, rank: int) -> None:
    """``<pid_dir>/<trial>-rank<k>.pid`` holding this worker's PID (fault-injection tests kill it)."""
    if not pid_dir:
        return
    path = Path(pid_dir) / f"{trial_name}-rank{rank}.pid"
    write_text(path, str(os.getpid()))


def load_resume_state(checkpoint) -> dict | None:
    """The training state in a run's checkpoint (``ray.train`` / ``ray.tune.get_checkpoint()``), or None."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        from mercl.training.checkpoint import load_checkpoint  # weights_only=True: no code runs from the file

        return load_checkpoint(Path(folder) / CHECKPOINT_FILE, map_location="cpu")


def report_metrics(report, extra: dict[str, Any]) -> dict[str, Any]:
    """The dict reported to Tune for one epoch: plain floats, ``global_epoch``, stage."""
    metrics: dict[str, Any] = {}
    for key, value in report.metrics.items():
        if isinstance(value, (int, float)) or hasattr(value, "item"):
            value = float(value)
            metrics[key] = value if math.isfinite(value) else float("nan")
    metrics.update(global_epoch=int(report.global_epoch), stage=report.stage, stage_epoch=int(report.epoch))
    metrics.update(extra)
    return metrics


class TuneReporter:
    """Reports every epoch of one worker to Ray Train (and through it to Tune); rank 0 adds a
    checkpoint every ``every`` epochs and at the end of each stage.

    ``report(metrics, folder=None)`` is the call to Ray Train (``folder``: a checkpoint
    directory to upload). ``restarts``: how often this run was restarted from a checkpoint.
    """

    def __init__(self, report, rank: int, every: int, stage_epochs: dict[str, int], restarts: int):
        self.report, self.rank, self.every = report, rank, every
        self.stage_epochs, self.restarts = stage_epochs, restarts
        self.reported = 0

    def on_epoch_end(self, epoch) -> None:
        """``train_two_stage``'s callback (``epoch``: a :class:`mercl.training.loop.EpochReport`)."""
        metrics = report_metrics(epoch, {"restarts": self.restarts})
        self.reported += 1
        if self.rank != 0 or not (epoch.epoch % self.every == 0 or epoch.epoch == self.stage_epochs[epoch.stage]):
            self.report(metrics)
            return
        state = epoch.state()
        state["restarts"] = self.restarts
        folder = tempfile.mkdtemp(prefix="mercl-ckpt-")
        torch.save(state, Path(folder) / CHECKPOINT_FILE)
        self.report(metrics, folder)

    def finish(self, resume: dict | None) -> None:
        """A run resumed from the checkpoint of its last epoch trains nothing more (a search
        driver killed after the trial's last checkpoint but before Tune saved that it ended):
        report that last epoch again, so Tune, Optuna and trials.csv see the run's true final
        result and its restart rather than what Tune's saved state held from before."""
        if self.reported or resume is None or not resume.get("history"):
            return
        last = dict(resume["history"][-1])
        stage, epoch, global_epoch = last.pop("stage"), last.pop("epoch"), last.pop("global_epoch")
        self.report(report_metrics(_HistoryEpoch(stage, epoch, global_epoch, last), {"restarts": self.restarts}))
        self.reported += 1


@dataclass
class _HistoryEpoch:
    """A row of the training history in the shape of an ``EpochReport`` (for :func:`report_metrics`)."""

    stage: str
    epoch: int
    global_epoch: int
    metrics: dict[str, float]


class RunTornDown(Exception):
    """The worker's Ray Train run is gone: its controller and the run's actors died with the Tune
    trial that owned them (ASHA stopped the trial, or the search driver died). A report has
    nowhere to go; the worker ends quietly (:func:`train_loop_per_worker`)."""


def ray_train_report(metrics: dict[str, Any], folder: str | None = None) -> None:
    """``ray.train.report``; a checkpoint folder is uploaded by a Ray Train thread while the
    next epoch trains, then deleted locally.

    When Tune stops a trial, Ray tears down its actors in no set order: a worker can still be
    reporting when the run's SynchronizationActor (owned by the controller) is already gone, and
    the report's ``ray.get`` raises ``ActorDiedError``. That is the normal end of a stopped trial,
    not a failure: :class:`RunTornDown` instead of Ray Train logging it as "Error in training
    function" with a traceback. (A dead *worker* is seen by the controller, not here, and still
    restarts the group from its checkpoint.)
    """
    import ray.exceptions
    import ray.train

    try:
        if folder is None:
            ray.train.report(metrics)
            return
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                         checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
                         delete_local_checkpoint_after_upload=True)
    except ray.exceptions.RayActorError as exc:
        raise RunTornDown(str(exc).strip().splitlines()[0]) from None


_PROCESS_TRIALS: list[float] = []  # start times of the trials this process ran (timings only)


class Timings:
    """Seconds of each start-up phase of one trial, appended as a JSON line to
    ``<timings_dir>/timings.jsonl`` (bench/search.py reads them; nothing when no folder)."""

    def __init__(self, folder: str | None, trial: str, runner: str, started: float):
        self.folder, self.row = folder, {"trial": trial, "runner": runner, "pid": os.getpid()}
        self.last = started

    def process_start(self, started: float) -> None:
        """``actor_start``: the process's start to ``started`` for its first trial, 0 for later ones."""
        import psutil

        _PROCESS_TRIALS.append(started)
        first = len(_PROCESS_TRIALS) == 1
        self.row["actor_start"] = round(started - psutil.Process().create_time(), 4) if first else 0.0
        self.row["trial_in_process"] = len(_PROCESS_TRIALS)
        self.row["process_group"] = 0.0  # one rank: none

    def mark(self, phase: str) -> None:
        now = time.time()
        self.row[phase] = round(now - self.last, 4)
        self.last = now

    def save(self) -> None:
        if not self.folder:
            return
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        with open(Path(self.folder) / "timings.jsonl", "a") as out:
            out.write(json.dumps(self.row) + "\n")


def first_report_timer(report, timings: Timings):
    """``report`` that marks ``first_epoch`` and saves the timings at the first call."""
    done = False

    def timed(metrics, folder=None):
        nonlocal done
        if not done:
            done = True
            timings.mark("first_epoch")
            timings.save()
        report(metrics, folder)

    return timed


def run_training(setup: WorkerSetup, cfg, report, *, train_feed: ShardFeed, val_feed: ShardFeed, rank: int = 0,
                 world: int = 1, checkpoint_every: int = 1, resume: dict | None = None, mark=None) -> None:
    """One rank's share of one trial: mercl's two-stage loop, reporting every epoch through ``report``.

    Both runners call this: a Ray Train worker (:func:`train_loop_per_worker`, ``report`` =
    :func:`ray_train_report`) and the in-process trial of a warm Tune actor
    (:mod:`tuning.warm`, ``report`` = ``ray.tune.report``). cfg: a TrainConfig with its
    ``device`` set; ``resume``: the state of the run's newest checkpoint (None: from scratch).
    Seeds, model and optimizer are made here, so every call starts from the same state.
    ``mark(phase)``: called with ``"model"`` once the model is built (start-up timings).
    """
    from mercl.models.mercl_model import build_model
    from mercl.training.loop import seed_everything, train_two_stage

    def per_worker(batch_size: int) -> int:
        return max(2, batch_size // world)

    def train_batches(epoch: int, stage: str = "finetune"):
        stage_cfg = cfg.pretrain if stage == "pretrain" else cfg.finetune
        return train_feed.batches(epoch, per_worker(stage_cfg.batch_size), shuffle=True)

    def val_batches():
        return val_feed.batches(0, cfg.finetune.batch_size, shuffle=False)

    seed_everything(cfg.seed, cfg.deterministic)
    model = build_model(cfg.model, setup.shapes, cached=setup.cached_backbones)
    if mark is not None:
        mark("model")
    restarts = int(resume.get("restarts", 0)) + 1 if resume is not None else 0
    reporter = TuneReporter(report, rank, checkpoint_every,
                            {"pretrain": cfg.pretrain.epochs, "finetune": cfg.finetune.epochs}, restarts)
    train_two_stage(model, train_batches, val_batches, cfg, on_epoch_end=reporter.on_epoch_end, resume=resume,
                    class_names=setup.class_names)
    reporter.finish(resume)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker entry.

    config: ``{"setup": WorkerSetup, "train_config": dict (a TrainConfig), "trial_name": str,
    "checkpoint_every": int, "use_gpu": bool}``.
    """
    entered = time.time()
    import psutil
    import ray
    import ray.train
    import ray.train.torch

    from mercl.training.config import train_config_from_dict

    ray.data.DataContext.get_current().enable_progress_bars = False
    quiet_ray_train_reports()
    require_cuda(bool(config.get("use_gpu", False)))  # before anything slow: fail in seconds, not after data
    setup: WorkerSetup = config["setup"]
    cfg = train_config_from_dict(config["train_config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    write_pid_file(setup.pid_dir, config.get("trial_name", "trial"), rank)
    # start-up phases (rank 0): the worker process started after the trial did (controller, worker
    # group), Ray Train set up the process group before calling this loop, then imports, data, model
    created = psutil.Process().create_time()
    timings = Timings(setup.timings_dir if rank == 0 else None, config.get("trial_name", "trial"), "train", entered)
    timings.row.update(actor_start=round(created - config.get("trial_started", created), 4),
                       process_group=round(entered - created, 4))
    timings.mark("imports")

    cfg.device = str(ray.train.torch.get_device())
    stimuli = ray.get(setup.stimuli_ref)
    train_feed = ShardFeed(ray.train.get_dataset_shard("train"), setup, stimuli, seed=cfg.seed,
                           rank=rank if setup.in_memory else 0, world=world if setup.in_memory else 1)
    val_feed = ShardFeed(ray.train.get_dataset_shard("val"), setup, stimuli, seed=cfg.seed)
    resume = load_resume_state(ray.train.get_checkpoint())
    timings.mark("data")
    try:
        run_training(setup, cfg, first_report_timer(ray_train_report, timings), train_feed=train_feed,
                     val_feed=val_feed, rank=rank, world=world, checkpoint_every=int(config.get("checkpoint_every", 1)),
                     resume=resume, mark=timings.mark)
    except RunTornDown:  # the trial was stopped while this worker reported: nothing left to do
        return
