"""``mercl prepare``: recordings + stimulus clips -> per-segment features in Parquet shards.

Pipeline (see docs/CONTRACTS.md for the on-disk layout and the row schemas):

1. ``discover`` the source's load units (usually one per subject).
2. EEG, one job per unit (in worker processes): load the unit's trials, cut each into
   segments (segment k: clip time ``[k*hop, k*hop + seg)``, EEG time shifted by the lag),
   compute band-power sequences, write ``eeg/<unit>.parquet``.
3. Stimuli, one job per clip: probe it, decode audio and frames once, compute the
   log-Mel and frame features of every segment, write ``stimuli/<stimulus>.parquet``.
   A stimulus is stored once however many subjects watched it.
4. ``manifest.json`` last (counts, shapes, checksums): its presence marks a complete dataset.

The dataset directory is ``OUT/<source>-<hash>``, the hash covering the config, the
source and the resolved input paths, so a changed config never reuses stale shards. A
re-run with the same config skips every shard already written with a matching checksum
AND built from the same inputs (both recorded in ``progress.json`` as each job finishes:
the fingerprints of :mod:`mercl.data.fingerprints`, of every file and manifest row the shard
read), rebuilds the shards whose inputs changed (saying which input), removes the shards
whose inputs left the dataset and builds what is missing. ``manifest.json`` records the
fingerprints, a ``content_digest`` of the shard checksums (what caches of results key on)
and its paths relative (RAW to the dataset folder, the rest to RAW's folder).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from mercl import atomic
from mercl.config import FieldProblem, config_hash, from_dict, load_yaml, set_dotted, to_dict
from mercl.data import shards
from mercl.data.clip_ids import check_stimulus_id
from mercl.data.features.audio import (
    AudioFeatureConfig,
    apply_audio_preset,
    audio_segment_features,
    audio_stop_s,
    n_audio_frames,
    read_audio,
)
from mercl.data.features.eeg import EegFeatureConfig, eeg_trial_features, n_subwindows
from mercl.data.features.video import (
    VideoFeatureConfig,
    n_video_frames,
    probe_clip,
    read_video_frames,
    video_segment_frames,
)
from mercl.data.fingerprints import (
    changed_inputs,
    describe_change,
    relative_name,
    stimulus_inputs,
    unit_inputs,
)
from mercl.data.labels import available_schemes, class_counts
from mercl.data.sources import SOURCE_NAMES, SourceOptions, discover
from mercl.data.sources._common import expect_dir, expect_file
from mercl.data.sources.manifest import default_stimuli_dir
from mercl.data.trial import RATING_NAMES, Trial
from mercl.errors import ConfigError, InputFileError, MerclError
from mercl.modalities import SILENT_DB

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CLIP_EXTENSIONS = ("mp4", "mkv", "avi", "mov", "webm")
_EPS = 1e-6
MAX_OVERLAP = 0.99  # segments overlapping more than this are refused (issue 21: bounded segment counts)


@dataclass
class PrepareConfig:
    """How recordings become segments and features (loaded from prepare.yaml + CLI flags).

    segment_s: segment length in seconds (the paper: 4 s).
    overlap: fraction of a segment shared with the next one; hop = segment_s * (1 - overlap).
    eeg / audio / video: feature settings per modality.
    source: options for reading the recordings (baseline, channels, resampling, lag).
    """

    segment_s: float = 4.0
    overlap: float = 0.5
    eeg: EegFeatureConfig = field(default_factory=EegFeatureConfig)
    audio: AudioFeatureConfig = field(default_factory=AudioFeatureConfig)
    video: VideoFeatureConfig = field(default_factory=VideoFeatureConfig)
    source: SourceOptions = field(default_factory=SourceOptions)

    def validate(self) -> None:
        if not self.segment_s > 0:
            raise FieldProblem("segment_s", f"must be > 0 s, got {self.segment_s}")
        if not 0.0 <= self.overlap < 1.0:
            raise FieldProblem("overlap", f"must be in [0, 1), got {self.overlap}")
        if self.overlap > MAX_OVERLAP:  # each second of EEG would make > 100 / segment_s segments
            raise FieldProblem("overlap", f"must be <= {MAX_OVERLAP:g} (a hop of at least 1/100 of the "
                                          f"segment), got {self.overlap} (a hop of {self.hop_s:.3g} s)")
        if self.eeg.subwindow_s > self.segment_s:
            raise FieldProblem(
                "eeg.subwindow_s", f"{self.eeg.subwindow_s} s is longer than the segment ({self.segment_s} s)"
            )
        for name in ("audio", "video"):
            try:
                self.shapes(1)[name]
            except ValueError as exc:
                raise FieldProblem(name, str(exc)) from None

    @property
    def hop_s(self) -> float:
        return self.segment_s * (1.0 - self.overlap)

    def shapes(self, n_channels: int) -> dict[str, list[int]]:
        """Per-row array shapes: eeg (T_e, C, bands), audio (T_a, n_mels), video (T_v, 3, H, W)."""
        return {
            "eeg": [n_subwindows(self.segment_s, self.eeg), n_channels, len(self.eeg.bands)],
            "audio": [n_audio_frames(self.segment_s, self.audio), self.audio.n_mels],
            "video": [n_video_frames(self.segment_s, self.video), 3, self.video.size, self.video.size],
        }


def load_prepare_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> PrepareConfig:
    """PrepareConfig from an optional YAML file plus dotted-key overrides (``{"video.fps": 2}``).

    A named audio preset (``audio: {preset: vggish}``) fills the audio fields left out.
    """
    data = (load_yaml(path) or {}) if path is not None else {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", "expected a mapping", path)
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, key, value)
    return from_dict(PrepareConfig, apply_audio_preset(data), source=path)


def n_segments(eeg_duration: float, lag: float, segment_s: float, hop_s: float) -> int:
    """``floor((eeg_duration - lag - seg) / hop) + 1`` segments, 0 if the trial is too short."""
    usable = eeg_duration - lag
    if usable + _EPS < segment_s:
        return 0
    return int(math.floor((usable - segment_s) / hop_s + _EPS)) + 1


def segment_starts(n: int, hop_s: float) -> np.ndarray:
    """(n,) segment start times in clip time: ``k * hop``."""
    return np.arange(n, dtype=np.float64) * hop_s


def safe_name(name: str) -> str:
    """A file-name-safe version of a unit or stimulus id."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(name)) or "_"


def find_clip(stimuli_dir: Path | None, stimulus: str) -> Path | None:
    """``<stimuli_dir>/<stimulus>.<ext>`` for the first ext in CLIP_EXTENSIONS that exists."""
    if stimuli_dir is None:
        return None
    check_stimulus_id(stimuli_dir, stimulus)
    for ext in CLIP_EXTENSIONS:
        for candidate in (stimuli_dir / f"{stimulus}.{ext}", stimuli_dir / f"{stimulus}.{ext.upper()}"):
            try:
                exists = candidate.exists()
            except (OSError, ValueError) as exc:  # an id too long for a file name
                raise InputFileError(
                    stimuli_dir, f"cannot look for the clip of stimulus {stimulus[:40]!r} ({exc.__class__.__name__})"
                ) from None
            if exists:
                expect_file(candidate, f"the clip of stimulus {stimulus}")
                return candidate
    return None


# ---------------------------------------------------------------- EEG jobs


def check_finite_features(
    features: np.ndarray,
    modality: str,
    path: str | Path,
    where: str,
    signal: np.ndarray | None = None,
    unit: str = "",
) -> None:
    """Refuse features holding NaN or Inf (a dataset must never carry them).

    ``where`` names the trial or clip segment; ``signal`` (the input they came from) lets the
    message give its largest magnitude, e.g. EEG samples of 1e300 V that overflow the spectra.
    """
    finite = np.isfinite(features)
    if finite.all():
        return
    bad = int(finite.size - np.count_nonzero(finite))
    hint = ""
    if signal is not None and signal.size:
        with np.errstate(all="ignore"):
            values = np.abs(np.asarray(signal, dtype=np.float64))
        if np.isnan(values).any():
            hint = "; the input holds NaN"
        else:
            hint = f"; largest input magnitude {np.max(values):.3g}{unit} (wrong units or a damaged file?)"
    raise InputFileError(path, f"{where}: {bad} of {finite.size} {modality} feature values are NaN/Inf{hint}")


def _eeg_unit_table(trials: list[Trial], unit_name: str, cfg: PrepareConfig) -> pa.Table:
    """All segments of one unit's trials as an EEG-row table (schema in CONTRACTS.md)."""
    hop = cfg.hop_s
    columns: dict[str, list] = {
        k: [] for k in ("subject", "trial", "segment", "stimulus", "start_s", "lag_s")
    }
    ratings: dict[str, list] = {}
    labels: list = []
    features = []
    trial_info = []
    rating_names = [r for r in RATING_NAMES if any(r in t.ratings for t in trials)]
    has_label = any(t.label is not None for t in trials)
    ch_names = list(trials[0].ch_names) if trials else []
    sfreqs = sorted({float(t.sfreq) for t in trials})
    for t in trials:
        where = t.source_file or unit_name
        if list(t.ch_names) != ch_names:
            raise InputFileError(where, f"trial {t.trial}: channels differ from the unit's first trial")
        if t.lag < 0:
            raise InputFileError(where, f"trial {t.trial}: negative lag {t.lag} s (EEG must trail the clip)")
        n = n_segments(t.duration, t.lag, cfg.segment_s, hop)
        trial_info.append(
            {
                "subject": t.subject,
                "trial": int(t.trial),
                "stimulus": str(t.stimulus),
                "eeg_duration_s": float(t.duration),
                "lag_s": float(t.lag),
                "n_segments": n,
            }
        )
        if n == 0:
            log.warning("%s: trial %s is shorter than one segment after the lag; skipped", where, t.trial)
            continue
        starts = segment_starts(n, hop)
        try:
            with np.errstate(all="ignore"):  # overflow is reported below, as one line
                feats = eeg_trial_features(t.eeg, t.sfreq, starts + t.lag, cfg.segment_s, cfg.eeg)
        except ValueError as exc:
            raise InputFileError(where, f"trial {t.trial}: {exc}") from None
        check_finite_features(feats, "EEG", where, f"subject {t.subject} trial {t.trial}", t.eeg, " V")
        features.append(feats)
        columns["subject"] += [t.subject] * n
        columns["trial"] += [int(t.trial)] * n
        columns["segment"] += list(range(n))
        columns["stimulus"] += [str(t.stimulus)] * n
        columns["start_s"] += list(starts)
        columns["lag_s"] += [float(t.lag)] * n
        for r in rating_names:
            ratings.setdefault(r, []).extend([t.ratings.get(r, np.nan)] * n)
        labels += [t.label] * n
    shape = cfg.shapes(len(ch_names))["eeg"]
    eeg = np.concatenate(features) if features else np.zeros((0, *shape), np.float32)
    arrays = {
        "subject": pa.array(columns["subject"], pa.string()),
        "trial": pa.array(columns["trial"], pa.int32()),
        "segment": pa.array(columns["segment"], pa.int32()),
        "stimulus": pa.array(columns["stimulus"], pa.string()),
        "start_s": pa.array(columns["start_s"], pa.float32()),
        "lag_s": pa.array(columns["lag_s"], pa.float32()),
    }
    for r in rating_names:
        arrays[r] = pa.array(np.asarray(ratings.get(r, []), np.float32), pa.float32())
    if has_label:
        arrays["label"] = pa.array(labels, pa.int32())
    arrays["eeg"] = shards.fixed_list_array(eeg.astype(np.float32, copy=False), pa.float32())
    info = {
        "unit": unit_name,
        "ch_names": ch_names,
        "sfreq": sfreqs[0] if len(sfreqs) == 1 else sfreqs,
        "bands": list(cfg.eeg.bands),
        "trials": trial_info,
        "source_files": sorted({str(t.source_file) for t in trials if t.source_file is not None}),
    }
    table = pa.table(arrays)
    return table.replace_schema_metadata(shards.shapes_metadata({"eeg": shape}, info))


def build_eeg_shard(unit: Any, cfg: PrepareConfig, path: Path, base: Path | None = None) -> str:
    """Load one unit, write its EEG shard atomically, return the shard's sha256 (runs in a worker).

    base: the raw folder; the shard's metadata names its source files relative to it.
    """
    trials = unit.load()
    table = _eeg_unit_table(trials, unit.name, cfg)
    if base is not None:
        table = _with_info(table, source_files=sorted({relative_name(f, base) for f in
                                                       shards.read_info(table.schema).get("source_files", [])}))
    shards.write_table(table, path)
    return shards.sha256_file(path)


def _with_info(table: pa.Table, **changes) -> pa.Table:
    """``table`` with keys of its ``b"mercl"`` info metadata replaced."""
    info = {**shards.read_info(table.schema), **changes}
    return table.replace_schema_metadata(shards.shapes_metadata(shards.read_shapes(table.schema), info))


# ---------------------------------------------------------------- stimulus jobs


@dataclass
class StimulusJob:
    """What one stimulus shard needs: its clip, how many segments, how much clip they cover."""

    stimulus: str
    clip: Path
    n_segments: int
    eeg_after_lag_s: float  # the longest EEG (minus its lag) paired with this clip


def _stimulus_table(job: StimulusJob, cfg: PrepareConfig) -> pa.Table:
    """One row per (stimulus, segment): log-Mel, energy, frames, presence flags."""
    info = probe_clip(job.clip)
    if info.duration + cfg.hop_s + _EPS < job.eeg_after_lag_s:
        raise InputFileError(
            job.clip,
            f"clip is {info.duration:.2f} s long, shorter than its EEG "
            f"({job.eeg_after_lag_s:.2f} s after the lag)",
        )
    n = job.n_segments
    shapes = cfg.shapes(0)
    starts = segment_starts(n, cfg.hop_s)
    stop_s = audio_stop_s(starts, cfg.segment_s, cfg.audio.sample_rate, cfg.audio) if n else None  # what they read
    wave = read_audio(job.clip, cfg.audio.sample_rate, stop_s) if info.has_audio else None
    if wave is not None:
        if not np.isfinite(wave).all():
            bad = int(wave.size - np.count_nonzero(np.isfinite(wave)))
            raise InputFileError(job.clip, f"audio track holds {bad} NaN/Inf samples")
        audio, energy = audio_segment_features(wave, cfg.audio.sample_rate, starts, cfg.segment_s, cfg.audio)
        check_finite_features(audio, "audio", job.clip, f"stimulus {job.stimulus}")
        energy = np.maximum(np.nan_to_num(energy, nan=SILENT_DB, neginf=SILENT_DB), SILENT_DB)
    else:
        audio = np.zeros((n, *shapes["audio"]), np.float32)
        energy = np.full(n, SILENT_DB, np.float32)
    has_video = False
    video = np.zeros((n, *shapes["video"]), np.uint8)
    if info.has_video:
        frames, times = read_video_frames(job.clip, cfg.video, stop_s=starts[-1] + cfg.segment_s if n else None)
        if len(frames):
            has_video = True
            video = video_segment_frames(frames, times, starts, cfg.segment_s, cfg.video)
    if tuple(audio.shape[1:]) != tuple(shapes["audio"]) or tuple(video.shape[1:]) != tuple(shapes["video"]):
        raise MerclError(
            f"{job.clip}: feature shapes audio {audio.shape[1:]} / video {video.shape[1:]} differ from the "
            f"expected {shapes['audio']} / {shapes['video']}"
        )
    table = pa.table(
        {
            "stimulus": pa.array([job.stimulus] * n, pa.string()),
            "segment": pa.array(np.arange(n), pa.int32()),
            "start_s": pa.array(starts, pa.float32()),
            "audio_present": pa.array(np.full(n, wave is not None), pa.bool_()),
            "audio_energy": pa.array(np.asarray(energy, np.float32), pa.float32()),
            "audio": shards.fixed_list_array(audio.astype(np.float32, copy=False), pa.float32()),
            "video_present": pa.array(np.full(n, has_video), pa.bool_()),
            "video": shards.fixed_list_array(video.astype(np.uint8, copy=False), pa.uint8()),
        }
    )
    meta = {
        "stimulus": job.stimulus,
        "clip": str(job.clip),
        "duration_s": float(info.duration),
        "has_audio": wave is not None,
        "has_video": has_video,
        "n_segments": n,
    }
    return table.replace_schema_metadata(
        shards.shapes_metadata({"audio": shapes["audio"], "video": shapes["video"]}, meta)
    )


def build_stimulus_shard(job: StimulusJob, cfg: PrepareConfig, path: Path, base: Path | None = None) -> str:
    """Write one stimulus shard atomically, return its sha256 (runs in a worker).

    base: the raw folder; the shard's metadata names the clip relative to it.
    """
    table = _stimulus_table(job, cfg)
    if base is not None:
        table = _with_info(table, clip=relative_name(job.clip, base))
    shards.write_table(table, path)
    return shards.sha256_file(path)


# ---------------------------------------------------------------- orchestration


@dataclass
class PrepareResult:
    """Where the dataset is and what this run did (relative shard paths)."""

    dataset_dir: Path
    manifest: dict
    built: list[str]
    skipped: list[str]
    rebuilt: dict[str, list[str]] = field(default_factory=dict)  # rel -> the inputs that changed
    removed: list[str] = field(default_factory=list)  # shards whose inputs left the dataset
    changes: list[str] = field(default_factory=list)  # console lines: "3 shards rebuilt: ..."


def dataset_id(source: str, raw: Path, stimuli: Path | None, cfg: PrepareConfig) -> str:
    """``<source>-<12 hex>``: hash of the config, the source and the resolved input paths."""
    key = {
        "config": to_dict(cfg),
        "source": source,
        "raw": str(Path(raw).resolve()),
        "stimuli": str(Path(stimuli).resolve()) if stimuli is not None else None,
    }
    return f"{source}-{config_hash(key)}"


def _default_stimuli_dir(source: str, raw: Path) -> Path | None:
    """Manifest sources keep clips in ``stimuli/`` beside the manifest by default."""
    if source != "manifest":
        return None
    candidate = default_stimuli_dir(raw)
    if candidate.exists():
        expect_dir(candidate, "the folder of stimulus clips")
        return candidate
    return None


class _Progress:
    """``progress.json``: what was built so far, one JSON line per finished shard::

        {"<rel>": {"sha256": "<hex of the shard>", "inputs": {"<input name>": "<fingerprint>"}}}

    Appended as each shard finishes (O(1) per shard, not a rewrite of the whole map); read by
    merging the lines in order. A line cut short by a crash is skipped (that shard is simply
    rebuilt); an older file (``{rel: sha256}`` lines or one object, without input fingerprints)
    reads too, and its shards count as built from unknown inputs (rebuilt once).
    """

    def __init__(self, root: Path):
        self.path = root / "progress.json"
        self.done: dict[str, dict] = {}
        manifest = root / "manifest.json"
        if manifest.is_file():
            try:
                recorded = json.loads(manifest.read_text())
                inputs = recorded.get("inputs") or {}
                self.done = {rel: {"sha256": digest, "inputs": inputs.get(rel)}
                             for rel, digest in (recorded.get("files") or {}).items()}
            except (ValueError, TypeError, AttributeError):
                pass
        if self.path.is_file():
            self.done.update(_read_progress_lines(self.path.read_text(errors="replace")))
            # compact once per run (also drops a line cut short, so appends start clean)
            self._rewrite()

    def _rewrite(self) -> None:
        atomic.write_text(self.path, "".join(json.dumps({k: v}) + "\n" for k, v in self.done.items()))

    def sha256(self, rel: str) -> str | None:
        return (self.done.get(rel) or {}).get("sha256")

    def inputs(self, rel: str) -> dict[str, str] | None:
        return (self.done.get(rel) or {}).get("inputs")

    def shard_intact(self, root: Path, rel: str) -> bool:
        """The shard file is there and is the one recorded (its sha256 matches)."""
        path = root / rel
        return rel in self.done and path.is_file() and shards.sha256_file(path) == self.sha256(rel)

    def record(self, rel: str, digest: str, inputs: dict[str, str]) -> None:
        self.done[rel] = {"sha256": digest, "inputs": inputs}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, atomic.PRIVATE_MODE)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps({rel: self.done[rel]}) + "\n")

    def forget(self, rels: Iterable[str]) -> None:
        for rel in rels:
            self.done.pop(rel, None)
        self._rewrite()


def _read_progress_lines(text: str) -> dict[str, dict]:
    """Merge the per-shard objects of a progress file (JSON lines, or one JSON object); an old
    ``{rel: sha256}`` entry becomes ``{"sha256": ..., "inputs": None}``."""
    try:
        whole = json.loads(text)
        entries = [whole] if isinstance(whole, dict) else []
    except ValueError:
        entries = []
        for line in text.splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
    done: dict[str, dict] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for rel, value in entry.items():
            if isinstance(value, str):
                done[str(rel)] = {"sha256": value, "inputs": None}
            elif isinstance(value, dict) and isinstance(value.get("sha256"), str):
                done[str(rel)] = {"sha256": value["sha256"], "inputs": value.get("inputs")}
    return done


def _run_jobs(
    jobs: list[tuple[str, Callable, tuple]],
    workers: int,
    on_done: Callable[[str, str], None],
    desc: str,
    progress: bool,
) -> None:
    """Run ``fn(*args)`` for each (name, fn, args) job, in ``workers`` processes (inline if 1).

    The first failure cancels what has not started and is re-raised (a MerclError keeps
    its one-line message across the process boundary). A worker killed in native code (a
    reader library crashing on a damaged file) becomes a one-line MerclError naming the
    job's input files; inline (``workers=1``) such a crash ends the process.
    """
    if not jobs:
        return
    bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress, leave=False)
    try:
        if workers <= 1:
            for name, fn, args in jobs:
                on_done(name, fn(*args))
                bar.update()
            return
        finished: set[str] = set()

        def done_with(name: str, result: str) -> None:
            finished.add(name)
            on_done(name, result)
            bar.update()

        try:
            _run_in_pool(jobs, workers, done_with)
        except BrokenProcessPool:
            # a worker died in native code (a damaged file can crash scipy's MAT reader, MNE's
            # or FFmpeg's decoders): run what is left one job per process to name the input
            for name, fn, args in jobs:
                if name not in finished:
                    with ProcessPoolExecutor(max_workers=1) as solo:
                        try:
                            result = solo.submit(fn, *args).result()
                        except BrokenProcessPool:
                            inputs = _job_inputs(args)
                            raise MerclError(
                                f"{', '.join(inputs) or name}: a worker process crashed reading "
                                f"{'them' if len(inputs) > 1 else 'it'} (building {name}); a damaged file?"
                            ) from None
                    done_with(name, result)
    finally:
        bar.close()


def _run_in_pool(jobs: list[tuple[str, Callable, tuple]], workers: int, on_done: Callable[[str, str], None]) -> None:
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        pending = {pool.submit(fn, *args): name for name, fn, args in jobs}
        error = None
        while pending and error is None:
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                name = pending.pop(future)
                if future.exception() is not None:
                    error = error or future.exception()
                    continue
                on_done(name, future.result())
        if error is not None:
            # keep what the running jobs finish (for the resume), skip what has not started
            for future in pending:
                future.cancel()
            wait(pending)
            for future, name in pending.items():
                if not future.cancelled() and future.exception() is None:
                    on_done(name, future.result())
            raise error


def _job_inputs(args: tuple) -> list[str]:
    """The input files of a job's first argument (a load unit or a StimulusJob), for messages."""
    item = args[0] if args else None
    files: list = []
    for attribute in ("path", "eeg_path", "clip", "label_file"):
        if getattr(item, attribute, None) is not None:
            files.append(getattr(item, attribute))
    files += list(getattr(item, "sessions", None) or [])
    return [str(f) for f in dict.fromkeys(files)]


class _ShardBuild:
    """The shards of one dataset folder being built: which are done (``progress.json``, with the
    fingerprints of the inputs each was built from), what this run built, rebuilt, skipped and
    removed."""

    def __init__(self, root: Path, workers: int, progress: bool):
        self.root, self.workers, self.progress = root, workers, progress
        self.done = _Progress(root)
        self.built: list[str] = []
        self.skipped: list[str] = []
        self.rebuilt: dict[str, list[str]] = {}  # rel -> names of the inputs that changed
        self.removed: list[str] = []
        self._inputs: dict[str, dict[str, str]] = {}

    def run(self, jobs: dict[str, tuple[Callable, tuple, dict[str, str]]], desc: str,
            fits: Callable[[str], bool] = lambda rel: True) -> None:
        """Build every shard of ``jobs`` ({relative path: (function, args, input fingerprints)})
        not already built from the same inputs (and still fitting ``fits``); the manifest goes
        until the dataset is whole again."""
        todo = []
        for rel, (fn, args, inputs) in jobs.items():
            intact = self.done.shard_intact(self.root, rel)
            changed = changed_inputs(self.done.inputs(rel), inputs) if intact else []
            if intact and not changed and fits(rel):
                self.skipped.append(rel)
                continue
            if changed:
                self.rebuilt[rel] = changed
            self._inputs[rel] = inputs
            todo.append((rel, fn, args))
        if todo:
            (self.root / "manifest.json").unlink(missing_ok=True)
        _run_jobs(todo, self.workers, self._record, desc, self.progress)

    def remove_all_but(self, keep: set[str]) -> None:
        """Delete the shards (and their records) that are no longer part of the dataset: a unit
        whose recording left the manifest, a clip no trial needs any more."""
        gone = [f"{folder}/{p.name}" for folder in ("eeg", "stimuli")
                for p in sorted((self.root / folder).glob("*.parquet"))]
        gone = [rel for rel in gone if rel not in keep]
        stale_records = [rel for rel in self.done.done if rel not in keep]
        if not gone and not stale_records:
            return
        (self.root / "manifest.json").unlink(missing_ok=True)
        for rel in gone:
            (self.root / rel).unlink(missing_ok=True)
        self.removed += gone
        self.done.forget(stale_records)

    def _record(self, rel: str, digest: str) -> None:
        self.done.record(rel, digest, self._inputs[rel])
        self.built.append(rel)

    def change_lines(self) -> list[str]:
        """What this run changed in an existing dataset, for the console:
        ``3 shards rebuilt: eeg/s01.edf changed``, ``1 shard removed: eeg/s03.parquet (...)``."""
        by_reason: dict[str, list[str]] = {}
        for rel, names in self.rebuilt.items():
            by_reason.setdefault(describe_change(names), []).append(rel)
        lines = [f"{_n_shards(len(rels))} rebuilt: {reason}" for reason, rels in by_reason.items()]
        if self.removed:
            shown = ", ".join(self.removed[:3]) + (f" and {len(self.removed) - 3} more" if len(self.removed) > 3 else "")
            lines.append(f"{_n_shards(len(self.removed))} removed: {shown} (no longer among the inputs)")
        return lines


def _n_shards(n: int) -> str:
    return f"{n} shard" if n == 1 else f"{n} shards"


def input_base(raw: Path) -> Path:
    """The folder input names are relative to: RAW itself, or the folder holding a RAW file."""
    raw = Path(raw)
    return raw if raw.is_dir() else raw.parent


def input_folders(dataset_dir: Path, manifest: dict) -> tuple[Path, Path | None]:
    """(RAW, stimuli folder) of a prepared dataset. ``manifest.json`` stores RAW and its folder
    (``raw_folder``, what input names are relative to) relative to the dataset folder and the
    stimuli folder relative to ``raw_folder``; an older manifest's absolute paths read as they are."""
    dataset_dir = Path(dataset_dir)
    raw = (dataset_dir / manifest["raw"]).resolve()
    base = (dataset_dir / manifest["raw_folder"]).resolve() if manifest.get("raw_folder") else input_base(raw)
    return raw, (base / manifest["stimuli"]).resolve() if manifest.get("stimuli") else None


def prepare(
    raw: str | Path,
    source: str,
    out: str | Path,
    *,
    stimuli: str | Path | None = None,
    config: PrepareConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Build (or finish, or bring up to date) the dataset for ``raw`` read as ``source`` under ``out``.

    A shard is reused only while the inputs it was built from are unchanged (see
    :mod:`mercl.data.fingerprints`); a changed input rebuilds the shards that read it, a shard
    whose inputs left the dataset is removed. Returns the dataset directory, its manifest and
    which shards were built, rebuilt, skipped or removed (``result.changes``: console lines).
    """
    cfg = config or PrepareConfig()
    raw, stimuli = _checked_inputs(raw, source, stimuli)
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    ds_id = dataset_id(source, raw, stimuli, cfg)
    root = _dataset_folder(Path(out), ds_id)
    base = input_base(raw)
    build = _ShardBuild(root, workers, progress)

    # 1-2. EEG shards, one per load unit
    units = discover(source, raw, cfg.source)
    if not units:
        raise InputFileError(raw, f"no {source} recordings found")
    unit_rel = _shard_names([unit.name for unit in units], "eeg", "load units")
    build.run({unit_rel[u.name]: (build_eeg_shard, (u, cfg, root / unit_rel[u.name], base), unit_inputs(u, base))
               for u in units}, "EEG units")
    rows, infos = _read_eeg_index(root, unit_rel.values())
    ch_names, sfreq = _common_channels(infos, base)
    if len(rows) == 0:
        longest = max((t["eeg_duration_s"] - t["lag_s"] for i in infos for t in i.get("trials", [])), default=0.0)
        raise InputFileError(
            raw,
            f"no trial holds one {cfg.segment_s:g} s segment (the longest has {longest:.2f} s of EEG after "
            "its lag): nothing to prepare; shorter segments with --segment?",
        )

    # 3. stimulus shards, one per clip
    needs = _stimulus_needs(infos)
    clips = {stimulus: find_clip(stimuli, stimulus) for stimulus in sorted(needs)}
    no_clip = [stimulus for stimulus, clip in clips.items() if clip is None]
    stim_rel = _shard_names([s for s, c in clips.items() if c is not None], "stimuli", "stimuli")
    build.remove_all_but({*unit_rel.values(), *stim_rel.values()})
    jobs = {rel: (build_stimulus_shard, (StimulusJob(s, clips[s], *needs[s]), cfg, root / rel, base),
                  stimulus_inputs(clips[s], *needs[s], base))
            for s, rel in stim_rel.items()}
    counts = {rel: needs[s][0] for s, rel in stim_rel.items()}
    build.run(jobs, "stimuli", fits=lambda rel: _stimulus_shard_fits(root / rel, counts[rel]))

    # 4. manifest last
    stim_info = {s: shards.read_info(shards.read_schema(root / rel)) for s, rel in stim_rel.items()}
    manifest = _manifest(ds_id, source, raw, stimuli, cfg, root, rows, infos, stim_info, no_clip, ch_names, sfreq)
    manifest.update(units=unit_rel, stimulus_files=stim_rel)
    rels = [*unit_rel.values(), *stim_rel.values()]
    manifest["files"] = {rel: build.done.sha256(rel) for rel in rels}
    manifest["inputs"] = {rel: build.done.inputs(rel) for rel in rels}
    manifest["content_digest"] = shards.files_digest(manifest["files"])
    shards.write_json(manifest, root / "manifest.json")
    changes = build.change_lines()
    for line in changes:
        log.info("%s: %s", root.name, line)
    return PrepareResult(root, manifest, build.built, build.skipped, build.rebuilt, build.removed, changes)


def _manifest(ds_id: str, source: str, raw: Path, stimuli: Path | None, cfg: PrepareConfig, root: Path,
              rows: pd.DataFrame, infos: list[dict], stim_info: dict[str, dict], no_clip: list[str],
              ch_names: list[str], sfreq) -> dict:
    """``manifest.json`` but for its shard lists (see docs/CONTRACTS.md). Paths are relative: RAW to
    the dataset folder, the stimuli folder to RAW's folder (no absolute path of the user's disk)."""
    base = input_base(raw)
    shapes = cfg.shapes(len(ch_names))
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset_id": ds_id,
        "source": source,
        "raw": relative_name(raw, root),
        "raw_folder": relative_name(base, root),
        "stimuli": relative_name(stimuli, base) if stimuli is not None else None,
        "config": to_dict(cfg),
        "config_hash": ds_id.split("-", 1)[1],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "counts": _counts(rows, infos, stim_info, no_clip),
        "shapes": shapes,
        "ch_names": ch_names,
        "sfreq": sfreq,
        "bands": {name: list(edges) for name, edges in cfg.eeg.bands.items()},
        "segment_s": cfg.segment_s,
        "hop_s": cfg.hop_s,
        "label_columns": [c for c in (*RATING_NAMES, "label") if c in rows.columns],
        "label_schemes": available_schemes(rows.columns, rows),
        "eeg_shape": shapes["eeg"],
        "audio_shape": shapes["audio"],
        "video_shape": shapes["video"],
    }


def _checked_inputs(raw: str | Path, source: str, stimuli: str | Path | None) -> tuple[Path, Path | None]:
    """``raw`` and the stimulus folder (given, or the source's default), both checked to exist."""
    if source not in SOURCE_NAMES:
        raise MerclError(f"unknown source '{source}' (choose from {', '.join(SOURCE_NAMES)})")
    raw = Path(raw)
    if not raw.exists():
        raise InputFileError(raw, "no such file or directory")
    if stimuli is None:
        return raw, _default_stimuli_dir(source, raw)
    stimuli = Path(stimuli)
    if not stimuli.exists():
        raise InputFileError(stimuli, "stimuli directory does not exist")
    expect_dir(stimuli, "a folder of stimulus clips (--stimuli)")
    return raw, stimuli


def _dataset_folder(out: Path, ds_id: str) -> Path:
    """``out/<dataset id>`` (no world access: it holds EEG), created, without the temporary files
    this host's interrupted runs left."""
    if out.exists():
        expect_dir(out, "an output folder for datasets")
    root = out / ds_id
    try:
        root.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFileError(root, f"cannot create the dataset folder ({exc.strerror or exc})") from None
    atomic.remove_dead_temp_files(root)
    return root


def _shard_names(names: Iterable[str], folder: str, what: str) -> dict[str, str]:
    """{name: ``folder/<safe name>.parquet``}; two names that map to one file are refused."""
    rels: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        rel = f"{folder}/{safe_name(name)}.parquet"
        if rel in taken:
            raise MerclError(f"two {what} map to the same shard {rel}; rename one")
        rels[name] = rel
        taken.add(rel)
    return rels


def _read_eeg_index(root: Path, rels: Iterable[str]) -> tuple[pd.DataFrame, list[dict]]:
    """The non-feature columns of every EEG shard (one DataFrame) and each shard's info metadata."""
    frames, infos = [], []
    for rel in rels:
        path = root / rel
        schema = shards.read_schema(path)
        columns = [c for c in schema.names if c != "eeg"]
        frames.append(shards.read_table(path, columns=columns).to_pandas())
        infos.append(
            {**shards.read_info(schema), "shard": rel, "eeg_shape": shards.read_shapes(schema)["eeg"]}
        )
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return rows, infos


def _common_channels(infos: list[dict], base: Path) -> tuple[list[str], float | list[float]]:
    """The channel list every unit shares (an error names the first shard that differs)."""
    with_trials = [i for i in infos if i.get("trials")]
    if not with_trials:
        raise MerclError("no trials found in any load unit")
    first = with_trials[0]
    for info in with_trials[1:]:
        if info["ch_names"] != first["ch_names"]:
            where = ", ".join(str(base / f) for f in info.get("source_files", [])) or info["shard"]
            raise InputFileError(
                where,
                f"EEG channels ({len(info['ch_names'])}) differ from {first['unit']}'s "
                f"({len(first['ch_names'])}); pick a common set with --channels",
            )
    rates = sorted({r for i in with_trials for r in np.atleast_1d(i["sfreq"]).tolist()})
    return list(first["ch_names"]), rates[0] if len(rates) == 1 else rates


def _stimulus_needs(infos: list[dict]) -> dict[str, tuple[int, float]]:
    """stimulus -> (segments needed, longest EEG after lag in seconds) over every trial showing it."""
    needs: dict[str, tuple[int, float]] = {}
    for info in infos:
        for t in info.get("trials", []):
            if t["n_segments"] == 0:
                continue
            n, after = needs.get(t["stimulus"], (0, 0.0))
            needs[t["stimulus"]] = (max(n, t["n_segments"]), max(after, t["eeg_duration_s"] - t["lag_s"]))
    return needs


def _stimulus_shard_fits(path: Path, n_segments: int) -> bool:
    try:
        return shards.read_info(shards.read_schema(path)).get("n_segments") == n_segments
    except InputFileError:
        return False


def _counts(rows: pd.DataFrame, infos: list[dict], stim_info: dict[str, dict], no_clip: list[str]) -> dict:
    """Segments per subject / trial / class, and what is missing (for the manifest and summary)."""
    trials_total = sum(len(i.get("trials", [])) for i in infos)
    too_short = sum(1 for i in infos for t in i.get("trials", []) if t["n_segments"] == 0)
    has_audio = {s for s, i in stim_info.items() if i.get("has_audio")}
    has_video = {s for s, i in stim_info.items() if i.get("has_video")}
    stim = rows["stimulus"].astype(str) if len(rows) else pd.Series([], dtype=str)
    trial_key = rows["subject"].astype(str) + "/" + rows["trial"].astype(str) if len(rows) else stim
    trials_without_clip = int(trial_key[~stim.isin(list(stim_info))].nunique()) if len(rows) else 0
    classes = {}
    for scheme in available_schemes(rows.columns, rows):
        try:
            classes[scheme] = class_counts(rows, scheme)
        except MerclError as exc:  # e.g. some units lack a rating
            log.warning("no class counts for %s: %s", scheme, exc)
    return {
        "segments": int(len(rows)),
        "subjects": int(rows["subject"].nunique()) if len(rows) else 0,
        "trials": int(trial_key.nunique()) if len(rows) else 0,
        "trials_read": trials_total,
        "trials_too_short": too_short,
        "stimuli": int(stim.nunique()),
        "segments_per_subject": {str(k): int(v) for k, v in rows.groupby("subject").size().items()}
        if len(rows)
        else {},
        "segments_per_trial": {
            str(k): int(v) for k, v in trial_key.value_counts(sort=False).sort_index().items()
        },
        "classes": classes,
        "missing": {
            "audio_segments": int((~stim.isin(list(has_audio))).sum()),
            "video_segments": int((~stim.isin(list(has_video))).sum()),
            "trials_without_clip": trials_without_clip,
            "stimuli_without_clip": sorted(no_clip),
            "clips_without_audio": sorted(set(stim_info) - has_audio),
            "clips_without_video": sorted(set(stim_info) - has_video),
        },
    }
