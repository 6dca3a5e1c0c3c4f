"""Class labels from ratings: binary/ternary per rating, the valence-arousal quadrants, SEED's labels.

Schemes (defaults follow the MERCL paper and common DEAP practice; ratings are 1-9):

* ``valence2`` / ``arousal2`` / ``dominance2``: rating <= 5 -> 0 (low), > 5 -> 1 (high)
* ``valence3`` / ``arousal3`` / ``dominance3``: <= 3 -> 0, <= 6 -> 1, > 6 -> 2
* ``quadrant4``: HVHA 0, LVHA 1, LVLA 2, HVLA 3 (high = valence/arousal > 5)
* ``seed3``: SEED's label -1/0/1 (negative/neutral/positive) -> 0/1/2
* ``class2``: a two-class ``label`` already 0/1 (e.g. the UEA EEG recordings), kept as is
* ``seed4`` (SEED-IV): neutral, sad, fear, happy; ``seed5`` (SEED-V): disgust, fear, sad,
  neutral, happy; ``faced9`` (FACED): anger, disgust, fear, sadness, neutral, amusement,
  inspiration, joy, tenderness; ``faced3`` (FACED): negative, neutral, positive. These
  releases number their classes from 0 alike, so their sources store ``label`` as
  ``RELEASE_LABEL_BASE[scheme] + class`` (SEED-IV 40-43, SEED-V 50-54, FACED 90-98):
  one release's labels never read as another's scheme.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from mercl.errors import MerclError


@dataclass(frozen=True)
class Thresholds:
    """Cut points on the 1-9 rating scale (a rating equal to a cut point goes to the lower class)."""

    binary: float = 5.0
    ternary: tuple[float, float] = (3.0, 6.0)


DEFAULT_THRESHOLDS = Thresholds()

_RATING_SCHEMES = {f"{rating}{n}": rating for rating in ("valence", "arousal", "dominance") for n in (2, 3)}
_CLASS_NAMES = {
    **{f"{r}2": (f"low {r}", f"high {r}") for r in ("valence", "arousal", "dominance")},
    **{f"{r}3": (f"low {r}", f"medium {r}", f"high {r}") for r in ("valence", "arousal", "dominance")},
    "quadrant4": ("HVHA", "LVHA", "LVLA", "HVLA"),
    "seed3": ("negative", "neutral", "positive"),
    "class2": ("class 0", "class 1"),
    "seed4": ("neutral", "sad", "fear", "happy"),
    "seed5": ("disgust", "fear", "sad", "neutral", "happy"),
    "faced9": ("anger", "disgust", "fear", "sadness", "neutral", "amusement", "inspiration", "joy", "tenderness"),
    "faced3": ("negative", "neutral", "positive"),
}
RELEASE_LABEL_BASE = {"seed4": 40, "seed5": 50, "faced9": 90, "faced3": 90}  # faced3 reads faced9's codes
_FACED3_OF_FACED9 = np.array([0, 0, 0, 0, 1, 2, 2, 2, 2])  # anger..sadness negative, neutral, the rest positive
SCHEMES: tuple[str, ...] = tuple(_CLASS_NAMES)


def required_columns(scheme: str) -> tuple[str, ...]:
    """The table columns a scheme reads; an unknown scheme raises MerclError listing the known ones."""
    if scheme in _RATING_SCHEMES:
        return (_RATING_SCHEMES[scheme],)
    if scheme == "quadrant4":
        return ("valence", "arousal")
    if scheme in ("seed3", "class2", *RELEASE_LABEL_BASE):
        return ("label",)
    raise MerclError(f"unknown label scheme '{scheme}' (known: {', '.join(SCHEMES)})")


def class_names(scheme: str) -> tuple[str, ...]:
    """Human-readable class names, index = class id."""
    required_columns(scheme)
    return _CLASS_NAMES[scheme]


def n_classes(scheme: str) -> int:
    return len(class_names(scheme))


def available_schemes(columns: Iterable[str], table: pd.DataFrame | None = None) -> list[str]:
    """The schemes whose columns are all among ``columns`` (in SCHEMES order).

    With ``table``, also drop schemes its values do not fit (``seed3`` and ``class2`` both
    read ``label``: -1/0/1 versus 0/1). A ``label`` of only 0s and 1s fits both; it is read as
    ``class2`` (two classes), not as a three-class ``seed3`` with an empty class.
    """
    have = set(columns)
    schemes = [s for s in SCHEMES if set(required_columns(s)) <= have]
    if table is None:
        return schemes
    usable = []
    for scheme in schemes:
        try:
            assign_labels(table, scheme)
        except MerclError:
            continue
        usable.append(scheme)
    if "class2" in usable and "seed3" in usable:
        usable.remove("seed3")
    return usable


def _column(table: pd.DataFrame | pa.Table | Mapping, name: str, scheme: str) -> np.ndarray:
    if isinstance(table, pa.Table):
        names = table.column_names
    else:
        names = list(table.keys())
    if name not in names:
        have = ", ".join(str(c) for c in names if c != "eeg") or "none"
        raise MerclError(f"label scheme '{scheme}' needs a '{name}' column, the data has: {have}")
    values = table[name]
    if isinstance(values, pa.ChunkedArray):
        values = values.to_numpy()
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).any():
        raise MerclError(f"label scheme '{scheme}': column '{name}' has missing values")
    return values


def assign_labels(
    table: pd.DataFrame | pa.Table | Mapping, scheme: str, thresholds: Thresholds | Mapping | None = None
) -> np.ndarray:
    """Class ids (N,) int64 for every row of ``table`` under ``scheme``.

    ``table``: a pandas DataFrame, pyarrow Table or dict of columns holding the rating
    columns (``valence``, ``arousal``, ``dominance``) or SEED's ``label``.
    ``thresholds``: a :class:`Thresholds` or a dict like ``{"binary": 5.0, "ternary": (3.0, 6.0)}``.
    """
    if isinstance(thresholds, Mapping):
        thresholds = Thresholds(**thresholds)
    th = thresholds or DEFAULT_THRESHOLDS
    low, high = th.ternary
    if low >= high:
        raise MerclError(f"ternary thresholds must increase, got {th.ternary}")
    cols = required_columns(scheme)
    if scheme in _RATING_SCHEMES:
        r = _column(table, cols[0], scheme)
        if scheme.endswith("2"):
            return (r > th.binary).astype(np.int64)
        return np.where(r <= low, 0, np.where(r <= high, 1, 2)).astype(np.int64)
    if scheme == "quadrant4":
        hv = _column(table, "valence", scheme) > th.binary
        ha = _column(table, "arousal", scheme) > th.binary
        # HVHA 0, LVHA 1, LVLA 2, HVLA 3
        return np.select([hv & ha, ~hv & ha, ~hv & ~ha], [0, 1, 2], default=3).astype(np.int64)
    label = _column(table, "label", scheme)
    if scheme in RELEASE_LABEL_BASE:
        return _release_classes(label, scheme)
    if scheme == "class2":
        bad = ~np.isin(label, (0, 1))
        if bad.any():
            raise MerclError(f"label scheme 'class2': 'label' must be 0 or 1, got {label[bad][0]:g}")
        return label.astype(np.int64)
    # seed3
    bad = ~np.isin(label, (-1, 0, 1))
    if bad.any():
        raise MerclError(f"label scheme 'seed3': 'label' must be -1, 0 or 1, got {label[bad][0]:g}")
    return (label + 1).astype(np.int64)


def release_label(scheme: str, class_id: int) -> int:
    """The ``label`` a release's source stores for ``class_id`` of ``scheme`` (seed4, seed5, faced9)."""
    return RELEASE_LABEL_BASE[scheme] + int(class_id)


def _release_classes(label: np.ndarray, scheme: str) -> np.ndarray:
    """Class ids from ``label`` codes written by :func:`release_label`."""
    base = RELEASE_LABEL_BASE[scheme]
    n_codes = len(_CLASS_NAMES["faced9" if scheme == "faced3" else scheme])
    bad = ~np.isin(label, base + np.arange(n_codes))
    if bad.any():
        raise MerclError(f"label scheme '{scheme}': 'label' must be {base}-{base + n_codes - 1} "
                         f"(the release's classes as its source codes them), got {label[bad][0]:g}")
    classes = (label - base).astype(np.int64)
    return _FACED3_OF_FACED9[classes] if scheme == "faced3" else classes


def class_counts(table: pd.DataFrame | pa.Table | Mapping, scheme: str) -> dict[str, int]:
    """``{class name: number of rows}`` for one scheme (every class listed, zeros included)."""
    labels = assign_labels(table, scheme)
    counts = np.bincount(labels, minlength=n_classes(scheme))
    return {name: int(c) for name, c in zip(class_names(scheme), counts, strict=True)}
