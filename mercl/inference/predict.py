"""``mercl predict``: a trained model on new recordings, prepared with the model's own preprocessing.

:func:`predict_recordings` reads ``model.pt`` (:mod:`mercl.inference.model_file`, no code runs from
it), checks that the recordings fit the model (EEG channels by name; the sampling rate, which is
resampled to the model's rate when the recording's Nyquist frequency covers the model's EEG
bands), prepares them with :func:`mercl.data.prepare.prepare` under ``OUT/prepared`` with the
preprocessing config stored in the model (the user never repeats a setting), computes the frozen
backbones' features once per stimulus segment (the feature cache: a clip is encoded once for all
its viewers) and runs the model in bounded batches on ``device``, exactly as
:meth:`mercl.training.crossval.SplitRun.batches` + :func:`~mercl.training.loop.predict_batches`
do in ``mercl evaluate``. Outputs (written only after everything is computed, each atomically)::

    OUT/segments.csv   subject, trial, stimulus, segment, start_s, predicted, prob_<class>..., [label]
    OUT/trials.csv     subject, trial, stimulus, n_segments, predicted, prob_<class>... (mean over
                       the trial's segments), [label]
    OUT/metrics.json   where the input has ratings/labels: accuracy and macro-F1 per segment and
                       per trial, beside the majority baseline (the model's training majority class)
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mercl.atomic import write_atomic
from mercl.config import from_dict
from mercl.errors import ConfigError, InputFileError, MerclError
from mercl.inference.model_file import ModelFile

log = logging.getLogger(__name__)

OUTPUTS = ("segments.csv", "trials.csv", "metrics.json")
PREPARED_DIR = "prepared"
NO_CLIPS = "no-clips"  # the empty clips folder of an EEG-only model


# ----------------------------------------------------------------------------- preprocessing of the model


def prepare_config_for(mf: ModelFile):
    """The model's PrepareConfig, reading its channels (by name, in its order) at its EEG rate."""
    from mercl.data.prepare import PrepareConfig

    pre = mf["preprocessing"]
    try:
        cfg = from_dict(PrepareConfig, copy.deepcopy(pre["config"]))
    except ConfigError as exc:
        raise InputFileError(mf.path, f"its preprocessing config does not load in this mercl: {exc}") from None
    cfg.source.channels = list(pre["ch_names"])
    cfg.source.resample = model_rate(mf)
    return cfg


def model_rate(mf: ModelFile) -> float:
    rate = mf["preprocessing"]["sfreq"]
    if isinstance(rate, list):  # a dataset of mixed rates (never resampled): features at several rates
        raise InputFileError(mf.path, f"the model was trained on EEG of several sampling rates {rate}; "
                                      "mercl predict needs one")
    return float(rate)


# ----------------------------------------------------------------------------- recordings vs. model


@dataclass
class RecordingFacts:
    """What a recording's header says: its file, EEG rate and channel names (None: not known up front)."""

    path: Path
    sfreq: float | None
    ch_names: list[str] | None


def recording_facts(source: str, unit: Any) -> RecordingFacts | None:
    """Rate and channels of one load unit, read from headers (or fixed by the release's format) by
    the source's own ``recording_facts``; None for a source that offers none."""
    from mercl.data.sources import source_module

    facts = getattr(source_module(source), "recording_facts", None)
    return RecordingFacts(*facts(unit)) if facts is not None else None


def _names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_recording(facts: RecordingFacts, mf: ModelFile, say: Callable[[str], None]) -> None:
    """Channels: every model channel present (by name, any case). Rate: equal, or resampled to the
    model's rate when this recording's Nyquist frequency reaches the top of the model's EEG bands."""
    pre = mf["preprocessing"]
    needed = list(pre["ch_names"])
    if facts.ch_names is not None:
        have = {c.lower() for c in facts.ch_names}
        missing = [c for c in needed if c.lower() not in have]
        if missing:
            raise InputFileError(facts.path, f"{len(facts.ch_names)} EEG channels, the model needs {len(needed)}: "
                                             f"missing {_names(missing)}")
    rate = model_rate(mf)
    if facts.sfreq is None or math.isclose(facts.sfreq, rate):
        return
    top = max(float(edges[1]) for edges in (pre.get("bands") or {"": [0.0, 0.0]}).values())
    if facts.sfreq / 2 < top:
        raise InputFileError(facts.path, f"EEG sampled at {facts.sfreq:g} Hz, the model needs {rate:g} Hz: its bands "
                                         f"reach {top:g} Hz, above this recording's Nyquist frequency "
                                         f"({facts.sfreq / 2:g} Hz), so resampling cannot restore them")
    say(f"{facts.path.name}: EEG at {facts.sfreq:g} Hz, resampled to the model's {rate:g} Hz")


def check_recordings(source: str, raw: Path, cfg, mf: ModelFile, say: Callable[[str], None]) -> None:
    """Check every load unit's channels and rate against the model before any work starts."""
    from mercl.data.sources import discover

    options = copy.deepcopy(cfg.source)
    options.channels = None  # discovery must not stop at the first missing channel: we name them all
    first = None
    for unit in discover(source, raw, options):
        facts = recording_facts(source, unit)
        if facts is not None:
            check_recording(facts, mf, say)
            first = first or facts
    if first is not None and first.ch_names is not None:
        say(picked_channels_text(first, list(mf["preprocessing"]["ch_names"])))


def picked_channels_text(facts: RecordingFacts, needed: list[str]) -> str:
    """One line: the recording's channels used for the model's, picked by name (any case), in its order."""
    from mercl.data.sources._common import channel_indices

    used = [facts.ch_names[i] for i in channel_indices(facts.ch_names, needed, facts.path)]
    return (f"EEG channels used: {', '.join(used)} (the model's {len(needed)}, picked by name from the "
            f"{len(facts.ch_names)} of {facts.path.name})")


# ----------------------------------------------------------------------------- missing clips


def check_modalities(prepared, mf: ModelFile, stimuli: Path | None, say: Callable[[str], None]) -> None:
    """A row without the model's video/audio is masked if the model saw that in training, else an error."""
    stim = prepared.stimuli
    s = prepared.stimulus_index
    has_row = s >= 0
    safe = np.where(has_row, s, 0)
    flags = {"video": stim.video_present, "audio": stim.audio_present}
    seen = mf.description.get("missing_modalities_seen", {})
    rows = prepared.rows
    for m in mf["modalities"]:
        if m not in flags:
            continue
        present = has_row & flags[m][safe] if len(stim) else np.zeros(len(rows), bool)
        if present.all():
            continue
        absent = np.flatnonzero(~present)
        trials = rows.iloc[absent][["subject", "trial"]].drop_duplicates()
        if seen.get(m):
            say(f"{len(absent)} segments of {len(trials)} trials have no {m}: masked (the model was trained with "
                f"missing {m})")
            continue
        first = rows.iloc[absent[0]]
        why = (f"no clip for stimulus '{first['stimulus']}'" if not has_row[absent[0]]
               else f"clip '{first['stimulus']}' has no {m} stream")
        from mercl.data.prepare import input_folders

        raise InputFileError(stimuli if stimuli is not None else input_folders(prepared.path, prepared.manifest)[0],
                             f"{why} (trial {first['trial']} of subject {first['subject']}, {len(trials)} trials "
                             f"in all); the model uses {m} and was not trained with it missing, so it cannot "
                             f"mask it (give the clips with --stimuli DIR)")


# ----------------------------------------------------------------------------- running the model


def _unlabelled(prepared):
    """The dataset with every row labelled 0, for inputs without ratings (labels are then ignored)."""
    from mercl.data.reader import PreparedDataset

    class Unlabelled(PreparedDataset):
        def labels(self, scheme, thresholds=None) -> np.ndarray:
            return np.zeros(len(self), np.int64)

    return Unlabelled(**{f.name: getattr(prepared, f.name) for f in fields(PreparedDataset)})


def dataset_labels(prepared, scheme: str, where: Path | None = None) -> np.ndarray | None:
    """(N,) class ids under the model's label scheme; None when the input has none of the scheme's
    columns (unrated recordings: predictions only). Ratings that are there but unusable (a column
    the scheme needs absent, rows without a value, values outside the scheme) are a one-line error
    naming what is missing, never a silent "predictions only"."""
    from mercl.data.labels import required_columns

    where = where if where is not None else prepared.path
    needed, rows = list(required_columns(scheme)), prepared.rows
    have = [c for c in needed if c in rows.columns]
    if not have:
        return None
    if len(have) < len(needed):
        absent = ", ".join(c for c in needed if c not in have)
        raise InputFileError(where, f"has {', '.join(have)} but no {absent}: the model's label scheme {scheme} "
                                    f"needs {' and '.join(needed)} (drop the ratings for predictions only)")
    empty = rows[needed].isna().any(axis=1).to_numpy()
    if empty.any():
        first = rows.iloc[int(np.argmax(empty))]
        raise InputFileError(where, f"{int(empty.sum())} of {len(rows)} segments have no {'/'.join(needed)} value "
                                    f"(first: subject {first['subject']} trial {first['trial']}); the model's label "
                                    f"scheme {scheme} needs one on every row")
    try:
        return prepared.labels(scheme)
    except (MerclError, KeyError, ValueError) as exc:
        raise InputFileError(where, f"cannot label its rows for the model's scheme {scheme}: {exc}") from None


def run_model(model, norm, cfg, prepared, scheme: str, rows: np.ndarray, *, feature_table: Path | None,
              batch_size: int, device, progress: bool, labelled: bool) -> dict[str, np.ndarray]:
    """predict_batches over ``rows`` in eval batches of ``batch_size`` (normalised, cached backbone features)."""
    import torch
    from tqdm.auto import tqdm

    from mercl.data.reader import SegmentDataset
    from mercl.training.crossval import make_batches
    from mercl.training.loop import predict_batches

    source = prepared if labelled else _unlabelled(prepared)
    extra = (feature_table,) if feature_table is not None else ()
    dataset = SegmentDataset(source, rows, scheme, cfg.model.modalities, extra)
    batches = make_batches(dataset, batch_size, shuffle=False, seed=cfg.seed, transform=norm.apply)()
    total = math.ceil(len(dataset) / batch_size)
    bar = tqdm(batches, total=total, desc="predict", unit="batch", leave=False, disable=not progress)
    previous_threads = torch.get_num_threads()
    if cfg.num_threads > 0:  # as in training: small models run faster on one thread than two that wait
        torch.set_num_threads(cfg.num_threads)
    try:
        return predict_batches(model, bar, device)
    finally:
        torch.set_num_threads(previous_threads)
        bar.close()


# ----------------------------------------------------------------------------- outputs


def prob_columns(names: list[str]) -> list[str]:
    """``prob_<class>`` column names (spaces and odd characters as ``_``)."""
    return [f"prob_{re.sub(r'[^A-Za-z0-9]+', '_', n).strip('_')}" for n in names]


def segment_frame(prepared, pred: dict, names: list[str], labels: np.ndarray | None) -> pd.DataFrame:
    order = np.argsort(pred["index"], kind="stable")
    rows = pred["index"][order]
    meta = prepared.rows.iloc[rows]
    frame = pd.DataFrame({
        "subject": meta["subject"].astype(str).to_numpy(),
        "trial": meta["trial"].to_numpy(np.int64),
        "stimulus": meta["stimulus"].astype(str).to_numpy(),
        "segment": meta["segment"].to_numpy(np.int64),
        "start_s": meta["start_s"].to_numpy(np.float64),
        "predicted": np.asarray(names, dtype=object)[pred["pred"][order]],
    })
    for k, column in enumerate(prob_columns(names)):
        frame[column] = pred["prob"][order, k]
    if labels is not None:
        frame["label"] = np.asarray(names, dtype=object)[labels[rows]]
    return frame


def trial_frame(segments: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """One row per (subject, trial): mean of its segments' probabilities, the most probable class."""
    probs = prob_columns(names)
    keys = ["subject", "trial"]
    grouped = segments.groupby(keys, sort=False)
    frame = grouped.agg(stimulus=("stimulus", "first"), n_segments=("segment", "size")).reset_index()
    means = grouped[probs].mean().reset_index(drop=True)
    frame["predicted"] = np.asarray(names, dtype=object)[means.to_numpy().argmax(axis=1)]
    frame = pd.concat([frame, means], axis=1)
    if "label" in segments:
        frame["label"] = grouped["label"].agg(lambda s: s.mode().iloc[0]).to_numpy()
    return frame


def scores(truth: pd.Series, predicted: pd.Series, names: list[str], majority: int) -> dict[str, Any]:
    from mercl.training.metrics import classification_metrics

    index = {n: k for k, n in enumerate(names)}
    y = truth.map(index).to_numpy(np.int64)
    mine = classification_metrics(y, predicted.map(index).to_numpy(np.int64), len(names))
    base = classification_metrics(y, np.full(len(y), majority, np.int64), len(names))
    return {"n": mine.n, "accuracy": mine.accuracy, "macro_f1": mine.macro_f1,
            "per_class_f1": dict(zip(names, mine.per_class_f1, strict=True)),
            "confusion": mine.confusion.tolist(),
            "majority_accuracy": base.accuracy, "majority_macro_f1": base.macro_f1}


# ----------------------------------------------------------------------------- the whole command


@dataclass
class PredictResult:
    """What :func:`predict_recordings` wrote: the frames and the metrics (None without labels)."""

    segments: pd.DataFrame
    trials: pd.DataFrame
    metrics: dict | None
    dataset_dir: Path
    out: Path


def clear_outputs(out: Path, force: bool) -> None:
    """Refuse to mix with an earlier run's outputs (``force``: remove them first)."""
    existing = [out / name for name in OUTPUTS if (out / name).exists()]
    if existing and not force:
        raise MerclError(f"{out}: already holds predictions ({existing[0].name}); use --force to overwrite or another -o")
    for path in existing:
        path.unlink()


def held_out_text(segments: pd.DataFrame, mf) -> str:
    """How the predicted recordings relate to the model's training data, by subject and clip id:
    ``new subjects, new clips`` is a test score; anything the model met in training is said.
    A model file holding salted hashes of the ids (``seen_ids``) is compared by hashing these ids."""
    from mercl.training.model_export import hashed_ids

    subjects = set(segments["subject"].astype(str))
    clips = set(segments["stimulus"].astype(str)) - {"none", ""}
    hashed = mf.description.get("seen_ids")
    if isinstance(hashed, dict) and hashed.get("salt"):
        salt = str(hashed["salt"])
        subjects = {hashed_ids([s], salt)[0] for s in subjects}
        clips = {hashed_ids([c], salt)[0] for c in clips}
        seen_subjects = set(hashed.get("subjects") or [])
        seen_stimuli = set(hashed.get("stimuli") or []) - set(hashed_ids(["none", ""], salt))
    else:
        seen_subjects = set(mf.description.get("seen_subjects") or [])
        seen_stimuli = set(mf.description.get("seen_stimuli") or []) - {"none", ""}
    if not seen_subjects:
        return "the model file does not list its training subjects and clips"
    parts = []
    for what, have, seen in (("subjects", subjects, seen_subjects), ("clips", clips, seen_stimuli)):
        if have:
            both = len(have & seen)
            parts.append(f"new {what}" if not both else f"{both} of {len(have)} {what} seen in training")
    text = ", ".join(parts)
    if any(len(have & seen) for have, seen in ((subjects, seen_subjects), (clips, seen_stimuli))):
        text += ": not a test score where the model met them"
    return text


def prepare_input(mf, pcfg, raw: Path, source: str, out: Path, *, stimuli: str | Path | None,
                  workers: int | None, progress: bool, say: Callable[[str], None]):
    """Check the recordings against the model, prepare them with its preprocessing under
    ``OUT/prepared`` (``pcfg``: :func:`prepare_config_for` the model) and load the result (a
    PreparedDataset whose EEG features fit the model)."""
    from mercl.data.prepare import input_folders, prepare
    from mercl.data.reader import load_dataset

    check_recordings(source, raw, pcfg, mf, say)
    if not set(mf["modalities"]) & {"video", "audio"}:
        # an EEG-only model: no clip is decoded (an empty folder stands for the clips, also
        # instead of a manifest's default stimuli/ folder)
        stimuli = out / PREPARED_DIR / NO_CLIPS
        stimuli.mkdir(parents=True, exist_ok=True)
    result = prepare(raw, source, out / PREPARED_DIR, stimuli=stimuli, config=pcfg, workers=workers,
                     progress=progress)
    for line in result.changes:  # an edited input is rebuilt in OUT/prepared, never reused stale
        say(f"{out / PREPARED_DIR}: {line}")
    prepared = load_dataset(result.dataset_dir, verify=False, stream=True)  # arrays read a shard at a time
    want = mf.shapes
    got = prepared.manifest["shapes"]
    if list(got["eeg"]) != list(want.eeg):
        raise InputFileError(result.dataset_dir / "manifest.json",
                             f"EEG features of shape {got['eeg']}, the model needs {list(want.eeg)}")
    stimuli_dir = input_folders(prepared.path, prepared.manifest)[1]
    check_modalities(prepared, mf, stimuli_dir, say)
    return prepared


def prediction_metrics(mf, segments: pd.DataFrame, trials: pd.DataFrame) -> dict[str, Any]:
    """metrics.json: trial- and segment-level scores beside the model's training majority class."""
    names = mf.class_names
    majority = int(mf["majority_class"])
    return {
        "model": str(mf.path), "label_scheme": mf["label_scheme"], "class_names": names,
        "held_out": held_out_text(segments, mf),
        "baseline": f"majority: always the model's training majority class ({names[majority]})",
        "segments": scores(segments["label"], segments["predicted"], names, majority),
        "trials": scores(trials["label"], trials["predicted"], names, majority),
    }


def predict_recordings(
    model_path: str | Path,
    raw: str | Path,
    source: str,
    out: str | Path,
    *,
    stimuli: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
    console: Callable[[str], None] | None = print,
) -> PredictResult:
    """Prepare ``raw`` (read as ``source``) with the model's preprocessing, predict, write OUT (see module doc)."""
    from mercl.inference.model_file import load_trained_model, read_model_file
    from mercl.training.feature_cache import ensure_feature_cache
    from mercl.training.loop import resolve_device

    say = console or (lambda _msg: None)
    out = Path(out)
    if batch_size is not None and batch_size < 1:
        raise MerclError(f"--batch-size must be >= 1, got {batch_size}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise MerclError(f"--device {device}: no CUDA device is available (use --device auto or cpu)")
    mf = read_model_file(model_path)
    cfg = mf.config
    names = mf.class_names
    scheme = mf["label_scheme"]
    pcfg = prepare_config_for(mf)
    clear_outputs(out, force)
    raw = Path(raw)
    if not raw.exists():
        raise InputFileError(raw, "no such file or directory")

    say(f"model {mf.path}: {scheme} ({', '.join(names)}), modalities {', '.join(mf['modalities'])}; "
        f"preparing {raw} with its preprocessing {mf['preprocessing']['config_hash']}")
    prepared = prepare_input(mf, pcfg, raw, source, out, stimuli=stimuli, workers=workers, progress=progress, say=say)

    dev = resolve_device(device)
    model, norm, _ = load_trained_model(mf, dev)
    feature_table = None
    if cfg.cache_backbone_features:
        feature_table = ensure_feature_cache(model, prepared, batch_size=batch_size or 64, device=dev,
                                             show_progress=progress)
    labels = dataset_labels(prepared, scheme, raw)
    pred = run_model(model, norm, cfg, prepared, scheme, np.arange(len(prepared)), feature_table=feature_table,
                     batch_size=batch_size or cfg.finetune.batch_size, device=dev, progress=progress,
                     labelled=labels is not None)
    segments = segment_frame(prepared, pred, names, labels)
    trials = trial_frame(segments, names)

    metrics = prediction_metrics(mf, segments, trials) if labels is not None else None
    write_atomic(out / "segments.csv", lambda p: segments.to_csv(p, index=False))
    if metrics is not None:
        write_atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=2) + "\n"))
    write_atomic(out / "trials.csv", lambda p: trials.to_csv(p, index=False))

    n_subjects = segments["subject"].nunique()
    say(f"predicted {len(segments)} segments of {len(trials)} trials ({n_subjects} subjects) on {dev}")
    if metrics is not None:
        majority = names[int(mf["majority_class"])]
        for level in ("trials", "segments"):
            m = metrics[level]
            say(f"{level[:-1]}-level: accuracy {m['accuracy']:.3f} (macro-F1 {m['macro_f1']:.3f}), majority baseline "
                f"{m['majority_accuracy']:.3f} (always {majority}, the model's training majority class), "
                f"n {m['n']} [{metrics['held_out']}]")
    else:
        say(f"no {scheme} ratings/labels in the input: predictions only")
    written = [out / n for n in OUTPUTS if (out / n).exists()]
    say(f"wrote {', '.join(str(p) for p in written)}")
    return PredictResult(segments, trials, metrics, prepared.path, out)
