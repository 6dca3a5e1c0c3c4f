"""Training configuration: the two stages of Algorithm 1, seeds, the probe, named configs.

A :class:`TrainConfig` bundles the model (:class:`~mercl.models.config.ModelConfig`), the
MERCL loss (:class:`~mercl.losses.LossConfig`) and one :class:`StageConfig` per stage
(stage 1 pre-trains encoders + projections with the MERCL loss, stage 2 fine-tunes the
cross-modal attentions + classifier with cross-entropy). Named configs ship as YAML in
``mercl/configs/``: ``paper`` (the paper's sizes), ``small`` (CPU-friendly) and ``tiny``
(seconds per fold, for tests). ``load_train_config("tiny", {"finetune.epochs": 3})``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from mercl.config import FieldProblem, at_least, from_dict, load_config, load_yaml, set_dotted
from mercl.errors import MerclError
from mercl.losses import LossConfig
from mercl.models.config import ModelConfig

NAMED_CONFIGS = ("paper", "small", "tiny")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class StageConfig:
    """One training stage: AdamW with linear warm-up then cosine (or constant) decay per epoch."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    warmup_epochs: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    patience: int = 0  # early stopping on the inner-validation metric; 0 = off

    def validate(self) -> None:
        at_least(self, 0, "epochs")
        if not self.lr > 0:
            raise FieldProblem("lr", f"must be > 0, got {self.lr}")
        at_least(self, 0, "weight_decay")
        if self.batch_size < 2:
            raise FieldProblem("batch_size", f"must be >= 2 (contrastive sets), got {self.batch_size}")
        if not 0 <= self.warmup_epochs <= max(self.epochs, 0):
            raise FieldProblem("warmup_epochs", f"must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        at_least(self, 0, "patience")


@dataclass
class TrainConfig:
    """Everything one training run needs besides the data.

    ``contrastive=False`` is the "no contrastive pre-training" ablation: stage 1 is skipped
    and stage 2 trains the encoders together with the head (freezing randomly initialised
    encoders would not be a fair ablation). ``unfreeze_encoders=True`` trains the encoders in
    stage 2 too (the paper's Algorithm 1 freezes them).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pretrain: StageConfig = field(default_factory=StageConfig)
    finetune: StageConfig = field(default_factory=StageConfig)
    unfreeze_encoders: bool = False
    contrastive: bool = True
    seed: int = 0
    deterministic: bool = False
    val_fraction: float = 0.2  # inner validation split of the training trials
    probe: Literal["knn", "linear"] = "knn"  # stage-1 validation metric on shared embeddings
    knn_k: int = 5
    probe_reference_size: int = 4096  # training samples embedded for the probe each epoch
    restore_best: bool = True  # end each stage with the weights of its best inner-validation epoch
    grad_clip_norm: float = 0.0  # 0 = off
    cache_backbone_features: bool = True  # frozen ViT/VGGish run once per stimulus segment
    num_workers: int = 0  # DataLoader worker processes
    num_threads: int = 0  # torch intra-op threads while training (0: leave torch's setting)
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    # training and inner validation: fp32, or autocast to bfloat16 / float16 (fp16 scales the
    # loss with a GradScaler); on CUDA their float32 matmuls use TF32 either way. Test rows
    # (cross-validation, the search's outer folds) and `mercl predict` are scored in full fp32,
    # the same way whatever precision the model trained in
    precision: str = "fp32"

    def validate(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise FieldProblem("val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        at_least(self, 1, "knn_k")
        at_least(self, 1, "probe_reference_size")
        at_least(self, 0, "grad_clip_norm")
        at_least(self, 0, "num_threads")
        at_least(self, 0, "num_workers")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise FieldProblem("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise FieldProblem("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.finetune.epochs < 1:
            raise FieldProblem("finetune.epochs", f"must be >= 1, got {self.finetune.epochs}")


def named_config_path(name: str) -> Path:
    """The YAML file of a shipped named config (``paper``, ``small``, ``tiny``)."""
    return Path(str(resources.files("mercl").joinpath("configs", f"{name}.yaml")))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A named config's shipped YAML, or the given YAML file."""
    text = str(name_or_path)
    if text in NAMED_CONFIGS:
        return named_config_path(text)
    path = Path(text)
    if path.is_file():
        return path
    raise MerclError(
        f"{text}: no such config file (named configs: {', '.join(NAMED_CONFIGS)})"
    )


def load_train_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a named config (``paper``/``small``/``tiny``) or a YAML file, with dotted overrides.

    ``overrides={"model.width": 64, "loss.l1": 0.5}``. A bad field raises a
    :class:`~mercl.errors.ConfigError` naming it (``config field 'pretrain.lr': ...``).
    """
    return load_config(TrainConfig, resolve_config_path(name_or_path), overrides)


def train_config_from_dict(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from a plain dict (e.g. a checkpoint's saved config)."""
    data = copy.deepcopy(data)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return from_dict(TrainConfig, data)


def read_config_yaml(name_or_path: str | Path) -> dict[str, Any]:
    """The raw YAML mapping of a named config or file (for tools that merge search spaces)."""
    return load_yaml(resolve_config_path(name_or_path)) or {}
