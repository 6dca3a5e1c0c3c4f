"""Checks and small steps shared by the recording sources.

Every check raises :class:`~mercl.errors.InputFileError` naming the file and, where it
helps, the trial or manifest row, so that a bad recording stops ``prepare`` with one line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import mne
import numpy as np

from mercl.data.trial import RATING_NAMES
from mercl.errors import InputFileError

RATING_RANGE = (1.0, 9.0)


def expect_file(path: Path, what: str) -> None:
    """Refuse a path that is not a regular file; ``what`` says what was expected there."""
    path = Path(path)
    try:
        if path.is_file():
            return
        if path.is_dir():
            raise InputFileError(path, f"is a directory, expected {what}")
        exists = path.exists()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        raise InputFileError(path, f"cannot look it up ({getattr(exc, 'strerror', None) or exc}), expected {what}") from None
    if exists:
        raise InputFileError(path, f"is not a regular file, expected {what}")
    raise InputFileError(path, f"no such file (expected {what})")


def expect_dir(path: Path, what: str) -> None:
    """Refuse a path that is not a directory; ``what`` says what was expected there."""
    path = Path(path)
    try:
        if path.is_dir():
            return
        exists = path.exists()
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"cannot look it up ({getattr(exc, 'strerror', None) or exc}), expected {what}") from None
    raise InputFileError(path, f"is a file, expected {what}" if exists else f"no such directory (expected {what})")


def check_finite(eeg: np.ndarray, path: Path, where: str) -> None:
    """Refuse EEG holding NaN or Inf; ``where`` names the trial (e.g. ``"trial 3"``)."""
    if not np.isfinite(eeg).all():
        bad = int(np.count_nonzero(~np.isfinite(eeg)))
        raise InputFileError(path, f"{where}: EEG holds {bad} NaN/Inf value(s)")


def check_ratings(ratings: dict[str, float], path: Path, where: str) -> None:
    """Ratings must be finite numbers on the 1-9 scale."""
    low, high = RATING_RANGE
    for name, value in ratings.items():
        if not np.isfinite(value) or not low <= value <= high:
            raise InputFileError(path, f"{where}: {name} rating {value!r} is outside {low:g}-{high:g}")


def pick_indices(ch_names: list[str], options, path: Path) -> list[int]:
    """Indices of the channels to keep: ``options.channels`` (in that order) or all;
    fewer than ``options.min_channels`` is an error."""
    if options.channels is None:
        index = list(range(len(ch_names)))
    else:
        index = channel_indices(ch_names, options.channels, path)
    check_channel_count(len(index), options.min_channels, path)
    return index


def channel_indices(ch_names: list[str], picks: list[str], path: Path) -> list[int]:
    """Indices of ``picks`` in ``ch_names``, in the order of ``picks``.

    Names match exactly first, then ignoring case (``Fp1`` finds SEED's ``FP1``); the
    caller reports the file's own spelling.
    """
    lower = {}
    for i, name in enumerate(ch_names):
        lower.setdefault(name.lower(), i)
    index = []
    for name in picks:
        if name in ch_names:
            index.append(ch_names.index(name))
        elif name.lower() in lower:
            index.append(lower[name.lower()])
        else:
            shown = ", ".join(ch_names[:12]) + (", ..." if len(ch_names) > 12 else "")
            raise InputFileError(path, f"channel '{name}' not present (has {shown})")
    if len(set(index)) != len(index):
        raise InputFileError(path, f"channel picks {picks} name the same channel twice")
    return index


def check_channel_count(n_channels: int, min_channels: int, path: Path) -> None:
    """Refuse recordings with fewer EEG channels than ``min_channels``."""
    if n_channels < min_channels:
        raise InputFileError(path, f"{n_channels} EEG channel(s), fewer than min_channels={min_channels}")


def resample(eeg: np.ndarray, sfreq: float, new_sfreq: float | None) -> tuple[np.ndarray, float]:
    """Resample (C, S) EEG with MNE's FFT resampler; None or the same rate is a no-op."""
    if new_sfreq is None or np.isclose(new_sfreq, sfreq):
        return eeg, float(sfreq)
    out = mne.filter.resample(eeg, up=new_sfreq / sfreq, down=1.0, axis=-1, verbose="error")
    return out.astype(np.float64, copy=False), float(new_sfreq)


# Seconds of recording read and resampled on each side of a window, beyond which the FFT
# resampler's edge effects no longer reach it (measured on white noise 512 -> 128 Hz: the
# window agrees with resampling the whole file to ~0.4 % of full scale from 1 s of padding on).
RESAMPLE_PAD_S = 2.0


def resampled_length(n_times: int, sfreq: float, new_sfreq: float | None) -> int:
    """Samples of an ``n_times``-long recording after :func:`resample` to ``new_sfreq``."""
    if new_sfreq is None or np.isclose(new_sfreq, sfreq):
        return int(n_times)
    return int(round(n_times * new_sfreq / sfreq))  # as mne.filter.resample


def _grid_step(sfreq: float, new_sfreq: float) -> tuple[int, int]:
    """``(p, q)``: ``p`` samples at ``sfreq`` span exactly ``q`` samples at ``new_sfreq``."""
    ratio = Fraction(sfreq).limit_denominator(1000) / Fraction(new_sfreq).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def resample_span(
    read: Callable[[int, int], np.ndarray],
    n_times: int,
    sfreq: float,
    new_sfreq: float | None,
    start: int,
    stop: int,
    pad_s: float = RESAMPLE_PAD_S,
) -> tuple[np.ndarray, float]:
    """Samples ``[start, stop)`` *at the new rate* of a recording, reading and resampling only
    that window plus ``pad_s`` on each side (never the whole recording).

    Args:
        read: ``read(a, b)`` -> (C, b - a) float samples ``[a, b)`` of the recording at ``sfreq``.
        n_times: the recording's length at ``sfreq``.
        new_sfreq: the rate to resample to; None or ``sfreq`` reads ``[start, stop)`` as is.
        start, stop: the span wanted, in samples at the new rate (``stop`` <=
            :func:`resampled_length`).

    Returns (C, stop - start) float64 and the rate. The window starts on a sample that both
    rates share, so the output lies on the same time grid as resampling the whole file;
    it agrees with that away from the file's ends to the FFT resampler's edge effects
    (see RESAMPLE_PAD_S).
    """
    if new_sfreq is None or np.isclose(new_sfreq, sfreq):
        return np.asarray(read(start, stop), dtype=np.float64), float(sfreq)
    p, q = _grid_step(sfreq, new_sfreq)
    pad = int(np.ceil(pad_s * new_sfreq))
    first = max(0, (start - pad) // q)  # in steps of (p old, q new) samples
    a = first * p
    b = min(n_times, int(np.ceil((stop + pad) * p / q)))
    window = np.asarray(read(a, b), dtype=np.float64)
    out, rate = resample(window, sfreq, new_sfreq)
    offset = first * q
    return np.ascontiguousarray(out[:, start - offset : stop - offset]), rate


def rating_dict(values, names=RATING_NAMES) -> dict[str, float]:
    """``{"valence": v, ...}`` from a sequence of numbers in RATING_NAMES order."""
    return {name: float(v) for name, v in zip(names, values, strict=False)}


def short_reason(exc: BaseException) -> str:
    """The first line of an exception, prefixed by its type, for one-line messages."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def subject_files(raw: Path, subfolder: str, pattern: re.Pattern, release: str, names: str,
                  example: str) -> list[tuple[Path, re.Match]]:
    """The per-subject files of a release that ships one file per subject (DEAP ``sNN.dat``, FACED
    ``subNNN.pkl``): RAW itself if a file, else the files matching ``pattern`` in RAW/``subfolder``
    or RAW. Returns (path, match) pairs, sorted by name; a missing folder, no matching file or a file
    of another name is one InputFileError."""
    raw = Path(raw)
    if not raw.exists():
        raise InputFileError(raw, "no such file or directory")
    if raw.is_file():
        files = [raw]
    else:
        folder = raw / subfolder if (raw / subfolder).is_dir() else raw
        files = sorted(p for p in folder.iterdir() if pattern.match(p.name))
        if not files:
            raise InputFileError(raw, f"no {release} subject files {names} here or in {subfolder}/")
    found = []
    for path in files:
        match = pattern.match(path.name)
        if match is None:
            raise InputFileError(path, f"not a {release} subject file (expected a name like {example})")
        expect_file(path, f"a {release} subject file (a pickle)")
        found.append((path, match))
    return found
