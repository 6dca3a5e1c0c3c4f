"""The backbone feature cache: frozen ViT / VGGish run once per stimulus segment.

With the video and audio backbones frozen their output depends only on the stimulus
segment, not on the viewer, the fold or the training step. :func:`ensure_feature_cache`
computes ``model.backbone_features`` for every (stimulus, segment) row of a prepared dataset
once and stores it as a Parquet table

    DATASET/cache/<key>/features.parquet     stimulus, segment, video_feat, audio_feat

(fixed-size float32 lists, per-row shapes in the ``b"shapes"`` metadata, written atomically).
``key`` hashes the dataset's preprocessing config, the checksums of its stimulus shards (the
backbones' input: a replaced clip never reuses the features of the old one), the backbone
configs and the backbone WEIGHTS themselves, so a different weights file or random
initialisation never reuses a stale cache. Training passes the table to ``SegmentDataset(extra_stimulus_tables=...)``,
whose ``video_feat``/``audio_feat`` replace the raw frames/log-Mel: the backbones never run
during training.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from mercl.data import shards
from mercl.data.reader import PreparedDataset
from mercl.log_once import info_once
from mercl.models.cached_backbone import backbone_digest, frozen_backbones

log = logging.getLogger(__name__)

CACHE_FILE = "features.parquet"


def cache_key(model, prepared: PreparedDataset) -> str:
    """16-hex key of (dataset config, dataset id, stimulus shard checksums, backbone configs and weights)."""
    manifest = prepared.manifest
    stimulus_shards = {rel: digest for rel, digest in (manifest.get("files") or {}).items()
                       if rel.startswith("stimuli/")}
    blob = json.dumps(
        {
            "dataset": manifest.get("dataset_id", prepared.path.name),
            "dataset_config": manifest.get("config_hash"),
            "stimulus_content": shards.files_digest(stimulus_shards),
            "shapes": manifest.get("shapes"),
            "backbones": backbone_digest(model),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(model, prepared: PreparedDataset) -> Path:
    """Where the feature table for this model's backbones lives in the dataset dir."""
    return prepared.path / "cache" / cache_key(model, prepared) / CACHE_FILE


def stimulus_batch(prepared: PreparedDataset, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """A backbone batch of stimulus rows: video (B, T_v, 3, H, W) uint8, audio (B, T_a, n_mels), present."""
    stim = prepared.stimuli
    present = np.zeros((len(rows), 3), dtype=bool)
    present[:, 0] = stim.video_present[rows]
    present[:, 1] = stim.audio_present[rows]
    return {
        "video": torch.from_numpy(np.ascontiguousarray(stim.video[rows])),
        "audio": torch.from_numpy(np.ascontiguousarray(stim.audio[rows])),
        "present": torch.from_numpy(present),
    }


@torch.no_grad()
def compute_backbone_features(
    model, prepared: PreparedDataset, batch_size: int = 64, device: torch.device | str = "cpu", progress=None
) -> dict[str, np.ndarray]:
    """``model.backbone_features`` of every stimulus row -> {"video_feat": (M, T_v, D_v), "audio_feat": ...}.

    Only frozen backbones are computed into the result (a trainable one must see raw input).

    progress: optional callable(n_rows_done) for a progress bar.
    """
    model.eval()
    wanted = {f"{m}_feat" for m in frozen_backbones(model)}
    n = len(prepared.stimuli)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        batch = {k: v.to(device) for k, v in stimulus_batch(prepared, rows).items()}
        for name, feat in model.backbone_features(batch).items():
            if name not in wanted:  # a trainable backbone is not cached
                continue
            parts.setdefault(name, []).append(feat.float().cpu().numpy())
        if progress is not None:
            progress(len(rows))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def write_feature_table(prepared: PreparedDataset, features: dict[str, np.ndarray], path: Path) -> Path:
    """Parquet table keyed by (stimulus, segment) with one fixed-size list column per feature."""
    keys = prepared.stimuli.keys
    columns = {
        "stimulus": pa.array(keys["stimulus"].astype(str).tolist(), pa.string()),
        "segment": pa.array(keys["segment"].to_numpy().astype(np.int32), pa.int32()),
    }
    for name, values in features.items():
        columns[name] = shards.fixed_list_array(values.astype(np.float32, copy=False), pa.float32())
    shapes = {name: values.shape[1:] for name, values in features.items()}
    table = pa.table(columns).replace_schema_metadata(shards.shapes_metadata(shapes))
    shards.write_table(table, path)
    return path


def ensure_feature_cache(
    model, prepared: PreparedDataset, batch_size: int = 64, device: torch.device | str = "cpu", show_progress=False,
    compute: Callable[[Any, PreparedDataset], dict[str, np.ndarray]] | None = None,
) -> Path | None:
    """The cache table for ``model``'s frozen backbones, computing it if absent.

    Returns None when there is nothing to cache (no frozen video/audio backbone, or no
    stimulus rows); the caller then feeds raw frames/log-Mel. ``compute(model, prepared)``
    (e.g. a Ray task on a GPU node, :mod:`tuning.remote`) returns the features of every
    stimulus row, ``{"video_feat": (M, T_v, D_v), ...}``; by default they are computed here,
    on ``device``.
    """
    if not frozen_backbones(model) or len(prepared.stimuli) == 0:
        return None
    path = cache_path(model, prepared)
    if path.is_file():
        info_once(log, "backbone features: using cache %s", path)
        return path
    if compute is not None:
        return write_feature_table(prepared, compute(model, prepared), path)
    log.info("backbone features: computing %d stimulus segments -> %s", len(prepared.stimuli), path)
    was_training = model.training
    model.to(device)
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prepared.stimuli), desc="backbone features", unit="seg", leave=False)
    try:
        features = compute_backbone_features(
            model, prepared, batch_size, device, progress=bar.update if bar is not None else None
        )
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return write_feature_table(prepared, features, path)
