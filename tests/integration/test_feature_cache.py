"""The backbone feature cache: one Parquet table per backbone set, equal to live features, never stale."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from builders import build_demo_dataset, tiny

from mercl.data.reader import SegmentDataset, collate, load_dataset
from mercl.data.shards import read_shapes
from mercl.models.mercl_model import build_model
from mercl.training.crossval import data_shapes, make_batches
from mercl.training.feature_cache import cache_path, ensure_feature_cache
from mercl.training.loop import train_two_stage


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return load_dataset(build_demo_dataset(tmp_path_factory.getbasetemp()))


def _model(prepared, seed=0):
    torch.manual_seed(seed)
    cfg = tiny()
    return build_model(cfg.model, data_shapes(prepared, n_classes=4)), cfg


def test_cached_features_equal_live_ones_and_give_the_same_outputs(prepared):
    model, _ = _model(prepared)
    path = ensure_feature_cache(model, prepared)
    assert path == cache_path(model, prepared)
    assert path.parent.parent == prepared.path / "cache" and path.name == "features.parquet"
    assert not list(path.parent.glob("*.tmp-*"))
    table = pq.read_table(path)
    assert table.num_rows == len(prepared.stimuli)
    shapes = read_shapes(table.schema)
    assert set(shapes) == {"video_feat", "audio_feat"}
    assert shapes["video_feat"][0] == prepared.stimuli.video.shape[1]  # T_v frames

    rows = np.arange(len(prepared))[:: max(1, len(prepared) // 48)]
    live = collate([SegmentDataset(prepared, rows, "quadrant4")[i] for i in range(len(rows))])
    cached = collate([SegmentDataset(prepared, rows, "quadrant4", extra_stimulus_tables=(path,))[i]
                      for i in range(len(rows))])
    assert "video" not in cached and "audio" not in cached  # the raw inputs are replaced
    assert torch.equal(live["present"], cached["present"])
    assert not live["present"][:, 1].all()  # the clip without audio is in the sample
    model.eval()
    with torch.no_grad():
        feats = model.backbone_features(live)
        present = live["present"]
        for i, m in enumerate(("video", "audio")):
            ok = present[:, i]
            torch.testing.assert_close(cached[f"{m}_feat"][ok], feats[f"{m}_feat"][ok], rtol=1e-5, atol=1e-5)
        spatial_live, spatial_cached = model.spatial(live), model.spatial(cached)
        for m in spatial_live:
            torch.testing.assert_close(spatial_cached[m], spatial_live[m], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(cached), model(live), rtol=1e-4, atol=1e-5)


def test_cache_is_reused_for_the_same_backbones_and_never_for_other_weights(prepared):
    a, _ = _model(prepared, seed=0)
    path = ensure_feature_cache(a, prepared)
    stamp = path.stat().st_mtime_ns
    same, _ = _model(prepared, seed=0)
    assert ensure_feature_cache(same, prepared) == path and path.stat().st_mtime_ns == stamp
    other, _ = _model(prepared, seed=1)  # other random backbone weights: another key
    assert cache_path(other, prepared) != path
    trained_eeg, _ = _model(prepared, seed=0)
    with torch.no_grad():  # weights outside the frozen backbones do not matter
        for p in trained_eeg.spatial_encoders["eeg"].parameters():
            p.add_(1.0)
    assert cache_path(trained_eeg, prepared) == path


def test_training_with_the_cache_never_runs_the_backbones(prepared):
    model, cfg = _model(prepared)
    cfg.pretrain.epochs, cfg.finetune.epochs = 1, 1
    path = ensure_feature_cache(model, prepared)
    calls = []
    for m in ("video", "audio"):
        model.spatial_encoders[m].register_forward_hook(lambda *_a, m=m: calls.append(m))
    rows = np.arange(len(prepared))
    ds = SegmentDataset(prepared, rows[rows % 5 != 0], "quadrant4", extra_stimulus_tables=(path,))
    val = SegmentDataset(prepared, rows[rows % 5 == 0], "quadrant4", extra_stimulus_tables=(path,))
    result = train_two_stage(model, make_batches(ds, 16, shuffle=True, seed=0),
                             make_batches(val, 16, shuffle=False, seed=0), cfg)
    assert len(result.history) == 2 and calls == []
