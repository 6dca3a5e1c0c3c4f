"""A generic manifest: one row per trial, EEG in any format MNE reads.

``RAW`` is a CSV or YAML file, or a folder holding ``manifest.csv``/``.yaml``/``.yml``.
YAML is a list of rows or ``{rows: [...]}``. Columns:

* ``subject``, ``trial`` (int >= 0), ``stimulus``, ``eeg`` (required). ``eeg`` is a
  recording MNE's ``mne.io.read_raw`` reads (EDF, BDF, FIF, BrainVision ``.vhdr``,
  EEGLAB ``.set``); a relative path resolves against the manifest's folder.
* ``onset``, ``duration``: seconds within the recording where the clip starts and how
  long the trial lasts (default: the whole file).
* ``valence``/``arousal``/``dominance``/``liking`` (1-9) and/or ``label`` (int):
  at least one of them.
* ``lag``: EEG-to-clip lag in seconds (default ``SourceOptions.lag``).

One load unit per distinct EEG file. Memory follows the rows, not the files: the file is
opened lazily (``preload=False``) and only each row's window is read
(``get_data(start=, stop=)``); with ``resample`` set, only that window plus
``RESAMPLE_PAD_S`` on each side is resampled. A one-hour 512 Hz recording therefore costs
what its rows cost (``bench/prepare.py`` measures it). A manifest of more than
``MAX_ROWS`` rows or ``MAX_RECORDINGS`` EEG files is refused. Headers are read at discovery, so a bad file, a missing channel, mismatched sampling rates or
a row reaching past the end of its recording stop ``prepare`` before any work starts.
The stimulus clips default to ``stimuli/`` beside the manifest (:func:`default_stimuli_dir`).
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mne
import numpy as np

from mercl.config import load_yaml
from mercl.data.sources import SourceOptions
from mercl.data.sources._common import (
    channel_indices,
    check_channel_count,
    check_finite,
    check_ratings,
    expect_file,
    resample_span,
    resampled_length,
    short_reason,
)
from mercl.data.trial import RATING_NAMES, Trial
from mercl.errors import InputFileError

MANIFEST_NAMES = ("manifest.csv", "manifest.yaml", "manifest.yml")
REQUIRED = ("subject", "trial", "stimulus", "eeg")
INT32_MAX = 2**31 - 1
# What one manifest may hold. Public affective EEG sets have a few thousand trials; the
# table is parsed in memory (~1 KB a row) and each file is a unit with its own shard, so
# past these a generated or mistaken table would make millions of rows or units.
MAX_ROWS = 200_000
MAX_RECORDINGS = 50_000


@dataclass
class ManifestRow:
    """One trial as the manifest gives it (``row`` is the 1-based data row number)."""

    row: int
    subject: str
    trial: int
    stimulus: str
    onset: float | None = None
    duration: float | None = None
    ratings: dict[str, float] = field(default_factory=dict)
    label: int | None = None
    lag: float = 0.0


@dataclass
class RecordingHeader:
    """What discovery learns from a recording's header without reading its data."""

    sfreq: float
    n_times: int
    picks: list[int]
    ch_names: list[str]

    @property
    def duration(self) -> float:
        return self.n_times / self.sfreq


@dataclass
class ManifestRecording:
    """One EEG file of the manifest and the trials (rows) it holds."""

    unit_name: str
    eeg_path: Path
    manifest: Path
    rows: list[ManifestRow]
    options: SourceOptions

    @property
    def name(self) -> str:
        return self.unit_name

    def load(self) -> list[Trial]:
        """Each row's trial, reading only its window of the recording (see the module docstring)."""
        raw = open_recording(self.eeg_path)
        header = read_header(raw, self.eeg_path, self.options)

        def read(start: int, stop: int) -> np.ndarray:
            try:
                return raw.get_data(picks=header.picks, start=start, stop=stop)
            except Exception as exc:
                raise InputFileError(self.eeg_path, f"MNE cannot read its data ({short_reason(exc)})") from None

        new_sfreq = self.options.resample
        n_times = resampled_length(header.n_times, header.sfreq, new_sfreq)
        trials = []
        for row in self.rows:
            start, stop = sample_span(row, new_sfreq or header.sfreq, n_times, self.eeg_path)
            data, sfreq = resample_span(read, header.n_times, header.sfreq, new_sfreq, start, stop)
            check_finite(
                data, self.eeg_path, f"trial {row.trial} of subject {row.subject} (manifest row {row.row})"
            )
            trials.append(
                Trial(
                    subject=row.subject,
                    trial=row.trial,
                    stimulus=row.stimulus,
                    eeg=data,
                    sfreq=sfreq,
                    ch_names=list(header.ch_names),
                    ratings=dict(row.ratings),
                    label=row.label,
                    lag=row.lag,
                    source_file=self.eeg_path,
                )
            )
        return trials


def find_manifest(raw: Path) -> Path:
    """The manifest file: RAW itself, or RAW/manifest.csv|yaml|yml."""
    raw = Path(raw)
    if raw.is_file():
        return raw
    if raw.is_dir():
        for name in MANIFEST_NAMES:
            if (raw / name).exists():
                expect_file(raw / name, "a manifest table")
                return raw / name
        raise InputFileError(raw, f"no manifest here (looked for {', '.join(MANIFEST_NAMES)})")
    raise InputFileError(raw, "no such file or directory")


def default_stimuli_dir(raw: Path) -> Path:
    """The clips folder the manifest source implies: ``stimuli/`` beside the manifest."""
    return find_manifest(raw).parent / "stimuli"


def read_table(path: Path) -> list[dict[str, Any]]:
    """The manifest's rows as dicts (CSV: strings; YAML: whatever YAML typed)."""
    if path.suffix.lower() in (".yaml", ".yml"):
        content = load_yaml(path)
        if isinstance(content, dict) and "rows" in content:
            content = content["rows"]
        if not isinstance(content, list) or not all(isinstance(r, dict) for r in content):
            raise InputFileError(path, "a YAML manifest must be a list of rows (mappings) or {rows: [...]}")
        if len(content) > MAX_ROWS:
            raise InputFileError(path, f"{len(content):,} rows, more than {MAX_ROWS:,} (at most {MAX_ROWS:,} trials per manifest)")
        return [{str(k).strip(): v for k, v in r.items()} for r in content]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                raise InputFileError(path, "empty manifest (no header line)")
            rows = []
            for r in reader:
                if len(rows) >= MAX_ROWS:
                    raise InputFileError(path, f"more than {MAX_ROWS:,} rows (at most {MAX_ROWS:,} trials per manifest)")
                if None in r:
                    raise InputFileError(path, f"row {len(rows) + 1}: more cells than header columns")
                rows.append({k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items()})
            return rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(path, f"not a readable CSV file ({short_reason(exc)})") from None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == "")


def _number(value: Any, column: str, row: int, path: Path) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputFileError(path, f"row {row}: {column} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise InputFileError(path, f"row {row}: {column} {value!r} is not a finite number")
    return number


def _integer(value: Any, column: str, row: int, path: Path) -> int:
    number = _number(value, column, row, path)
    if not number.is_integer():
        raise InputFileError(path, f"row {row}: {column} {value!r} is not an integer")
    if abs(number) > INT32_MAX:  # stored as int32
        raise InputFileError(path, f"row {row}: {column} {value!r} is out of range (|{column}| <= {INT32_MAX})")
    return int(number)


def parse_rows(table: list[dict[str, Any]], path: Path, default_lag: float) -> list[tuple[ManifestRow, str]]:
    """Check the table and turn it into ``(row, eeg path as written)`` pairs."""
    if not table:
        raise InputFileError(path, "the manifest has no rows")
    columns = {c for r in table for c in r}
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputFileError(
            path, f"missing required column(s) {', '.join(missing)} (has {', '.join(sorted(columns))})"
        )
    rating_columns = [c for c in RATING_NAMES if c in columns]
    if not rating_columns and "label" not in columns:
        raise InputFileError(path, f"no rating columns ({', '.join(RATING_NAMES)}) and no 'label' column")
    parsed, seen = [], {}
    for number, r in enumerate(table, start=1):
        for column in (*REQUIRED, *rating_columns, *(("label",) if "label" in columns else ())):
            if _missing(r.get(column)):
                raise InputFileError(path, f"row {number}: {column} is empty")
        for column in ("subject", "stimulus"):
            if any(ord(c) < 32 or ord(c) == 127 for c in str(r[column])):
                raise InputFileError(path, f"row {number}: {column} {str(r[column])!r} holds a control character")
        trial = _integer(r["trial"], "trial", number, path)
        if trial < 0:
            raise InputFileError(path, f"row {number}: trial {trial} must be >= 0")
        row = ManifestRow(
            row=number,
            subject=str(r["subject"]),
            trial=trial,
            stimulus=str(r["stimulus"]),
            ratings={c: _number(r[c], c, number, path) for c in rating_columns},
            label=_integer(r["label"], "label", number, path) if "label" in columns else None,
            lag=default_lag if _missing(r.get("lag")) else _number(r["lag"], "lag", number, path),
        )
        check_ratings(row.ratings, path, f"row {number}")
        if not _missing(r.get("onset")):
            row.onset = _number(r["onset"], "onset", number, path)
            if row.onset < 0:
                raise InputFileError(path, f"row {number}: onset {row.onset} must be >= 0")
        if not _missing(r.get("duration")):
            row.duration = _number(r["duration"], "duration", number, path)
            if row.duration <= 0:
                raise InputFileError(path, f"row {number}: duration {row.duration} must be > 0")
        if row.lag < 0:
            raise InputFileError(path, f"row {number}: lag {row.lag} must be >= 0 s")
        key = (row.subject, row.trial)
        if key in seen:
            raise InputFileError(
                path, f"row {number}: subject {row.subject} trial {row.trial} repeats row {seen[key]}"
            )
        seen[key] = number
        parsed.append((row, str(r["eeg"])))
    return parsed


def open_recording(path: Path) -> mne.io.BaseRaw:
    """``mne.io.read_raw`` without loading data; any failure is a one-line InputFileError."""
    expect_file(path, "an EEG recording")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = mne.io.read_raw(path, preload=False, verbose="warning")
    except Exception as exc:
        raise InputFileError(path, f"MNE cannot read it ({short_reason(exc)})") from None
    for warning in caught:
        # MNE reads a cut-short EDF/BDF as a shorter recording; never let that pass silently.
        if "does not match the file size" in str(warning.message):
            raise InputFileError(path, "truncated? its header's record count does not match the file size")
    return raw


def read_header(raw: mne.io.BaseRaw, path: Path, options: SourceOptions) -> RecordingHeader:
    """Rate, length and the EEG channels to keep (``options.channels`` or all EEG-type)."""
    if options.channels is not None:
        picks = channel_indices(raw.ch_names, options.channels, path)
    else:
        picks = [int(i) for i in mne.pick_types(raw.info, eeg=True, exclude=[])]
        if not picks:
            raise InputFileError(path, "no EEG-type channels (name them with the channels option)")
    check_channel_count(len(picks), options.min_channels, path)
    return RecordingHeader(
        sfreq=float(raw.info["sfreq"]),
        n_times=int(raw.n_times),
        picks=picks,
        ch_names=[raw.ch_names[i] for i in picks],
    )


def sample_span(row: ManifestRow, sfreq: float, n_times: int, path: Path) -> tuple[int, int]:
    """``[start, stop)`` samples of a row's trial at ``sfreq``; past the end is an error."""
    start = round((row.onset or 0.0) * sfreq)
    stop = n_times if row.duration is None else start + round(row.duration * sfreq)
    if stop == n_times + 1:
        stop = n_times  # rounding (e.g. after resampling), not a real overrun
    if stop > n_times or start >= stop:
        onset, duration = row.onset or 0.0, row.duration if row.duration is not None else 0.0
        raise InputFileError(
            path,
            f"manifest row {row.row}: onset {onset:g} s + duration {duration:g} s is beyond the "
            f"recording ({n_times / sfreq:g} s)",
        )
    return start, stop


def _unit_names(groups: dict[Path, list[ManifestRow]]) -> dict[Path, str]:
    """Unit names: the subject when a subject has one file, else ``<subject>-<file stem>``."""
    files_of: dict[str, set[Path]] = {}
    for eeg_path, rows in groups.items():
        for row in rows:
            files_of.setdefault(row.subject, set()).add(eeg_path)
    names, used = {}, set()
    for eeg_path, rows in groups.items():
        subjects = sorted({row.subject for row in rows})
        if len(subjects) == 1 and len(files_of[subjects[0]]) == 1:
            name = subjects[0]
        elif len(subjects) == 1:
            name = f"{subjects[0]}-{eeg_path.stem}"
        else:
            name = eeg_path.stem
        name = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "recording"
        unique, k = name, 2
        while unique in used:
            unique, k = f"{name}-{k}", k + 1
        used.add(unique)
        names[eeg_path] = unique
    return names


def _resolve(written: str, manifest: Path) -> Path:
    """An ``eeg`` cell as a path (a relative one against the manifest's folder)."""
    eeg_path = Path(written).expanduser()
    return eeg_path if eeg_path.is_absolute() else manifest.parent / eeg_path


def discover(raw: Path, options: SourceOptions) -> list[ManifestRecording]:
    """One unit per distinct EEG file of the manifest, checked against the file headers."""
    path = find_manifest(Path(raw))
    rows = parse_rows(read_table(path), path, options.lag)
    resolved = [(row, _resolve(written, path)) for row, written in rows]
    n_files = len({eeg_path for _, eeg_path in resolved})
    if n_files > MAX_RECORDINGS:
        raise InputFileError(
            path, f"{n_files:,} EEG files, more than {MAX_RECORDINGS:,} (at most {MAX_RECORDINGS:,} recordings per manifest)"
        )
    groups: dict[Path, list[ManifestRow]] = {}
    for row, eeg_path in resolved:
        expect_file(eeg_path, f"an EEG recording, manifest {path.name} row {row.row}")
        groups.setdefault(eeg_path, []).append(row)
    first: tuple[Path, float] | None = None
    for eeg_path, group in groups.items():
        header = read_header(open_recording(eeg_path), eeg_path, options)
        if first is None:
            first = (eeg_path, header.sfreq)
        elif options.resample is None and not np.isclose(header.sfreq, first[1]):
            raise InputFileError(
                eeg_path,
                f"sampling rate {header.sfreq:g} Hz differs from {first[1]:g} Hz of {first[0].name} "
                "(set the resample option)",
            )
        for row in group:
            sample_span(row, header.sfreq, header.n_times, eeg_path)
    names = _unit_names(groups)
    return [
        ManifestRecording(unit_name=names[p], eeg_path=p, manifest=path, rows=g, options=options)
        for p, g in groups.items()
    ]


def recording_facts(unit) -> tuple[Path, float, list[str]]:
    """(recording, EEG rate, EEG channel names) from its header, for ``mercl predict``'s checks."""
    raw = open_recording(unit.eeg_path)
    eeg = [raw.ch_names[i] for i in mne.pick_types(raw.info, eeg=True, exclude=[])]
    return unit.eeg_path, float(raw.info["sfreq"]), eeg or list(raw.ch_names)
