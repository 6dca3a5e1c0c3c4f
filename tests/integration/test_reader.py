"""Reading a prepared dataset back: checksums, arrays, the stimulus join, torch items and batches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from builders import make_manifest_raw, small_config
from torch.utils.data import DataLoader, default_collate

from mercl.data import shards
from mercl.data.prepare import prepare
from mercl.data.reader import SegmentDataset, collate, load_dataset
from mercl.errors import InputFileError, MerclError


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reader")
    raw = make_manifest_raw(root)
    return prepare(
        raw, "manifest", root / "out", config=small_config(), workers=1, progress=False
    ).dataset_dir


@pytest.fixture(scope="module")
def prepared(dataset_dir):
    return load_dataset(dataset_dir)


@pytest.fixture
def copy(dataset_dir, tmp_path) -> Path:
    target = tmp_path / dataset_dir.name
    shutil.copytree(dataset_dir, target)
    return target


def test_load_dataset_arrays_match_the_shards(prepared, dataset_dir):
    assert len(prepared) == 30
    assert prepared.eeg.shape == (30, 7, 4, 5) and prepared.eeg.dtype == np.float32
    shard = pd.read_parquet(dataset_dir / "eeg" / "s02.parquet")
    rows = np.flatnonzero(prepared.rows["subject"].to_numpy() == "s02")
    assert np.array_equal(prepared.eeg[rows].reshape(15, -1), np.stack(shard["eeg"].to_numpy()))
    assert "eeg" not in prepared.rows.columns
    stim = prepared.stimuli
    assert len(stim) == 10
    assert stim.audio.shape == (10, 396, 20) and stim.audio.dtype == np.float32
    assert stim.video.shape == (10, 4, 3, 32, 32) and stim.video.dtype == np.uint8


def test_every_eeg_row_points_at_its_stimulus_segment(prepared):
    rows, stim = prepared.rows, prepared.stimuli
    index = prepared.stimulus_index
    has = index >= 0
    assert (rows["stimulus"][~has] == "C").all() and (~has).sum() == 10
    joined = stim.keys.iloc[index[has]]
    assert (joined["stimulus"].to_numpy() == rows["stimulus"][has].to_numpy()).all()
    assert (joined["segment"].to_numpy() == rows["segment"][has].to_numpy()).all()
    # two subjects watched A: both point at the same stored stimulus rows
    a = rows["stimulus"] == "A"
    by_subject = [index[(a & (rows["subject"] == s)).to_numpy()] for s in ("s01", "s02")]
    assert np.array_equal(*by_subject)


def test_segment_dataset_items_and_missing_modalities(prepared):
    rows = np.arange(len(prepared))
    ds = SegmentDataset(prepared, rows, "valence2")
    expected = {"A": [True, True, True], "B": [True, False, True], "C": [False, False, True]}
    labels = prepared.labels("valence2")
    for r in rows:
        item = ds[r]
        stimulus = prepared.rows["stimulus"].iloc[r]
        assert item["present"].tolist() == expected[stimulus]
        assert item["eeg"].shape == (7, 4, 5) and item["eeg"].dtype == torch.float32
        assert item["audio"].shape == (396, 20) and item["audio"].dtype == torch.float32
        assert item["video"].shape == (4, 3, 32, 32) and item["video"].dtype == torch.uint8
        assert item["label"].dtype == torch.int64 and int(item["label"]) == labels[r]
        assert int(item["index"]) == r
        if stimulus != "A":
            assert float(item["audio_energy"]) == -120.0 and not item["audio"].any()
        else:
            assert float(item["audio_energy"]) > -20.0 and item["audio"].abs().sum() > 0
        if stimulus == "C":
            assert not item["video"].any()
        else:
            assert item["video"].any()


def test_batches_follow_the_contract(prepared):
    train = np.flatnonzero(prepared.rows["subject"].to_numpy() == "s01")
    ds = SegmentDataset(prepared, train, "quadrant4")
    batch = next(iter(DataLoader(ds, batch_size=6, shuffle=False, collate_fn=collate)))
    assert batch["eeg"].shape == (6, 7, 4, 5)
    assert batch["audio"].shape == (6, 396, 20)
    assert batch["video"].shape == (6, 4, 3, 32, 32)
    assert batch["present"].shape == (6, 3) and batch["present"].dtype == torch.bool
    assert batch["audio_energy"].shape == (6,) and batch["label"].shape == (6,)
    assert batch["index"].tolist() == train[:6].tolist()
    reference = default_collate([ds[i] for i in range(6)])
    assert batch.keys() == reference.keys()
    for key in batch:
        assert batch[key].dtype == reference[key].dtype and torch.equal(batch[key], reference[key])


def test_modality_subset_leaves_the_others_out(prepared):
    ds = SegmentDataset(prepared, np.arange(5), "arousal2", modalities=("eeg",))
    item = ds[0]
    assert "audio" not in item and "video" not in item
    assert item["present"].tolist() == [False, False, True]
    with pytest.raises(MerclError, match="unknown modality 'text'"):
        SegmentDataset(prepared, np.arange(5), "arousal2", modalities=("eeg", "text"))
    with pytest.raises(MerclError, match="unknown label scheme"):
        SegmentDataset(prepared, np.arange(5), "joy2")


def test_extra_stimulus_table_is_joined_by_key(prepared, tmp_path):
    # a backbone cache holding features for stimulus A only
    feats = np.arange(5 * 4 * 8, dtype=np.float32).reshape(5, 4, 8)
    table = pa.table(
        {
            "stimulus": ["A"] * 5,
            "segment": pa.array(range(5), pa.int32()),
            "video_feat": shards.fixed_list_array(feats, pa.float32()),
        }
    ).replace_schema_metadata(shards.shapes_metadata({"video_feat": [4, 8]}))
    path = tmp_path / "cache.parquet"
    shards.write_table(table, path)
    ds = SegmentDataset(prepared, np.arange(len(prepared)), "valence2", extra_stimulus_tables=[path])
    rows = prepared.rows
    for r in range(len(prepared)):
        item = ds[r]
        assert "video" not in item and item["video_feat"].shape == (4, 8)
        if rows["stimulus"].iloc[r] == "A":
            assert np.array_equal(item["video_feat"].numpy(), feats[rows["segment"].iloc[r]])
            assert item["present"].tolist() == [True, True, True]
        else:
            assert not item["video_feat"].any() and not bool(item["present"][0])


def test_changed_shard_fails_the_checksum(copy):
    path = copy / "eeg" / "s01.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 10), path)  # valid Parquet, different content
    with pytest.raises(InputFileError) as info:
        load_dataset(copy)
    assert str(info.value) == f"{path}: checksum does not match manifest.json (shard changed or corrupt)"
    assert len(load_dataset(copy, verify=False)) == 25


def test_truncated_shard_is_named(copy):
    path = copy / "stimuli" / "A.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="checksum does not match"):
        load_dataset(copy)
    with pytest.raises(InputFileError) as info:
        load_dataset(copy, verify=False)
    assert str(info.value).startswith(f"{path}: not a readable Parquet file")
    assert "\n" not in str(info.value)


def test_incomplete_dataset_is_refused(copy):
    (copy / "manifest.json").unlink()
    with pytest.raises(InputFileError, match="incomplete dataset: no manifest.json, re-run mercl prepare"):
        load_dataset(copy)
    with pytest.raises(InputFileError, match="incomplete dataset"):
        load_dataset(copy.parent)  # the output folder with only that partial dataset
    with pytest.raises(InputFileError, match="no such dataset directory"):
        load_dataset(copy / "nope")


def test_missing_shard_and_unknown_schema(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "stimuli" / "B.parquet").unlink()
    with pytest.raises(InputFileError, match="B.parquet: shard listed in manifest.json is missing"):
        load_dataset(copy)
    manifest["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputFileError, match="schema_version 99 is not supported"):
        load_dataset(copy)
