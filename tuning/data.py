"""The search's data: the outer test fold held out, an inner split, Ray Data from the Parquet shards.

Once per search, in the job driver (:func:`prepare_search_data`):

1. load the prepared dataset (``mercl.data.reader``), hold out the outer test fold
   ``data.test_fold`` (nested search: every outer fold, one search each) and split the
   remaining training rows into inner-train and inner-validation rows the way the protocol
   groups them (``mercl.data.protocols``: whole clips under ``stimulus``, held-out viewers on
   held-out clips under ``subject-stimulus``, trials under ``trial``). A fold's test rows
   never reach its trials.
2. normalisation statistics from each fold's inner-train rows only (``mercl.training.normalize``).
3. the backbone feature cache (``mercl.training.feature_cache``): frozen ViT/VGGish features
   per stimulus segment, computed once, by a caller-given function (the search runs it as a
   Ray task with a trial worker's accelerator: :mod:`tuning.remote`); trials never run the
   backbones.
4. the stimulus side (cached features or raw log-Mel/frames, one row per (stimulus, segment),
   never copied per subject) goes into the object store once.
5. Ray Data reads the EEG Parquet shards (``ray.data.read_parquet``), keeps the inner-train
   or inner-validation rows and attaches each row's label, stimulus row and modality flags;
   both datasets are materialised once and handed to every trial.

Each Ray Train worker takes its share of the training set (``get_dataset_shard``) and the
whole validation set, iterates them with ``iter_torch_batches`` and joins the stimulus
arrays by row (:class:`StimulusArrays`), producing the batch dicts of docs/CONTRACTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mercl.errors import ConfigError, InputFileError
from mercl.modalities import MODALITIES, SILENT_DB

# per searched fold, each row is in the fold's inner train or validation split, its outer test
# fold, or unused (subject-stimulus folds leave out training rows that share a viewer or a clip
# with the test or validation side)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "unused": 3}


def split_column(fold: int) -> str:
    """The row-table column holding searched fold ``fold``'s split ids."""
    return f"split_f{fold}"


# ----------------------------------------------------------------------------- checks before Ray


def check_dataset(data_cfg, source=None) -> tuple[Path, dict]:
    """Check the dataset without loading it: manifest, every shard present, label scheme, modalities.

    Returns (dataset dir, manifest). Raises InputFileError naming a missing shard, or
    ConfigError naming ``data.label`` / ``data.modalities`` / ``data.folds`` / ``data.test_fold``.
    """
    from mercl.data.labels import available_schemes, required_columns
    from mercl.data.summary import read_manifest
    from mercl.errors import MerclError

    root, manifest = read_manifest(data_cfg.dataset)
    for rel in manifest["files"]:
        if not (root / rel).is_file():
            raise InputFileError(root / rel, "shard listed in manifest.json is missing; re-run mercl prepare")
    if not any(rel.startswith("eeg/") for rel in manifest["files"]):
        raise InputFileError(root / "manifest.json", "the dataset has no EEG shards")
    try:
        required_columns(data_cfg.label)
    except MerclError as exc:
        raise ConfigError("data.label", str(exc), source) from None
    columns = manifest.get("label_columns") or []
    if data_cfg.label not in available_schemes(columns):
        raise ConfigError("data.label", f"scheme '{data_cfg.label}' needs columns the dataset lacks "
                                        f"(it has {columns}; usable: {available_schemes(columns)})", source)
    counts = manifest.get("counts", {})
    missing = counts.get("missing", {})
    n_segments = int(counts.get("segments", 0))
    for modality in data_cfg.modalities:
        if modality in ("video", "audio") and n_segments and missing.get(f"{modality}_segments", 0) >= n_segments:
            raise ConfigError("data.modalities", f"the dataset has no {modality}: every segment is missing it "
                                                 "(prepare it with the clips, or leave it out)", source)
    if data_cfg.protocol == "trial" and int(counts.get("trials", 0)) < data_cfg.folds:
        raise ConfigError("data.folds", f"trial-grouped {data_cfg.folds}-fold needs at least {data_cfg.folds} "
                                        f"trials, the dataset has {counts.get('trials')}", source)
    if data_cfg.protocol == "subject" and data_cfg.test_fold >= int(counts.get("subjects", 0)):
        raise ConfigError("data.test_fold", f"leave-one-subject-out has {counts.get('subjects')} folds, "
                                            f"got test_fold {data_cfg.test_fold}", source)
    return root, manifest


def row_table(root: Path, manifest: dict) -> pd.DataFrame:
    """The dataset's per-segment rows (subject, trial, segment, stimulus, ratings) without the EEG."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for rel in sorted(r for r in manifest["files"] if r.startswith("eeg/")):
        names = [n for n in pq.read_schema(root / rel).names if n != "eeg"]
        tables.append(pq.read_table(root / rel, columns=names))
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def check_protocol(data_cfg, seed: int, source=None) -> str:
    """Resolve ``data.protocol: auto`` and make the outer folds once from the row table.

    ``auto`` becomes the dataset's default protocol as ``mercl evaluate`` chooses it
    (``mercl.data.protocols.default_protocol``), written back into ``data_cfg``. A protocol the
    data cannot run (no shared clips for ``stimulus``, too few clips per class, a
    ``test_fold`` beyond the folds) raises ConfigError naming ``data.protocol`` /
    ``data.test_fold``. Returns the one-line note of the default choice ("" when the
    protocol was given).
    """
    from mercl.data.labels import assign_labels
    from mercl.data.protocols import DEFAULT_PROTOCOL, default_protocol, make_folds
    from mercl.data.summary import read_manifest
    from mercl.errors import MerclError

    root, manifest = read_manifest(data_cfg.dataset)
    rows = row_table(root, manifest)
    labels = assign_labels(rows, data_cfg.label)
    subjects = rows["subject"].astype(str).to_numpy()
    stimuli = rows["stimulus"].astype(str).to_numpy() if "stimulus" in rows else np.full(len(rows), "")
    note = ""
    if data_cfg.protocol == DEFAULT_PROTOCOL:
        data_cfg.protocol, note = default_protocol(subjects, stimuli, labels, data_cfg.folds)
        note = note or ""
    try:
        cv = make_folds(data_cfg.protocol, subjects, rows["trial"].to_numpy(np.int64), labels,
                        data_cfg.folds, seed=seed, stimuli=stimuli)
    except MerclError as exc:
        raise ConfigError("data.protocol", f"'{data_cfg.protocol}': {exc}", source) from None
    if not data_cfg.nested and data_cfg.test_fold >= len(cv):
        raise ConfigError("data.test_fold", f"the {data_cfg.protocol} protocol gives {len(cv)} folds, "
                                            f"got test_fold {data_cfg.test_fold}", source)
    return note


# ----------------------------------------------------------------------------- the stimulus side


@dataclass
class StimulusArrays:
    """Per-(stimulus, segment) inputs, M rows in the dataset's stimulus-table order.

    raw: ``video`` (M, T_v, 3, H, W) uint8 / ``audio`` (M, T_a, n_mels) float32 for the chosen
        modalities whose backbone is not cached.
    feats: ``video_feat`` (M, T_v, D_v) / ``audio_feat`` (M, T_a', D_a) float32 from the
        backbone feature cache; ``feat_ok[name]`` (M,) bool says which rows the cache has.
    """

    raw: dict[str, np.ndarray] = field(default_factory=dict)
    feats: dict[str, np.ndarray] = field(default_factory=dict)
    feat_ok: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for d in (self.raw, self.feats) for a in d.values())

    def join(self, core: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add the stimulus inputs to a batch of EEG rows (the docs/CONTRACTS.md batch format).

        core: ``eeg`` (B, T_e, C, 5), ``label``, ``index``, ``stim_row`` (B,) int64 (-1: no
        clip), ``present`` (B, 3) bool, ``audio_energy`` (B,). Raw inputs of absent modalities
        are zeros, as in :class:`mercl.data.reader.SegmentDataset`.
        """
        s = core["stim_row"].numpy()
        batch = {k: v for k, v in core.items() if k != "stim_row"}
        present = core["present"].numpy()
        for name, values in self.raw.items():
            mask = present[:, MODALITIES.index(name)]
            out = np.zeros((len(s), *values.shape[1:]), values.dtype)
            out[mask] = values[s[mask]]
            batch[name] = torch.from_numpy(out)
        for name, values in self.feats.items():
            mask = s >= 0
            mask[mask] = self.feat_ok[name][s[mask]]
            out = np.zeros((len(s), *values.shape[1:]), values.dtype)
            out[mask] = values[s[mask]]
            batch[name] = torch.from_numpy(out)
        return batch


# ----------------------------------------------------------------------------- once per search


@dataclass
class FoldSplit:
    """One searched outer fold: its rows' split ids live in ``rows[split_column(fold)]``."""

    fold: int
    norm: Any  # mercl.training.normalize.NormStats from the fold's inner-train rows
    counts: dict[str, int]  # {train,val,test,unused}_rows, {train,val,test}_trials, {train,val,test}_clips

    def describe(self) -> str:
        c = self.counts
        unused = f"; {c['unused_rows']} rows sharing a viewer or clip with held-out rows left out" \
            if c.get("unused_rows") else ""
        return (f"fold {self.fold}: test {c['test_rows']} segments ({c['test_trials']} trials, "
                f"{c['test_clips']} clips) held out; trains on {c['train_rows']} ({c['train_trials']} trials, "
                f"{c['train_clips']} clips), validates on {c['val_rows']} ({c['val_trials']} trials, "
                f"{c['val_clips']} clips){unused}")


@dataclass
class SearchData:
    """Everything trials share, computed once per search by :func:`prepare_search_data`."""

    dataset_dir: Path
    dataset_id: str
    label: str
    class_names: list[str]
    modalities: list[str]
    shapes: Any  # mercl.models.config.DataShapes
    eeg_files: list[str]
    # subject, trial, segment, stimulus, row, label, stim_row, p_video, p_audio, p_eeg, audio_energy
    # and one split_f<k> column per searched fold (SPLIT_IDS)
    rows: pd.DataFrame
    stimuli: StimulusArrays
    folds: dict[int, FoldSplit]  # the searched outer folds: [test_fold], or all of them (nested)
    protocol: str
    n_folds: int
    leaky: bool
    feature_table: Path | None
    # stand-ins for the frozen backbones whose features the stimulus arrays carry: trials
    # build their models with them (no ViT/VGGish, no timm import in the workers)
    cached_backbones: dict[str, Any] = field(default_factory=dict)

    @property
    def nested(self) -> bool:
        return len(self.folds) > 1

    def split_rows(self, fold: int, split: str) -> np.ndarray:
        """(n,) sorted dataset rows of one searched fold's split (``train``, ``val``, ``test``)."""
        return np.flatnonzero(self.rows[split_column(fold)].to_numpy() == SPLIT_IDS[split]).astype(np.int64)

    def describe(self) -> str:
        head = f"{self.dataset_id}: label {self.label}, protocol {self.protocol}, {self.n_folds} outer folds"
        if self.nested:
            return f"{head}, one search per fold (nested); " + "; ".join(f.describe() for f in self.folds.values())
        (only,) = self.folds.values()
        return f"{head}; outer test fold {only.fold} held out from the search: {only.describe()}"


def _row_flags(prepared, modalities: list[str], stim: StimulusArrays) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) modality-present flags and (N,) audio energy of every EEG row (SegmentDataset's rules)."""
    table = prepared.stimuli
    s = prepared.stimulus_index
    has = s >= 0
    safe = np.where(has, s, 0)
    present = np.zeros((len(s), 3), dtype=bool)
    if len(table):
        if "video" in modalities:
            present[:, 0] = has & table.video_present[safe]
        if "audio" in modalities:
            present[:, 1] = has & table.audio_present[safe]
    if "eeg" in modalities:
        present[:, 2] = True
    for name, ok in stim.feat_ok.items():
        col = MODALITIES.index(name.removesuffix("_feat"))
        present[:, col] &= has & ok[safe]
    energy = np.full(len(s), SILENT_DB, np.float32)
    if len(table):
        use = has & present[:, 1]
        energy[use] = table.audio_energy[s[use]]
    return present, energy


def _stimulus_arrays(prepared, modalities: list[str], feature_table: Path | None) -> StimulusArrays:
    """Raw and cached stimulus inputs aligned with the dataset's stimulus table."""
    from mercl.data import shards
    from mercl.data.reader import lookup_rows

    stim = StimulusArrays()
    table = prepared.stimuli
    cached: set[str] = set()
    if feature_table is not None:
        ftable = shards.read_table(feature_table)
        shapes = shards.read_shapes(ftable.schema)
        where = lookup_rows(ftable.select(["stimulus", "segment"]).to_pandas(), table.keys)
        for name in ftable.column_names:
            modality = name.removesuffix("_feat")
            if not name.endswith("_feat") or modality not in modalities:
                continue
            values = shards.array_column(ftable, name, tuple(shapes[name]))
            aligned = np.zeros((len(table), *values.shape[1:]), np.float32)
            ok = where >= 0
            aligned[ok] = values[where[ok]]
            stim.feats[name] = aligned
            stim.feat_ok[name] = ok
            cached.add(modality)
    if "video" in modalities and "video" not in cached:
        stim.raw["video"] = table.video
    if "audio" in modalities and "audio" not in cached:
        stim.raw["audio"] = table.audio
    return stim


def in_process_features(model, prepared) -> dict[str, np.ndarray]:
    """The frozen backbones' features computed in this process (tests; no cluster)."""
    from mercl.training.feature_cache import compute_backbone_features

    return compute_backbone_features(model, prepared, batch_size=64)


def search_folds(data_cfg, n_folds: int) -> list[int]:
    """The outer folds that get a search: every fold when nested, else ``data.test_fold``."""
    return list(range(n_folds)) if data_cfg.nested else [data_cfg.test_fold]


def prepare_search_data(data_cfg, base_cfg, compute_features=in_process_features) -> SearchData:
    """Outer/inner splits, normalisation, feature cache and the per-row table (see the module doc).

    data_cfg: :class:`tuning.config.DataSection` (its protocol resolved, see
    :func:`check_protocol`); base_cfg: the base TrainConfig (its model decides which backbones
    are frozen and cached; its ``seed`` and ``val_fraction`` make the same folds and inner
    splits as ``mercl.training.crossval.cross_validate``).
    compute_features: ``(model, prepared) -> {name: array}`` run when the cache is absent.
    """
    from mercl.data.labels import class_names
    from mercl.data.protocols import make_folds
    from mercl.data.reader import load_dataset
    from mercl.models.cached_backbone import CachedBackbone
    from mercl.models.mercl_model import build_model
    from mercl.training.crossval import data_shapes, fit_split_normalization
    from mercl.training.feature_cache import ensure_feature_cache
    from mercl.training.loop import seed_everything

    prepared = load_dataset(data_cfg.dataset, verify=data_cfg.verify_checksums)
    labels = prepared.labels(data_cfg.label)
    names = list(class_names(data_cfg.label))
    cv = make_folds(data_cfg.protocol, prepared.subjects, prepared.trials, labels, data_cfg.folds,
                    seed=base_cfg.seed, stimuli=prepared.stimulus_ids)
    folds = search_folds(data_cfg, len(cv))
    if folds[-1] >= len(cv):
        raise ConfigError("data.test_fold", f"the {data_cfg.protocol} protocol gives {len(cv)} folds, "
                                            f"got test_fold {data_cfg.test_fold}")

    shapes = data_shapes(prepared, len(names))
    seed_everything(base_cfg.seed, base_cfg.deterministic)  # the same backbones as mercl's own CV
    model = build_model(base_cfg.model, shapes)
    feature_table = None
    if base_cfg.cache_backbone_features:
        # the search computes it as a Ray task with a trial worker's resources (tuning.remote)
        feature_table = ensure_feature_cache(model, prepared, compute=compute_features)
    audio_trainable = "audio" in model.spatial_encoders and not model.spatial_encoders["audio"].frozen

    modalities = list(base_cfg.model.modalities)
    stim = _stimulus_arrays(prepared, modalities, feature_table)
    cached_backbones = {}
    for name in stim.feats:
        modality = name.removesuffix("_feat")
        cached_backbones[modality] = CachedBackbone.of(modality, model.spatial_encoders[modality])
    del model
    present, energy = _row_flags(prepared, modalities, stim)
    rows = pd.DataFrame({
        "subject": prepared.rows["subject"].astype(str).to_numpy(),
        "trial": prepared.rows["trial"].to_numpy(np.int64),
        "segment": prepared.rows["segment"].to_numpy(np.int64),
        "stimulus": prepared.stimulus_ids.astype(str),
        "row": np.arange(len(prepared), dtype=np.int64),
        "label": labels.astype(np.int64),
        "stim_row": prepared.stimulus_index.astype(np.int64),
        "p_video": present[:, 0],
        "p_audio": present[:, 1],
        "p_eeg": present[:, 2],
        "audio_energy": energy,
    })
    groups = prepared.trial_groups()
    clips = rows["stimulus"].to_numpy()
    splits: dict[int, FoldSplit] = {}
    for k in folds:
        fold = cv.folds[k]
        train_rows, val_rows = cv.inner_split(fold.train, labels, base_cfg.val_fraction)  # as mercl's own CV
        split = np.full(len(prepared), SPLIT_IDS["unused"], np.int8)
        split[fold.test] = SPLIT_IDS["test"]
        split[train_rows] = SPLIT_IDS["train"]
        split[val_rows] = SPLIT_IDS["val"]
        rows[split_column(k)] = split
        norm = fit_split_normalization(prepared, train_rows, normalize_audio=audio_trainable)
        counts = {"unused_rows": int((split == SPLIT_IDS["unused"]).sum())}
        for name, part in (("train", train_rows), ("val", val_rows), ("test", fold.test)):
            counts[f"{name}_rows"] = len(part)
            counts[f"{name}_trials"] = len(np.unique(groups[part]))
            counts[f"{name}_clips"] = len(np.unique(clips[part][clips[part] != ""]))
        splits[k] = FoldSplit(k, norm, counts)
    eeg_files = [str(prepared.path / rel) for rel in sorted(prepared.manifest["files"]) if rel.startswith("eeg/")]
    return SearchData(
        dataset_dir=prepared.path, dataset_id=prepared.manifest.get("dataset_id", prepared.path.name),
        label=data_cfg.label, class_names=names, modalities=modalities, shapes=shapes, eeg_files=eeg_files,
        rows=rows, stimuli=stim, folds=splits, protocol=data_cfg.protocol, n_folds=len(cv), leaky=cv.leaky,
        feature_table=feature_table, cached_backbones=cached_backbones,
    )


# ----------------------------------------------------------------------------- Ray Data


def select_split_rows(block, rows: pd.DataFrame, split: int, eeg_shape: tuple[int, ...], column: str):
    """Ray Data ``map_batches`` function: keep one split's rows (``rows[column] == split``) of an EEG shard block.

    block: pyarrow Table with subject, trial, segment, eeg (flattened fixed-size lists).
    Yields (a generator: nothing when no row of the block is in the split, since an empty
    4-D column would not convert to Arrow) one batch: ``eeg`` (n, T_e, C, 5) float32,
    ``label``, ``index`` (row in the dataset), ``stim_row`` (n,) int64, ``present`` (n, 3)
    bool and ``audio_energy`` (n,) float32.
    """
    from mercl.data import shards

    keys = block.select(["subject", "trial", "segment"]).to_pandas()
    index = pd.MultiIndex.from_arrays([rows["subject"], rows["trial"], rows["segment"]])
    where = index.get_indexer(pd.MultiIndex.from_arrays(
        [keys["subject"].astype(str), keys["trial"].astype(np.int64), keys["segment"].astype(np.int64)]))
    if (where < 0).any():
        raise ValueError("an EEG shard row is not in the dataset's row table (shards changed during the search?)")
    picked = rows.iloc[where]
    keep = picked[column].to_numpy() == split
    if not keep.any():
        return
    picked = picked[keep]
    eeg = shards.array_column(block, "eeg", eeg_shape)[keep].astype(np.float32, copy=False)
    yield {
        "eeg": eeg,
        "label": picked["label"].to_numpy(np.int64),
        "index": picked["row"].to_numpy(np.int64),
        "stim_row": picked["stim_row"].to_numpy(np.int64),
        "present": picked[["p_video", "p_audio", "p_eeg"]].to_numpy(bool),
        "audio_energy": picked["audio_energy"].to_numpy(np.float32),
    }


def build_ray_datasets(data: SearchData, read: str = "parquet") -> dict[int, dict[str, Any]]:
    """``{fold: {"train": ..., "val": ...}}``: materialised Ray Datasets of EEG rows from the Parquet shards.

    read: ``parquet`` (``ray.data.read_parquet``, in Ray tasks on any node) or ``driver``
    (read here with pyarrow, handed over with ``ray.data.from_arrow``).
    """
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    columns = ["subject", "trial", "segment", "eeg"]
    tables = None
    if read == "driver":
        import pyarrow.parquet as pq

        tables = [pq.read_table(path, columns=columns) for path in data.eeg_files]
    # the map function's row table: only what it reads (it travels to every read task)
    keep = ["subject", "trial", "segment", "row", "label", "stim_row", "p_video", "p_audio", "p_eeg", "audio_energy"]
    out: dict[int, dict[str, Any]] = {}
    for fold, split in data.folds.items():
        column = split_column(fold)
        rows = data.rows[[*keep, column]]
        out[fold] = {}
        for name in ("train", "val"):
            ds = ray.data.read_parquet(data.eeg_files, columns=columns) if tables is None else ray.data.from_arrow(tables)
            ds = ds.map_batches(
                select_split_rows,
                batch_format="pyarrow",
                batch_size=None,
                fn_kwargs={"rows": rows, "split": SPLIT_IDS[name], "eeg_shape": tuple(data.shapes.eeg),
                           "column": column},
            )
            out[fold][name] = ds.materialize()
        n_train, n_val = out[fold]["train"].count(), out[fold]["val"].count()
        if n_train != split.counts["train_rows"] or n_val != split.counts["val_rows"]:
            raise RuntimeError(f"Ray Data read {n_train}/{n_val} train/val rows of fold {fold}, expected "
                               f"{split.counts['train_rows']}/{split.counts['val_rows']}")
    return out


def core_row_bytes(data: SearchData) -> int:
    """Bytes of one EEG row as a worker holds it (eeg + label/index/flags)."""
    return int(np.prod(data.shapes.eeg)) * 4 + 8 * 3 + 3 + 4
