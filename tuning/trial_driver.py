"""The per-trial Tune driver: a function trainable that builds and runs one Ray Train TorchTrainer.

This is Ray 2.x's Train V2 + Tune pattern (``Tuner(TorchTrainer(...))`` is gone): Tune runs
:func:`run_trial` with the sampled hyperparameters; it turns them into a training config,
and starts a DDP ``TorchTrainer`` (gloo on CPU, NCCL on GPU) whose workers run
:func:`tuning.worker.train_loop_per_worker`. ``TuneReportCallback`` forwards every epoch's
report to Tune (ASHA, Optuna, the progress table, TensorBoard).

Fault tolerance, two levels:

* a worker dies -> Ray Train restarts the worker group (``FailureConfig(max_failures)``) and
  the workers resume from the run's newest checkpoint;
* the whole search is interrupted -> ``Tuner.restore`` restarts unfinished trials; this
  function builds a trainer with the same run name and storage path, and Ray Train resumes
  that run from its own checkpoint (a run whose checkpoint is its last epoch, because the
  driver died before Tune saved that it ended, reports that epoch again:
  :class:`tuning.worker.TuneReporter`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuning.space import BaseModelShape, trial_overrides
from tuning.worker import WorkerSetup, train_loop_per_worker

TRIAL_DRIVER_RESOURCE = "trial_driver"


def trainable_resources(resources, cluster: Mapping[str, float]) -> dict[str, float]:
    """What each trial's Tune trainable asks of the cluster (``resources``: the config's
    :class:`tuning.config.ResourcesSection`): a rank's resources when the trainable is the trial's
    only rank (``runner: inprocess``), so training lands where a Ray Train rank would; else the
    trial driver's (:func:`trial_driver_resources`)."""
    if resources.resolved_runner == "inprocess":
        return {"cpu": resources.cpus_per_worker, "gpu": resources.gpus_per_worker,
                **dict(resources.custom_per_worker)}
    return trial_driver_resources(resources.trainable_cpus, cluster)


def trial_driver_resources(trainable_cpus: float, cluster: Mapping[str, float]) -> dict[str, float]:
    """What each trial's Tune driver (this module's :func:`run_trial`) asks of the cluster.

    The driver only starts a TorchTrainer and waits. Where the cluster offers the custom
    resource ``trial_driver`` (cluster/*.yaml give the CPU-only head ``{CPU: 0,
    trial_driver: 100}``) it asks for one unit of it and no CPU, so it runs on the head. A
    driver holding a sliver of CPU on a GPU node otherwise leaves that node unable to host a
    rank that asks for all its CPUs (``gpu.1x``: ``{CPU: 4, GPU: 1}``), and with the node count
    capped the trial waits forever. Elsewhere (a laptop, a cluster without the resource):
    ``trainable_cpus`` of a CPU, as before.
    """
    if cluster.get(TRIAL_DRIVER_RESOURCE, 0) >= 1:
        return {"cpu": 0, TRIAL_DRIVER_RESOURCE: 1}
    return {"cpu": trainable_cpus}


@dataclass
class TrialSetup:
    """The constant inputs of every trial (handed to Tune with ``tune.with_parameters``)."""

    base_config: dict[str, Any]  # to_dict(TrainConfig) of the base training config
    base_shape: BaseModelShape
    worker: WorkerSetup
    datasets: dict[str, Any]  # {"train", "val"}: materialised Ray Datasets
    runs_path: str  # absolute; Ray Train runs live in <runs_path>/<trial_id>
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    placement_strategy: str
    max_failures: int
    keep_checkpoints: int
    checkpoint_every: int = 1
    custom_per_worker: dict[str, float] = field(default_factory=dict)  # Ray custom resources per rank
    runner: str = "train"  # "train": a Ray Train run per trial; "inprocess": the trainable is the one rank
    data_key: str = ""  # names this search's data: a warm actor's cache key (tuning.warm)
    fold: int = 0  # the searched outer fold these datasets belong to


def trial_train_config(params: dict[str, Any], setup: TrialSetup) -> dict[str, Any]:
    """The trial's full training config (a validated TrainConfig, as a dict)."""
    from mercl.config import to_dict
    from mercl.training.config import train_config_from_dict

    return to_dict(train_config_from_dict(setup.base_config, trial_overrides(params, setup.base_shape)))


def rank_resources(setup: TrialSetup) -> dict[str, float]:
    """What each DDP rank asks of the cluster: its CPUs, GPUs and the config's custom resources."""
    resources = {"CPU": setup.cpus_per_worker, **setup.custom_per_worker}
    if setup.gpus_per_worker > 0:
        resources["GPU"] = setup.gpus_per_worker
    return resources


OWNER_EXITED = "The actor is dead because its owner has died"  # ActorDiedError's words for it


class StoppedRunLogFilter(logging.Filter):
    """Drops a record whose exception says the actor died because its owner exited: when Tune stops a
    trial, its Ray Train controller may still be shutting the run down while the workers it owns
    go with it, and logs "Graceful shutdown of backend failed ... ActorDiedError" with a traceback
    (Ray says "expected"). A worker that crashed dies for another reason and is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or OWNER_EXITED not in str(error)


def quiet_stopped_run_logs() -> None:
    """Install :class:`StoppedRunLogFilter` on Ray Train's backend shutdown logger (this process)."""
    try:
        from ray.train.v2._internal.callbacks import backend_setup
    except ImportError:  # another Ray version: keep its logging as it is
        return
    logger = logging.getLogger(backend_setup.__name__)
    if not any(isinstance(f, StoppedRunLogFilter) for f in logger.filters):
        logger.addFilter(StoppedRunLogFilter())


def quiet_stopped_run_callback():
    """A Ray Train callback that does nothing but, unpickled in the run's controller (the
    RunConfig's callbacks travel there), installs :class:`StoppedRunLogFilter` in that process."""
    from ray.train import UserCallback

    class QuietStoppedRun(UserCallback):
        def __reduce__(self):
            return _unpickled_in_controller, ()

    return QuietStoppedRun()


def _unpickled_in_controller():
    quiet_stopped_run_logs()
    return quiet_stopped_run_callback()


def build_trainer(params: dict[str, Any], setup: TrialSetup, trial_id: str, trial_name: str,
                  trial_started: float | None = None):
    """The TorchTrainer of one trial (not started)."""
    import ray.train
    import ray.train.torch
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = setup.gpus_per_worker > 0
    resources = rank_resources(setup)
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "setup": setup.worker,
            "train_config": trial_train_config(params, setup),
            "trial_name": trial_name,
            "checkpoint_every": setup.checkpoint_every,
            "use_gpu": use_gpu,
            "trial_started": trial_started,
        },
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=setup.num_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
            placement_strategy=setup.placement_strategy,
        ),
        datasets=setup.datasets,
        # in memory, every worker reads the whole (small) train set and takes its share per epoch
        dataset_config=ray.train.DataConfig(datasets_to_split=[] if setup.worker.in_memory else ["train"]),
        run_config=ray.train.RunConfig(
            name=trial_id,
            storage_path=setup.runs_path,
            callbacks=[TuneReportCallback(), quiet_stopped_run_callback()],
            failure_config=ray.train.FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=setup.keep_checkpoints),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Tune function trainable: one trial = one Ray Train run (resumed if it has checkpoints), or
    with ``setup.runner == "inprocess"`` the trial's one rank trained right here (:mod:`tuning.warm`)."""
    import time

    import ray.tune

    started = time.time()
    if setup.runner == "inprocess":
        from tuning.warm import run_inprocess_trial

        run_inprocess_trial(dict(config), setup)
        return
    context = ray.tune.get_context()
    trainer = build_trainer(dict(config), setup, context.get_trial_id(), context.get_trial_name(), started)
    trainer.fit()
