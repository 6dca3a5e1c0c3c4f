"""A readable summary of a prepared dataset: segments per subject and class, missing modalities, paths."""

from __future__ import annotations

import json
from pathlib import Path

from mercl.errors import InputFileError

INCOMPLETE = "incomplete dataset: no manifest.json, re-run mercl prepare"
RATING_RULE = ("ratings on 1-9 (DREAMER's 1-5 as 2s-1): a rating equal to a cut point goes to the lower class "
               "(2 classes: high when > 5; 3 classes: <= 3, <= 6, > 6), for every source")


def find_dataset_dir(path: str | Path) -> Path:
    """The dataset directory holding ``manifest.json``: ``path`` itself, or its only dataset subfolder.

    An output folder (``-o OUT``) with exactly one dataset is accepted; with several, the
    error lists them. A folder with shards but no manifest is an incomplete dataset.
    """
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path
    if not path.exists():
        raise InputFileError(path, "no such dataset directory")
    if not path.is_dir():
        raise InputFileError(path, "not a dataset directory")
    if (path / "eeg").is_dir() or (path / "progress.json").exists():
        raise InputFileError(path, INCOMPLETE)
    candidates = sorted(p for p in path.iterdir() if p.is_dir() and (p / "manifest.json").is_file())
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(p.name for p in candidates)
        raise InputFileError(path, f"holds several datasets ({names}); name one")
    partial = [p for p in path.iterdir() if p.is_dir() and (p / "eeg").is_dir()]
    if partial:
        raise InputFileError(partial[0], INCOMPLETE)
    raise InputFileError(path, "no dataset here (no manifest.json)")


def read_manifest(path: str | Path) -> tuple[Path, dict]:
    """(dataset dir, manifest dict) for a dataset directory (see :func:`find_dataset_dir`)."""
    root = find_dataset_dir(path)
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, OSError) as exc:
        raise InputFileError(manifest_path, f"not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict) or "files" not in manifest or "counts" not in manifest:
        raise InputFileError(manifest_path, "not a mercl dataset manifest (no 'files' or 'counts')")
    return root, manifest


def _n(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return ["  " + line for line in lines]


def format_summary(manifest: dict, root: str | Path) -> str:
    """The summary text of a dataset from its manifest."""
    from mercl.data.prepare import input_folders  # manifest.json stores them relative (privacy)

    root = Path(root).resolve()
    raw, stimuli = input_folders(root, manifest) if manifest.get("raw") else (None, None)
    counts = manifest["counts"]
    shapes = manifest.get("shapes", {})
    missing = counts.get("missing", {})
    lines = [
        f"dataset   {manifest.get('dataset_id', root.name)}",
        f"source    {manifest.get('source')}  raw {raw}",
        f"stimuli   {stimuli or 'none given'}",
        f"segments  {counts['segments']} ({manifest.get('segment_s', '?')} s, "
        f"hop {manifest.get('hop_s', '?')} s) from {counts['trials']} trials "
        f"of {counts['subjects']} subjects, "
        f"{counts.get('stimuli', '?')} stimuli",
        "shapes    " + ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items()),
        f"channels  {len(manifest.get('ch_names', []))} @ {manifest.get('sfreq')} Hz",
        "",
        "segments per subject:",
    ]
    per_trial = counts.get("segments_per_trial", {})
    trials_of: dict[str, int] = {}
    for key in per_trial:
        subject = key.rsplit("/", 1)[0]
        trials_of[subject] = trials_of.get(subject, 0) + 1
    lines += _table(
        ["subject", "segments", "trials"],
        [[s, n, trials_of.get(s, "?")] for s, n in counts.get("segments_per_subject", {}).items()],
    )
    classes = counts.get("classes", {})
    if classes:
        lines += ["", "segments per class:"]
        width = max(len(scheme) for scheme in classes)
        for scheme, per in classes.items():
            lines.append(f"  {scheme:<{width}}  " + " | ".join(f"{name} {n}" for name, n in per.items()))
        if any(scheme[:-1] in ("valence", "arousal", "dominance") or scheme == "quadrant4" for scheme in classes):
            lines.append(f"  {RATING_RULE}")
    else:
        lines += ["", "segments per class: no rating or label columns"]
    lines += ["", "missing modalities:"]
    total = counts["segments"]
    lines.append(f"  audio missing in {missing.get('audio_segments', 0)} of {total} segments")
    lines.append(f"  video missing in {missing.get('video_segments', 0)} of {total} segments")
    no_clip = missing.get("stimuli_without_clip", [])
    if no_clip:
        shown = ", ".join(no_clip[:8]) + (", ..." if len(no_clip) > 8 else "")
        lines.append(
            f"  {_n(missing.get('trials_without_clip', 0), 'trial')} without a clip "
            f"({_n(len(no_clip), 'stimulus', 'stimuli')}: {shown})"
        )
    for key, what in (("clips_without_audio", "no audio stream"), ("clips_without_video", "no video stream")):
        names = missing.get(key, [])
        if names:
            more = ", ..." if len(names) > 8 else ""
            lines.append(f"  {_n(len(names), 'clip')} with {what}: {', '.join(names[:8])}{more}")
    if counts.get("trials_too_short"):
        lines.append(f"  {_n(counts['trials_too_short'], 'trial')} shorter than one segment, skipped")
    lines += ["", "evaluation protocol:"]
    lines += ["  " + line for line in protocol_lines(root, manifest)]
    files = manifest.get("files", {})
    n_eeg = sum(1 for f in files if f.startswith("eeg/"))
    n_stim = sum(1 for f in files if f.startswith("stimuli/"))
    lines += ["", f"shards    {root / 'eeg'} ({n_eeg} files), {root / 'stimuli'} ({n_stim} files)"]
    lines.append(f"manifest  {root / 'manifest.json'}")
    return "\n".join(lines)


def protocol_lines(root: Path, manifest: dict, folds: int = 4) -> list[str]:
    """Which honest protocol applies by default, and how many clips per class (majority label) each
    label scheme has: ``stimulus`` folds need clips shared across subjects and every class on
    every training side."""
    import numpy as np
    import pyarrow.parquet as pq

    from mercl.data.labels import assign_labels, available_schemes, class_names
    from mercl.data.protocols import clips_per_class, default_protocol, has_clip, shared_stimuli

    eeg_files = sorted(f for f in manifest.get("files", {}) if f.startswith("eeg/"))
    if not eeg_files:
        return ["no EEG shards"]
    wanted = ["subject", "trial", "stimulus", "valence", "arousal", "dominance", "liking", "label"]
    tables = []
    for rel in eeg_files:
        names = pq.read_schema(root / rel).names
        tables.append(pq.read_table(root / rel, columns=[c for c in wanted if c in names]).to_pandas())
    import pandas as pd

    rows = pd.concat(tables, ignore_index=True)
    subjects, stimuli = rows["subject"].to_numpy(str), rows["stimulus"].to_numpy(str)
    n_clips = len(np.unique(stimuli[has_clip(stimuli)]))
    if not shared_stimuli(subjects, stimuli):
        what = "no stimulus clips" if n_clips == 0 else f"{n_clips} clips, not each watched by 2+ subjects"
        return [f"trial (default): {what}, so there is no clip to hold out"]
    viewers = len(np.unique(subjects))
    lines = [f"{n_clips} clips shared across {viewers} subjects: trial and subject folds keep every test clip "
             "in training through other viewers (clips shared with training)"]
    for scheme in available_schemes(rows.columns, rows):
        labels = assign_labels(rows, scheme)
        per = clips_per_class(stimuli, labels, len(class_names(scheme)))
        protocol, _ = default_protocol(subjects, stimuli, labels, folds)
        per_text = ", ".join(f"{name} {int(n)}" for name, n in zip(class_names(scheme), per, strict=True))
        lines.append(f"{scheme}: clips per class {per_text} -> default {protocol} ({folds} folds)")
    return lines


def summarize(path: str | Path) -> str:
    """The summary text of the dataset at ``path`` (a dataset dir or an output dir with one dataset)."""
    root, manifest = read_manifest(path)
    return format_summary(manifest, root)
