"""The self-describing model file ``model.pt``: weights plus a description, read without running code.

``mercl train`` (and the search's final step, through :func:`~mercl.training.crossval.train_once`)
writes one ``model.pt``: a ``torch.save`` of a dict holding only strings, numbers and tensors::

    {"format": "mercl-model", "schema_version": 2,
     "description": "<JSON text>",            # everything needed to rebuild and feed the model
     "model": {name: tensor}}                  # the full state dict, frozen backbones included

so it loads with ``torch.load(weights_only=True)`` (no pickled Python objects, so no code can run
on load) and the description is plain JSON. The description holds the TrainConfig, the label
scheme and class names, the training rows' class counts (the majority baseline of ``mercl
predict``), the input shapes, the normalisation statistics, the modalities and which of them
were missing in some training rows (masked at prediction time), the preprocessing config of the
training dataset (segments, EEG bands and sub-windows, channel names and rate, audio and video
settings) with its hash, the frozen backbones' configs and weights digest, and the mercl version.

:func:`read_model_file` checks the format and schema version (another version, or a file that
is not a mercl model, is a one-line :class:`~mercl.errors.InputFileError` naming the file);
:func:`load_trained_model` rebuilds the model from it; :func:`format_info` is ``mercl info``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mercl import __version__
from mercl.config import config_hash, to_dict
from mercl.errors import ConfigError, InputFileError
from mercl.models.cached_backbone import BACKBONES, backbone_digest, frozen_backbones
from mercl.models.config import MODALITIES, DataShapes
from mercl.training.config import TrainConfig, train_config_from_dict
from mercl.training.normalize import NormStats

MODEL_FILE = "model.pt"
MODEL_FORMAT = "mercl-model"
SCHEMA_VERSION = 2  # 1: the pickled dict of mercl <= 0.1 (format "mercl-model/1")
REQUIRED = ("train_config", "label_scheme", "class_names", "shapes", "norm", "modalities", "preprocessing",
            "backbones", "train_class_counts", "majority_class")


# ----------------------------------------------------------------------------- writing


def missing_modalities_seen(prepared, rows: np.ndarray, modalities: Sequence[str]) -> dict[str, bool]:
    """{modality: whether some of ``rows`` lack it} for the model's video/audio (EEG is always there)."""
    s = prepared.stimulus_index[rows]
    has = s >= 0
    safe = np.where(has, s, 0)
    stim = prepared.stimuli
    flags = {"video": stim.video_present, "audio": stim.audio_present}
    out = {}
    for m in modalities:
        if m in flags:
            present = has & flags[m][safe] if len(stim) else np.zeros(len(rows), bool)
            out[m] = bool((~present).any())
    return out


def preprocessing_of(manifest: dict) -> dict[str, Any]:
    """The preprocessing facts a model needs from its training dataset's ``manifest.json``."""
    config = manifest.get("config") or {}
    return {
        "config": config,
        "config_hash": config_hash(config),  # of the preprocessing config alone
        "dataset_id": manifest.get("dataset_id"),
        "dataset_hash": manifest.get("config_hash"),  # config + source + input paths
        "source": manifest.get("source"),
        "ch_names": list(manifest.get("ch_names") or []),
        "sfreq": manifest.get("sfreq"),
        "bands": manifest.get("bands"),
        "segment_s": manifest.get("segment_s"),
        "hop_s": manifest.get("hop_s"),
        "shapes": manifest.get("shapes"),
    }


def backbones_of(model: torch.nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """Configs of the model's video/audio encoders and the digest of the frozen ones' weights."""
    encoders = getattr(model, "spatial_encoders", {})
    frozen = frozen_backbones(model)
    return {
        "configs": {m: to_dict(getattr(cfg.model, m)) for m in BACKBONES if m in encoders},
        "frozen": sorted(frozen),
        "digest": backbone_digest(model) if frozen else None,
    }


def model_file_state(run, cfg: TrainConfig, label_scheme: str, names: Sequence[str], prepared,
                     train_rows: np.ndarray, labels: np.ndarray, *, training: dict | None = None) -> dict:
    """What ``model.pt`` holds (see the module docstring).

    run: what :func:`~mercl.training.crossval.train_split` returns (``model``, ``norm``, ``shapes``).
    prepared: the training dataset (its manifest gives the preprocessing); train_rows: the rows
    the model was fitted on; labels: (N,) class ids of every row; training: extra facts (scores).
    """
    counts = np.bincount(np.asarray(labels[train_rows], np.int64), minlength=len(names))
    description = {
        "format": MODEL_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "mercl_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_config": to_dict(cfg),
        "label_scheme": label_scheme,
        "class_names": list(names),
        "train_class_counts": [int(c) for c in counts],
        "majority_class": int(np.argmax(counts)),
        "shapes": to_dict(run.shapes),
        "norm": run.norm.to_dict(),
        "modalities": [m for m in MODALITIES if m in cfg.model.modalities],
        "missing_modalities_seen": missing_modalities_seen(prepared, train_rows, cfg.model.modalities),
        "preprocessing": preprocessing_of(prepared.manifest),
        "backbones": backbones_of(run.model, cfg),
        "training": dict(training or {}),
        # every subject and clip the model met (training and validation rows): predict says when
        # new recordings share them, so an in-sample score is never read as a test score
        "seen_subjects": sorted(set(prepared.rows["subject"].astype(str))),
        "seen_stimuli": sorted(set(prepared.rows["stimulus"].astype(str))),
    }
    return {
        "format": MODEL_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "description": json.dumps(description),
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
    }


# ----------------------------------------------------------------------------- reading


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
    """Rebuild a model saved by :func:`~mercl.training.crossval.train_once`.

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


# ----------------------------------------------------------------------------- mercl info


def _shorten(names: Sequence[str], limit: int = 8) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _backbone_text(m: str, cfg: dict, frozen: bool) -> str:
    init = f"weights {cfg['weights']}" if cfg.get("weights") else "random init"
    name = cfg.get("backbone") if m == "video" else f"VGGish width {cfg.get('width')}"
    return f"{m} {name} ({'frozen' if frozen else 'trained'}, {init})"


def format_info(mf: ModelFile) -> str:
    """``mercl info MODEL``: the description in a few readable lines."""
    d = mf.description
    pre = d["preprocessing"]
    pcfg = pre.get("config") or {}
    names = d["class_names"]
    counts = d["train_class_counts"]
    total = max(sum(counts), 1)
    training = d.get("training") or {}
    lines = [f"{mf.path}: mercl model (schema {d.get('schema_version')}), written by mercl {d.get('mercl_version')} "
             f"on {d.get('created')}"]
    lines.append(f"  predicts {d['label_scheme']}: {', '.join(names)}; training rows per class "
                 f"{'/'.join(str(c) for c in counts)}, majority {names[d['majority_class']]} "
                 f"({counts[d['majority_class']] / total:.0%})")
    missing = [m for m, seen in d.get("missing_modalities_seen", {}).items() if seen]
    lines.append(f"  modalities: {', '.join(d['modalities'])}"
                 + (f"; missing {' and '.join(missing)} seen in training (masked when absent)" if missing else ""))
    eeg = pcfg.get("eeg", {})
    bands = ", ".join(f"{b} {lo:g}-{hi:g}" for b, (lo, hi) in (pre.get("bands") or {}).items())
    sfreq = pre.get("sfreq")
    rate = f"{sfreq:g} Hz" if isinstance(sfreq, (int, float)) else f"{sfreq} Hz"
    lines.append(f"  preprocessing {pre['config_hash']}: {pre.get('segment_s'):g} s segments, hop {pre.get('hop_s'):g} s; "
                 f"EEG {len(pre['ch_names'])} channels at {rate} ({_shorten(pre['ch_names'])}), bands {bands} Hz, "
                 f"sub-windows {eeg.get('subwindow_s')} s")
    audio, video = pcfg.get("audio", {}), pcfg.get("video", {})
    lines.append(f"  stimulus features: audio {audio.get('sample_rate')} Hz, {audio.get('n_mels')} Mel bands; "
                 f"video {video.get('fps'):g} fps, {video.get('size')} px")
    bb = d["backbones"]
    if bb.get("configs"):
        parts = [_backbone_text(m, c, m in bb.get("frozen", [])) for m, c in bb["configs"].items()]
        digest = f"; weights digest {bb['digest'][:16]}" if bb.get("digest") else ""
        lines.append(f"  backbones: {'; '.join(parts)}{digest}")
    cfg = d["train_config"]
    model = cfg.get("model", {})
    trained = f"  trained on {pre.get('dataset_id')}"
    if training:
        trained += (f": {training.get('n_train')} training rows, {training.get('n_val')} validation rows; "
                    f"validation accuracy {training.get('val_accuracy', float('nan')):.3f} "
                    f"(majority {training.get('majority_val_accuracy', float('nan')):.3f}, clip-majority "
                    f"{training.get('clip_majority_val_accuracy', float('nan')):.3f})")
    if training.get("config_name"):
        trained += f"; config {training['config_name']}"
    lines.append(trained)
    lines.append(f"  model: width {model.get('width')}, embed {model.get('embed_dim')}, heads {model.get('heads')}, "
                 f"cross-attention {'on' if model.get('cross_attention') else 'off'}, "
                 f"contrastive pre-training {'on' if cfg.get('contrastive') else 'off'}, seed {cfg.get('seed')}")
    lines.append(f"  use: mercl predict {mf.path} RAW --source {pre.get('source') or 'manifest'} -o OUT")
    return "\n".join(lines)
