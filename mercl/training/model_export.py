"""Writing the self-describing model file ``model.pt``: weights plus a description, read without running code.

``mercl train`` (:func:`~mercl.training.train_model.train_once`, also the search's final step)
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

The subjects and clips the model met are stored as salted hashes (``seen_ids``: a random salt and
``sha256(salt + id)`` per id), enough for ``mercl predict`` to say whether a recording's subject or
clip was seen in training without the file listing the participants; ``keep_ids=True`` (``mercl
train --keep-ids``) stores the ids themselves (``seen_subjects``, ``seen_stimuli``).

Reading it back is inference's: :mod:`mercl.inference.model_file`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from mercl import __version__
from mercl.config import config_hash, to_dict
from mercl.modalities import MODALITIES
from mercl.models.cached_backbone import BACKBONES, backbone_digest, frozen_backbones
from mercl.training.config import TrainConfig

MODEL_FILE = "model.pt"
MODEL_FORMAT = "mercl-model"
SCHEMA_VERSION = 2  # 1: the pickled dict of mercl <= 0.1 (format "mercl-model/1")
REQUIRED = ("train_config", "label_scheme", "class_names", "shapes", "norm", "modalities", "preprocessing",
            "backbones", "train_class_counts", "majority_class")



def hashed_ids(ids: Iterable[str], salt: str) -> list[str]:
    """Sorted ``sha256(salt + id)`` hex digests (24 hex) of the distinct ``ids``."""
    return sorted({hashlib.sha256(f"{salt}\x00{i}".encode()).hexdigest()[:24] for i in ids})


def seen_ids(subjects: Iterable[str], stimuli: Iterable[str], keep_ids: bool) -> dict[str, Any]:
    """The description's record of the subjects and clips a model met: salted hashes, or with
    ``keep_ids`` the ids themselves (under the keys of mercl <= 0.1)."""
    subjects, stimuli = sorted(set(map(str, subjects))), sorted(set(map(str, stimuli)))
    if keep_ids:
        return {"seen_subjects": subjects, "seen_stimuli": stimuli}
    salt = secrets.token_hex(16)
    return {"seen_ids": {"salt": salt, "hash": "sha256(salt NUL id)[:24]",
                         "subjects": hashed_ids(subjects, salt), "stimuli": hashed_ids(stimuli, salt)}}


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
                     train_rows: np.ndarray, labels: np.ndarray, *, training: dict | None = None,
                     keep_ids: bool = False) -> dict:
    """What ``model.pt`` holds (see the module docstring).

    run: what :func:`~mercl.training.crossval.train_split` returns (``model``, ``norm``, ``shapes``).
    prepared: the training dataset (its manifest gives the preprocessing); train_rows: the rows
    the model was fitted on; labels: (N,) class ids of every row; training: extra facts (scores);
    keep_ids: store the subject and clip ids instead of their salted hashes.
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
        **seen_ids(prepared.rows["subject"].astype(str), prepared.rows["stimulus"].astype(str), keep_ids),
    }
    return {
        "format": MODEL_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "description": json.dumps(description),
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
    }
