"""Fingerprints of the inputs each shard of ``mercl prepare`` was built from.

A shard is reused only while every input it was built from is unchanged, so an edited rating, a
replaced recording or a replaced clip rebuilds exactly the shards that read it:

* a file (EEG recording, DEAP pickle, SEED session or ``label.mat``, clip):
  ``<size>:<mtime ns>:<content hash>``, the hash SHA-256 of the whole file up to
  :data:`FULL_HASH_BYTES`, above that of its size, first and last MiB (a cheap partial hash). Two
  fingerprints with whole-file hashes match on size and hash (a file only touched, or copied
  with a new mtime, is unchanged); with partial hashes the mtime must match too (it stands for
  the middle of the file the hash did not read);
* a manifest row: the row's values (not its line number, so removing one row leaves the others
  unchanged), one input per (subject, trial);
* anything else a load unit holds (its subject id, a stimulus job's segment count).

Inputs are named relative to the raw folder (``eeg/s01.edf``, ``manifest.csv (subject s01 trial
2)``), so :func:`changed_inputs` gives the console's "3 shards rebuilt: eeg/s01.edf changed".
The source options are not fingerprinted here: they are part of the config that names the
dataset folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mercl.errors import InputFileError

FULL_HASH_BYTES = 8 << 20  # files up to 8 MiB are hashed whole
EDGE_BYTES = 1 << 20  # larger files: their first and last MiB
_SKIPPED_FIELDS = ("options", "manifest")  # in the dataset's config / read as rows


def relative_name(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (``../x`` outside it), POSIX-style."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative form
        return Path(path).name


def content_hash(path: Path) -> str:
    """``sha256:<hex>`` of the whole file, or ``edges:<hex>`` of (size, first MiB, last MiB)."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            while block := f.read(1 << 20):
                digest.update(block)
            return f"sha256:{digest.hexdigest()}"
        digest.update(str(size).encode())
        digest.update(f.read(EDGE_BYTES))
        f.seek(size - EDGE_BYTES)
        digest.update(f.read(EDGE_BYTES))
    return f"edges:{digest.hexdigest()}"


def file_fingerprint(path: Path) -> str:
    """One file's fingerprint: ``<size>:<mtime ns>:<content hash>`` (see the module docstring); a
    folder's is ``dir:<digest>`` of its entries' names, sizes and mtimes. An unreadable input is a
    one-line InputFileError."""
    try:
        if Path(path).is_dir():
            entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(path).iterdir())
            return f"dir:{value_fingerprint(entries)}"
        stat = os.stat(path)
        return f"{stat.st_size}:{stat.st_mtime_ns}:{content_hash(path)}"
    except OSError as exc:
        raise InputFileError(path, f"cannot read it ({exc.strerror or exc})") from None


def same_input(old: str | None, new: str | None) -> bool:
    """Whether two fingerprints of one input say it is unchanged: a file fully hashed matches on
    size and hash (its mtime aside), a file hashed in part on size, mtime and hash; anything
    else matches when equal."""
    if old is None or new is None:
        return old == new
    old_parts, new_parts = old.split(":", 2), new.split(":", 2)
    whole = len(old_parts) == len(new_parts) == 3 and old_parts[2].startswith("sha256:")
    if whole and new_parts[2].startswith("sha256:"):
        return (old_parts[0], old_parts[2]) == (new_parts[0], new_parts[2])
    return old == new


def value_fingerprint(value: Any) -> str:
    """16-hex digest of a JSON-able value (dataclasses as dicts, anything else as text)."""
    text = json.dumps(_plain(value), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _row_inputs(rows: list, manifest: Path | None, base: Path) -> dict[str, str]:
    """One input per manifest row, named by its subject and trial; its line number left out."""
    where = relative_name(manifest, base) if manifest is not None else "rows"
    inputs = {}
    for row in rows:
        values = _plain(row)
        if isinstance(values, dict):
            values.pop("row", None)
            name = f"{where} (subject {values.get('subject')} trial {values.get('trial')})"
        else:
            name = f"{where} ({values})"
        inputs[name] = value_fingerprint(values)
    return inputs


def unit_inputs(unit: Any, base: Path) -> dict[str, str]:
    """{input name: fingerprint} of a load unit: its files, its manifest rows, its other fields.

    A unit that is not a dataclass gets a fingerprint that never matches an earlier one (its
    shard is rebuilt on every run rather than trusted).
    """
    if not dataclasses.is_dataclass(unit):
        return {"unit": f"unknown:{os.urandom(8).hex()}"}
    inputs: dict[str, str] = {}
    other: dict[str, Any] = {}
    for f in dataclasses.fields(unit):
        value = getattr(unit, f.name)
        if f.name in _SKIPPED_FIELDS:
            continue
        if isinstance(value, Path):
            inputs[relative_name(value, base)] = file_fingerprint(value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Path) for v in value):
            for path in value:
                inputs[relative_name(path, base)] = file_fingerprint(path)
        elif f.name == "rows" and isinstance(value, (list, tuple)):
            inputs.update(_row_inputs(list(value), getattr(unit, "manifest", None), base))
        else:
            other[f.name] = value
    if other:
        inputs["unit"] = value_fingerprint(other)
    return inputs


def stimulus_inputs(clip: Path, n_segments: int, eeg_after_lag_s: float, base: Path) -> dict[str, str]:
    """{input name: fingerprint} of one stimulus shard: its clip and how much of it is needed."""
    return {
        relative_name(clip, base): file_fingerprint(clip),
        "segments needed": value_fingerprint([int(n_segments), round(float(eeg_after_lag_s), 6)]),
    }


def changed_inputs(old: Mapping[str, str] | None, new: Mapping[str, str]) -> list[str]:
    """Names of the inputs that differ between two fingerprints (changed, new or gone).

    ``old`` None (a shard recorded by an older mercl, without fingerprints) is one pseudo-input.
    """
    if old is None:
        return ["no input fingerprint recorded"]
    names = sorted(set(old) | set(new))
    return [n for n in names if not same_input(old.get(n), new.get(n))]


def describe_change(names: list[str]) -> str:
    """``eeg/s01.edf changed`` / ``a, b and 2 more changed`` for the console."""
    if names == ["no input fingerprint recorded"]:
        return "no input fingerprint recorded (prepared by an older mercl)"
    shown = ", ".join(names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{shown}{more} changed"
