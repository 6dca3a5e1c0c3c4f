"""Prepared dataset -> numpy arrays in memory -> a torch ``Dataset`` of batch items.

:func:`load_dataset` checks the manifest and each shard's sha256, then holds:

* ``rows``: the EEG rows (pandas; subject, trial, segment, stimulus, ratings/label ...)
* ``eeg``: (N, T_e, C, n_bands) float32
* ``stimuli``: a :class:`StimulusTable` keyed by (stimulus, segment)
* ``stimulus_index``: (N,) int64 row of each EEG row's stimulus segment, -1 if missing

:class:`SegmentDataset` serves items in the batch format of docs/CONTRACTS.md by
indexing those arrays (no per-item file reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.utils.data import Dataset

from mercl.data import shards
from mercl.data.labels import assign_labels
from mercl.data.protocols import trial_groups
from mercl.data.summary import read_manifest
from mercl.errors import InputFileError, MerclError
from mercl.modalities import MODALITIES, SILENT_DB

SUPPORTED_SCHEMA = 1


@dataclass
class StimulusTable:
    """Stimulus features, one row per (stimulus, segment).

    keys: DataFrame with ``stimulus``, ``segment``, ``start_s`` (M rows)
    audio: (M, T_a, n_mels) float32; audio_energy: (M,) float32 dBFS
    video: (M, T_v, 3, H, W) uint8; audio_present / video_present: (M,) bool
    """

    keys: pd.DataFrame
    audio: np.ndarray
    audio_energy: np.ndarray
    audio_present: np.ndarray
    video: np.ndarray
    video_present: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class PreparedDataset:
    """A prepared dataset in memory (see the module docstring for the arrays' shapes)."""

    path: Path
    manifest: dict
    rows: pd.DataFrame
    eeg: np.ndarray
    stimuli: StimulusTable
    stimulus_index: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def labels(self, scheme: str, thresholds=None) -> np.ndarray:
        """(N,) int64 class ids of every row under ``scheme``."""
        return assign_labels(self.rows, scheme, thresholds)

    @property
    def subjects(self) -> np.ndarray:
        return self.rows["subject"].to_numpy(dtype=str)

    @property
    def trials(self) -> np.ndarray:
        return self.rows["trial"].to_numpy(dtype=np.int64)

    @property
    def stimulus_ids(self) -> np.ndarray:
        """(N,) str: the clip each row's viewer watched (``none`` when the trial had no clip)."""
        return self.rows["stimulus"].to_numpy(dtype=str)

    def trial_groups(self) -> np.ndarray:
        """(N,) int64 id of each row's (subject, trial)."""
        return trial_groups(self.subjects, self.trials)

    def present_modalities(self) -> list[str]:
        """The modalities at least one row has (in MODALITIES order); EEG always."""
        linked = self.stimulus_index[self.stimulus_index >= 0]
        present = {"eeg": True, "audio": bool(self.stimuli.audio_present[linked].any()),
                   "video": bool(self.stimuli.video_present[linked].any())}
        return [m for m in MODALITIES if present[m]]


def _key_index(keys: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([keys["stimulus"].astype(str), keys["segment"].astype(np.int64)])


def lookup_rows(table_keys: pd.DataFrame, wanted: pd.DataFrame) -> np.ndarray:
    """(len(wanted),) int64 row of each (stimulus, segment) of ``wanted`` in ``table_keys``, -1 if absent."""
    if len(table_keys) == 0:
        return np.full(len(wanted), -1, np.int64)
    index = _key_index(table_keys)
    if not index.is_unique:
        raise MerclError("stimulus table has duplicate (stimulus, segment) rows")
    return index.get_indexer(_key_index(wanted)).astype(np.int64)


def _verify(root: Path, files: dict[str, str]) -> None:
    for rel, digest in files.items():
        path = root / rel
        if not path.is_file():
            raise InputFileError(path, "shard listed in manifest.json is missing; re-run mercl prepare")
        if shards.sha256_file(path) != digest:
            raise InputFileError(path, "checksum does not match manifest.json (shard changed or corrupt)")


def _read_eeg(root: Path, rels: list[str], shape: list[int]) -> tuple[pd.DataFrame, np.ndarray]:
    tables = [shards.read_table(root / rel) for rel in rels]
    for rel, table in zip(rels, tables, strict=True):
        got = shards.read_shapes(table.schema).get("eeg")
        if got is not None and len(table) and list(got) != list(shape):
            raise InputFileError(root / rel, f"eeg shape {got} differs from the manifest's {shape}")
    if not tables:
        return pd.DataFrame(), np.zeros((0, *shape), np.float32)
    table = pa.concat_tables(tables, promote_options="default")
    eeg = shards.array_column(table, "eeg", tuple(shape)).astype(np.float32, copy=False)
    rows = table.drop_columns(["eeg"]).to_pandas()
    return rows, eeg


def _read_stimuli(root: Path, rels: list[str], shapes: dict) -> StimulusTable:
    a_shape, v_shape = tuple(shapes["audio"]), tuple(shapes["video"])
    tables = [shards.read_table(root / rel) for rel in rels]
    if not tables:
        return StimulusTable(
            keys=pd.DataFrame(
                {"stimulus": pd.Series([], dtype=str), "segment": pd.Series([], dtype=np.int32)}
            ),
            audio=np.zeros((0, *a_shape), np.float32),
            audio_energy=np.zeros(0, np.float32),
            audio_present=np.zeros(0, bool),
            video=np.zeros((0, *v_shape), np.uint8),
            video_present=np.zeros(0, bool),
        )
    table = pa.concat_tables(tables, promote_options="default")
    return StimulusTable(
        keys=table.select(["stimulus", "segment", "start_s"]).to_pandas(),
        audio=shards.array_column(table, "audio", a_shape).astype(np.float32, copy=False),
        audio_energy=table.column("audio_energy").to_numpy().astype(np.float32),
        audio_present=table.column("audio_present").to_numpy().astype(bool),
        video=shards.array_column(table, "video", v_shape).astype(np.uint8, copy=False),
        video_present=table.column("video_present").to_numpy().astype(bool),
    )


def load_dataset(path: str | Path, verify: bool = True) -> PreparedDataset:
    """Load a prepared dataset (a dataset dir, or an output dir holding exactly one).

    verify: check every shard's sha256 against the manifest (a mismatch raises
    InputFileError naming the shard); False skips it for speed.
    """
    root, manifest = read_manifest(path)
    version = manifest.get("schema_version")
    if version != SUPPORTED_SCHEMA:
        raise InputFileError(
            root / "manifest.json", f"schema_version {version} is not supported (expected 1)"
        )
    files: dict[str, str] = manifest["files"]
    if verify:
        _verify(root, files)
    eeg_rels = sorted(f for f in files if f.startswith("eeg/"))
    stim_rels = sorted(f for f in files if f.startswith("stimuli/"))
    shapes = manifest["shapes"]
    rows, eeg = _read_eeg(root, eeg_rels, shapes["eeg"])
    stimuli = _read_stimuli(root, stim_rels, shapes)
    index = lookup_rows(stimuli.keys, rows) if len(rows) else np.zeros(0, np.int64)
    return PreparedDataset(root, manifest, rows, eeg, stimuli, index)


@dataclass
class ExtraStimulusTable:
    """Extra per-(stimulus, segment) arrays joined to EEG rows (e.g. cached backbone features).

    columns: name -> (M, *shape) array; row_of: (N,) row in this table for each dataset row, -1 if absent.
    """

    columns: dict[str, np.ndarray]
    row_of: np.ndarray


def _extra_table(source: str | Path | pa.Table, prepared: PreparedDataset) -> ExtraStimulusTable:
    """Read a Parquet table keyed by (stimulus, segment); every fixed-size-list column becomes an array."""
    table = shards.read_table(Path(source)) if not isinstance(source, pa.Table) else source
    where = source if not isinstance(source, pa.Table) else "extra stimulus table"
    missing = {"stimulus", "segment"} - set(table.column_names)
    if missing:
        raise InputFileError(where, f"needs columns 'stimulus' and 'segment' (missing {sorted(missing)})")
    shapes = shards.read_shapes(table.schema)
    columns = {}
    for name in table.column_names:
        if name in ("stimulus", "segment"):
            continue
        if pa.types.is_fixed_size_list(table.schema.field(name).type):
            if name not in shapes:
                raise InputFileError(where, f"column '{name}' has no shape in the b'shapes' metadata")
            columns[name] = shards.array_column(table, name, tuple(shapes[name]))
    keys = table.select(["stimulus", "segment"]).to_pandas()
    return ExtraStimulusTable(columns, lookup_rows(keys, prepared.rows))


class SegmentDataset(Dataset):
    """Items ``{eeg, audio, video, present, audio_energy, label, index}`` for chosen dataset rows.

    Args:
        prepared: the loaded dataset.
        rows: (n,) indices into ``prepared`` (e.g. one fold's training rows).
        label_scheme: see :mod:`mercl.data.labels`.
        modalities: which of ``("video", "audio", "eeg")`` to serve; the others are left
            out of the items and marked not present.
        extra_stimulus_tables: Parquet paths (or pyarrow Tables) keyed by (stimulus, segment)
            whose array columns are served under their own names (e.g. ``video_feat``).
            A column ``<modality>_feat`` replaces that modality's raw input in the items.

    Item shapes: eeg (T_e, C, 5) float32, audio (T_a, 20) float32, video (T_v, 3, H, W)
    uint8, present (3,) bool in MODALITIES order, audio_energy () float32, label () int64,
    index () int64 (the row in ``prepared``). A modality whose stimulus has no clip (or
    no such stream) is zeros with present False; its audio_energy is -120 dB.
    """

    def __init__(
        self,
        prepared: PreparedDataset,
        rows: np.ndarray | Sequence[int],
        label_scheme: str,
        modalities: Sequence[str] = MODALITIES,
        extra_stimulus_tables: Sequence[str | Path | pa.Table] = (),
    ):
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise MerclError(f"unknown modality {unknown[0]!r} (choose from {', '.join(MODALITIES)})")
        self.prepared = prepared
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(prepared)):
            raise IndexError(f"row indices out of range for a dataset of {len(prepared)} rows")
        self.modalities = tuple(modalities)
        self.labels = prepared.labels(label_scheme)
        self.label_scheme = label_scheme
        stim = prepared.stimuli
        s = prepared.stimulus_index
        has_row = s >= 0
        self.present = np.zeros((len(prepared), 3), dtype=bool)
        if "video" in self.modalities:
            self.present[:, 0] = has_row & stim.video_present[np.where(has_row, s, 0)] if len(stim) else False
        if "audio" in self.modalities:
            self.present[:, 1] = has_row & stim.audio_present[np.where(has_row, s, 0)] if len(stim) else False
        if "eeg" in self.modalities:
            self.present[:, 2] = True
        self.extras = [_extra_table(t, prepared) for t in extra_stimulus_tables]
        self.replaced = set()
        for extra in self.extras:
            for name in extra.columns:
                modality = name.removesuffix("_feat")
                if name.endswith("_feat") and modality in self.modalities:
                    self.replaced.add(modality)
                    self.present[:, MODALITIES.index(modality)] &= extra.row_of >= 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = int(self.rows[i])
        p = self.prepared
        s = int(p.stimulus_index[r])
        present = self.present[r]
        item: dict[str, torch.Tensor] = {}
        if "eeg" in self.modalities:
            item["eeg"] = torch.from_numpy(p.eeg[r])
        if "audio" in self.modalities and "audio" not in self.replaced:
            a = p.stimuli.audio[s] if present[1] else np.zeros(p.stimuli.audio.shape[1:], np.float32)
            item["audio"] = torch.from_numpy(np.ascontiguousarray(a))
        if "video" in self.modalities and "video" not in self.replaced:
            v = p.stimuli.video[s] if present[0] else np.zeros(p.stimuli.video.shape[1:], np.uint8)
            item["video"] = torch.from_numpy(np.ascontiguousarray(v))
        for extra in self.extras:
            e = int(extra.row_of[r])
            for name, values in extra.columns.items():
                v = values[e] if e >= 0 else np.zeros(values.shape[1:], values.dtype)
                item[name] = torch.from_numpy(np.ascontiguousarray(v))
        energy = p.stimuli.audio_energy[s] if s >= 0 and present[1] else SILENT_DB
        item["present"] = torch.from_numpy(present.copy())
        item["audio_energy"] = torch.tensor(energy, dtype=torch.float32)
        item["label"] = torch.tensor(self.labels[r], dtype=torch.int64)
        item["index"] = torch.tensor(r, dtype=torch.int64)
        return item


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items into a batch dict (B leading on every tensor).

    Same result as ``torch.utils.data.default_collate`` for these items, but stacked with
    ``numpy.stack``: on this CPU build ``torch.stack`` of uint8 frames was ~20x slower
    (0.3 s vs 0.017 s for 32 x (4, 3, 224, 224)).
    """
    return {key: torch.from_numpy(np.stack([item[key].numpy() for item in items])) for key in items[0]}
