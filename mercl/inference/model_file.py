"""Reading the model file ``model.pt`` (written by :mod:`mercl.training.model_export`) and rebuilding its model.

:func:`read_model_file` checks the format and schema version (another version, or a file that
is not a mercl model, is a one-line :class:`~mercl.errors.InputFileError` naming the file);
:func:`load_trained_model` rebuilds the model from it, its backbone weights checked against
their recorded digest.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mercl import __version__
from mercl.errors import ConfigError, InputFileError
from mercl.models.cached_backbone import BACKBONES, backbone_digest
from mercl.models.config import DataShapes
from mercl.training.config import TrainConfig, train_config_from_dict
from mercl.training.model_export import MODEL_FILE, MODEL_FORMAT, REQUIRED, SCHEMA_VERSION  # noqa: F401
from mercl.training.normalize import NormStats


@dataclass
class ModelFile:
    """A read, checked ``model.pt``: its description (plain JSON data) and weights (tensors)."""

    path: Path
    description: dict[str, Any]
    weights: dict[str, torch.Tensor]

    def __getitem__(self, key: str) -> Any:
        return self.description[key]

    @property
    def config(self) -> TrainConfig:
        try:
            return train_config_from_dict(self.description["train_config"])
        except ConfigError as exc:
            raise InputFileError(self.path, f"its training config does not load: {exc}") from None

    @property
    def class_names(self) -> list[str]:
        return list(self.description["class_names"])

    @property
    def shapes(self) -> DataShapes:
        s = self.description["shapes"]
        return DataShapes(eeg=tuple(s["eeg"]), audio=tuple(s["audio"]), video=tuple(s["video"]),
                          n_classes=int(s["n_classes"]))

    @property
    def norm(self) -> NormStats:
        return NormStats.from_dict(self.description["norm"])


def _schema_problem(version: Any) -> str:
    return (f"a mercl model file of schema version {version}; this mercl ({__version__}) reads schema version "
            f"{SCHEMA_VERSION} (retrain the model with this mercl, or use the mercl that wrote it)")


def read_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> ModelFile:
    """Read and check ``model.pt`` without running code from it; every problem is one line naming the file."""
    from mercl.training.checkpoint import load_checkpoint

    path = Path(path)
    saved = load_checkpoint(path, map_location=map_location, kind="mercl model file")
    fmt = saved.get("format")
    if fmt == "mercl-model/1":
        raise InputFileError(path, _schema_problem(1))
    if fmt != MODEL_FORMAT:
        raise InputFileError(path, "not a mercl model file (no 'format: mercl-model' entry)")
    if saved.get("schema_version") != SCHEMA_VERSION:
        raise InputFileError(path, _schema_problem(saved.get("schema_version")))
    try:
        description = json.loads(saved["description"])
    except (KeyError, TypeError, ValueError):
        raise InputFileError(path, "damaged mercl model file: its description is not JSON text") from None
    missing = [k for k in REQUIRED if not isinstance(description, dict) or k not in description]
    if missing:
        raise InputFileError(path, f"damaged mercl model file: its description lacks {', '.join(missing)}")
    weights = saved.get("model")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise InputFileError(path, "damaged mercl model file: 'model' is not a dict of tensors")
    return ModelFile(path, description, weights)


def _without_weight_files(cfg: TrainConfig) -> TrainConfig:
    """A copy whose backbones start from random init: their weights come from the model file."""
    cfg = copy.deepcopy(cfg)
    for m in BACKBONES:
        getattr(cfg.model, m).weights = None
    return cfg


def load_trained_model(path: str | Path | ModelFile, device: str | torch.device = "cpu"):
    """Rebuild a model saved by :func:`~mercl.training.train_model.train_once`.

    Returns (model in eval mode on ``device``, NormStats, the :class:`ModelFile`). The backbones'
    weights come from the file (a weights file named in the config need not exist here); their
    digest must equal the recorded one.
    """
    from mercl.models.mercl_model import build_model

    mf = path if isinstance(path, ModelFile) else read_model_file(path)
    cfg = mf.config
    try:
        model = build_model(_without_weight_files(cfg).model, mf.shapes)
        model.load_state_dict(mf.weights)
    except (RuntimeError, ConfigError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise InputFileError(mf.path, f"damaged mercl model file: weights do not fit its config ({first})") from None
    model.cfg = cfg.model  # as trained (weights files named), for the digest and the feature cache key
    for m, encoder in model.spatial_encoders.items():
        if m in BACKBONES:
            encoder.cfg = getattr(cfg.model, m)
    recorded = mf.description["backbones"].get("digest")
    if recorded is not None and backbone_digest(model) != recorded:
        raise InputFileError(mf.path, "damaged mercl model file: its backbone weights differ from their "
                                      "recorded digest")
    model.to(device).eval()
    return model, mf.norm, mf
