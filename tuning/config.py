"""The search config: typed dataclasses loaded from YAML, CLI overrides, checks before Ray starts.

A search YAML (see ``tuning/configs/demo.yaml``) names the experiment and its storage,
the base training config (a named mercl config or a YAML file, plus fixed overrides), the
dataset and the outer/inner split, the search space (:mod:`tuning.space`), the resources of
one trial, the scheduler (ASHA), the sampler (Optuna TPE), fault tolerance and the outer
cross-validation run on the best configuration afterwards.

:func:`load_search_config` applies CLI overrides and validates everything that can be
checked without a cluster: types and ranges (the dotted field is named), the search space
against the base training config (impossible heads/width, negative loss weights ...), the
dataset (manifest, every shard present, the label scheme, the modalities). Every problem is
a one-line :class:`~mercl.errors.MerclError`.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mercl.config import FieldProblem, at_least, from_dict, load_yaml, set_dotted, to_dict
from mercl.errors import ConfigError, InputFileError, MerclError
from mercl.modalities import MODALITIES

Modality = Literal["video", "audio", "eeg"]


@dataclass
class DataSection:
    """Which data the search tunes on, and how the outer test fold is kept out of it.

    dataset: a prepared dataset dir (``mercl prepare -o OUT`` writes ``OUT/<dataset_id>``;
        OUT itself is accepted when it holds exactly one dataset).
    protocol: the outer folds AND the inner validation split (``mercl.data.protocols``):
        ``stimulus`` (k-fold over clips: every viewer's rows of a clip on one side),
        ``subject-stimulus`` (held-out viewers on held-out clips), ``trial`` (grouped k-fold),
        ``subject`` (leave-one-subject-out), ``segment`` (the paper's, LEAKY), or ``auto``:
        the dataset's default as ``mercl evaluate`` chooses it (``stimulus`` when clips are
        shared across viewers and there are enough per class, else ``trial``), resolved
        before the search starts. ``test_fold`` of the outer folds is held out before the
        search starts; trials train on an inner split of the remaining training rows that
        follows the protocol (under ``stimulus`` the validation rows are whole clips the
        inner-train rows never contain). The folds and the inner split are those
        ``mercl evaluate`` makes for the same training config: seeded by its ``seed``,
        ``val_fraction`` of the groups validate (set them in ``train_overrides``).
    nested: one search per outer fold (each blind to its own test fold, with its own Optuna
        study and ASHA rungs, all in one Tune run sharing the cluster); the headline is the
        k-fold mean of scores no search saw. ``test_fold`` is then unused.
    read: ``parquet``: ``ray.data.read_parquet`` reads the EEG shards in Ray tasks, on any node
        (the dataset must be on a path every node reads: one machine, NFS); ``driver``: the
        search driver reads them with pyarrow and hands the tables to Ray Data
        (``ray.data.from_arrow``), for a dataset that only the driver's node has.
    """

    dataset: str = ""
    label: str = "valence2"
    modalities: list[Modality] = field(default_factory=lambda: list(MODALITIES))
    protocol: Literal["auto", "stimulus", "subject-stimulus", "trial", "subject", "segment"] = "auto"
    folds: int = 4
    test_fold: int = 0
    nested: bool = False
    read: Literal["parquet", "driver"] = "parquet"
    verify_checksums: bool = True
    in_memory_max_mb: float = 2048.0  # train + val rows up to this size: held whole by every worker for all epochs

    def validate(self) -> None:
        if not self.dataset:
            raise FieldProblem("dataset", "is required (a prepared dataset dir: mercl prepare ... -o OUT)")
        if not self.modalities:
            raise FieldProblem("modalities", f"needs at least one of {', '.join(MODALITIES)}")
        if len(set(self.modalities)) != len(self.modalities):
            raise FieldProblem("modalities", f"lists a modality twice: {self.modalities}")
        at_least(self, 2, "folds")
        if not 0 <= self.test_fold < self.folds and self.protocol != "subject" and not self.nested:
            raise FieldProblem("test_fold", f"must be in [0, folds={self.folds}), got {self.test_fold}")
        at_least(self, 0, "test_fold")
        at_least(self, 0, "in_memory_max_mb")


@dataclass
class ResourcesSection:
    """What one trial asks of the cluster.

    ``runner`` decides how a trial trains. ``train``: a Ray Train run of ``num_workers`` DDP
    workers (gloo on CPU, NCCL when ``gpus_per_worker`` > 0) started from a Tune function
    trainable that itself holds ``trainable_cpus`` (its worker processes are new for every
    trial). ``inprocess`` (one worker only): the Tune trainable is the trial's one rank, asks
    for the rank's resources and runs the same training loop itself; Tune reuses its actor for
    the next trial (``reuse_actors``), so a trial pays no process start, imports or process
    group, and the data stay in the actor (:mod:`tuning.warm`). ``auto`` (default):
    ``inprocess`` when ``num_workers == 1``, else ``train``.
    The defaults suit a small machine: Ray Data's read tasks need one
    whole free CPU, so the running trials must never reserve every core (2 cores: 0.01 + 2 x 0.45
    leaves one free; reserving 1 + 2 x 1 deadlocks).
    ``num_cpus``: logical CPUs of the local cluster search.py starts when none is running
    (None: the machine's cores); ignored when attaching to a cluster.
    ``custom_per_worker``: Ray custom resources each rank, and each heavy task of the search
    (feature cache, outer folds, final model), asks for besides its CPUs and GPUs: e.g.
    ``{"accelerator_type:A10G": 0.001}`` keeps them on A10G nodes of a mixed cluster, or a
    resource your node types declare.
    """

    num_workers: int = 2
    runner: Literal["auto", "train", "inprocess"] = "auto"
    cpus_per_worker: float = 0.45
    gpus_per_worker: float = 0.0
    trainable_cpus: float = 0.01
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    max_concurrent_trials: int = 1
    num_cpus: int | None = None
    custom_per_worker: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        at_least(self, 1, "num_workers")
        if self.runner == "inprocess" and self.num_workers != 1:
            raise FieldProblem("runner", f"'inprocess' trains one rank per trial, got num_workers {self.num_workers} "
                                         "(use 'train' or 'auto' for DDP trials)")
        at_least(self, 0, "cpus_per_worker")
        at_least(self, 0, "gpus_per_worker")
        at_least(self, 0, "trainable_cpus")
        at_least(self, 1, "max_concurrent_trials")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise FieldProblem("num_cpus", f"must be >= 1, got {self.num_cpus}")
        for name, amount in self.custom_per_worker.items():
            if name in ("CPU", "GPU", "cpu", "gpu", "memory"):
                raise FieldProblem("custom_per_worker", f"{name!r} is not a custom resource: use cpus_per_worker / "
                                                        "gpus_per_worker")
            if amount <= 0:
                raise FieldProblem("custom_per_worker", f"{name}: the amount must be a number > 0, got {amount!r}")
        if self.use_gpu and self.num_workers > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            # NCCL needs one whole device per rank: two ranks on one GPU fail with "Duplicate GPU detected"
            raise FieldProblem("gpus_per_worker", f"must be a whole number of GPUs with {self.num_workers} DDP "
                                                  f"workers (NCCL runs one rank per GPU), got {self.gpus_per_worker:g}")

    @property
    def resolved_runner(self) -> str:
        """``train`` or ``inprocess`` (``auto``: inprocess for one worker)."""
        if self.runner == "auto":
            return "inprocess" if self.num_workers == 1 else "train"
        return self.runner

    @property
    def trial_cpus(self) -> float:
        if self.resolved_runner == "inprocess":
            return self.cpus_per_worker
        return self.trainable_cpus + self.num_workers * self.cpus_per_worker

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


@dataclass
class SchedulerSection:
    """ASHA on the validation metric, reported every epoch of both stages.

    ASHA's time axis is the reported ``global_epoch`` (pre-training epochs, then fine-tuning
    epochs), not Tune's ``training_iteration`` (which restarts when a search is restored).
    ``max_t`` defaults to the planned epochs of both stages.
    """

    asha: bool = True
    grace_period: int = 2
    reduction_factor: float = 2.0
    brackets: int = 1
    max_t: int | None = None

    def validate(self) -> None:
        at_least(self, 1, "grace_period")
        if self.reduction_factor <= 1:
            raise FieldProblem("reduction_factor", f"must be > 1, got {self.reduction_factor}")
        at_least(self, 1, "brackets")
        if self.max_t is not None and self.max_t < self.grace_period:
            raise FieldProblem("max_t", f"must be >= grace_period ({self.grace_period}), got {self.max_t}")


@dataclass
class SamplerSection:
    """Optuna's TPE sampler (seeded): random start-up trials, then TPE."""

    seed: int = 0
    n_startup_trials: int = 4
    multivariate: bool = False

    def validate(self) -> None:
        at_least(self, 0, "n_startup_trials")


@dataclass
class FaultSection:
    """Trials checkpoint every epoch; a failed worker group restarts from the last checkpoint.

    max_failures: Ray Train restarts of one trial (``ray.train.FailureConfig``).
    keep_checkpoints: per trial (the newest are kept).
    checkpoint_every: epochs between checkpoints (1: every epoch; the last epoch of each
        stage is always saved). Metrics are reported every epoch either way.
    """

    max_failures: int = 2
    keep_checkpoints: int = 2
    checkpoint_every: int = 1

    def validate(self) -> None:
        if self.max_failures < -1:
            raise FieldProblem("max_failures", f"must be >= -1 (-1: retry forever), got {self.max_failures}")
        at_least(self, 1, "keep_checkpoints")
        at_least(self, 1, "checkpoint_every")


@dataclass
class CrossvalSection:
    """The outer cross-validation of the best configuration after the search.

    Its folds run as Ray tasks with one trial worker's resources, in parallel where the
    cluster has room (``max_parallel`` at a time; 0: all folds at once).
    """

    enabled: bool = True
    max_parallel: int = 0

    def validate(self) -> None:
        at_least(self, 0, "max_parallel")


@dataclass
class SearchConfig:
    """A whole search; ``storage``/``name`` locate its results (``<storage>/<name>/``)."""

    name: str = "mercl-search"
    storage: str = "results/search"
    num_samples: int = 8
    # wall-clock seconds for the trials (Tune's time_budget_s; 0: none): when they are spent, running
    # trials stop where they are (status stopped_by_budget) and no new one starts; num_samples stays the cap
    time_budget_s: float = 0.0
    metric: str = "val_metric"
    mode: Literal["max", "min"] = "max"
    train: str = "small"
    train_overrides: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)
    data: DataSection = field(default_factory=DataSection)
    resources: ResourcesSection = field(default_factory=ResourcesSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    fault: FaultSection = field(default_factory=FaultSection)
    crossval: CrossvalSection = field(default_factory=CrossvalSection)
    # the final step: the best configuration trained on all the data (its inner validation
    # split for early stopping) -> <storage>/<name>/model.pt
    final_model: bool = True
    progress: Literal["table", "quiet"] = "table"
    pid_dir: str | None = None  # workers write <pid_dir>/<trial>-rank<k>.pid (fault-injection tests)

    def validate(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise FieldProblem("name", f"must be a plain folder name, got {self.name!r}")
        if not self.storage:
            raise FieldProblem("storage", "is required")
        at_least(self, 1, "num_samples")
        if not self.time_budget_s >= 0:  # also refuses NaN
            raise FieldProblem("time_budget_s", f"must be >= 0 seconds (0: no budget), got {self.time_budget_s}")
        if not self.space:
            raise FieldProblem("space", "is empty: give at least one hyperparameter to search")

    @property
    def experiment_dir(self) -> Path:
        """The local folder of this search's own outputs (tables, plots, TensorBoard, ASHA state).

        For a local ``storage`` it is ``<storage>/<name>``; for cloud storage (``s3://``,
        ``gs://``, ``file://``) a local mirror ``$MERCL_LOCAL_RESULTS/<name>`` (default
        ``~/mercl-search/<name>``) that is uploaded to :attr:`experiment_location`.
        """
        if is_uri(self.storage):
            return Path(os.path.expanduser(os.environ.get("MERCL_LOCAL_RESULTS", "~/mercl-search"))) / self.name
        return storage_path(self.storage) / self.name

    @property
    def experiment_location(self) -> str:
        """Where Tune and Ray Train keep the experiment: a URI, or the local experiment_dir."""
        if is_uri(self.storage):
            return f"{self.storage.rstrip('/')}/{self.name}"
        return str(self.experiment_dir)


def is_uri(storage: str) -> bool:
    """``s3://...``, ``gs://...``, ``file://...``: storage Ray reaches through pyarrow.fs."""
    return "://" in storage


def storage_path(storage: str) -> Path:
    """The storage folder as an absolute path (Ray Tune and Ray Train need absolute paths).

    A relative path is taken against ``$MERCL_STORAGE_BASE`` when set, else the current
    directory (under ``ray job submit`` the job's working dir is a temporary copy: pass an
    absolute ``--storage`` there, as ``make demo`` does).
    """
    path = Path(os.path.expanduser(storage))
    if not path.is_absolute():
        path = Path(os.environ.get("MERCL_STORAGE_BASE", os.getcwd())) / path
    return path.resolve()


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["a.b=3", "c=[1, 2]"]`` -> ``{"a.b": 3, "c": [1, 2]}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise MerclError(f"--set {item!r}: expected KEY=VALUE, e.g. --set scheduler.grace_period=2")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise MerclError(f"--set {item!r}: the value is not valid YAML") from None
    return out


def load_search_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Read a search YAML (or the defaults when ``path`` is None), apply dotted overrides, validate types.

    ``overrides`` keys are dotted fields (``data.dataset``, ``resources.num_workers``); the
    search space and ``train_overrides`` are mappings whose own keys may contain dots, so a
    key below them is split only at the first level (``space.lr`` sets ``space["lr"]``).
    """
    data = (load_yaml(path) if path is not None else {}) or {}
    if not isinstance(data, dict):
        raise InputFileError(path, "a search config must be a YAML mapping")
    data = copy.deepcopy(data)
    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if head in ("space", "train_overrides") and rest:
            data.setdefault(head, {})
            if not isinstance(data[head], dict):
                raise ConfigError(head, "expected a mapping", path)
            _set_in_mapping(data[head], rest, value)
        else:
            set_dotted(data, key, value)
    return from_dict(SearchConfig, data, source=path)


def _set_in_mapping(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in a mapping whose own keys may contain dots (the space, train_overrides).

    ``l1.low`` sets ``mapping["l1"]["low"]`` when ``l1`` is an entry; ``model.eeg.dropout``
    (no such entry) sets ``mapping["model.eeg.dropout"]``.
    """
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        entry = ".".join(parts[:cut])
        if isinstance(mapping.get(entry), dict):
            set_dotted(mapping[entry], ".".join(parts[cut:]), value)
            return
    mapping[key] = value


def dump_config(cfg: SearchConfig) -> str:
    """The config as YAML (what ``<storage>/<name>/search_config.yaml`` holds)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
