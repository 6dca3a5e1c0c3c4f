"""``--baseline remove|correct`` for sources whose baseline is a segment of its own, and its
refusal for releases that ship none (SEED-IV, SEED-V, FACED).

DEAP cuts its 3 s out of the trial itself (:func:`mercl.data.sources.deap.trial_eeg`); DREAMER
ships a separate baseline recording per clip, AMIGOS the first 5 s of each cell and MAHNOB the
seconds before the clip's first Status marker. The baseline never stays in the trial.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mercl.errors import InputFileError, MerclError


def handle_baseline(eeg: np.ndarray, baseline: np.ndarray | None, mode: str, path: Path, where: str) -> np.ndarray:
    """The trial's EEG with its baseline handled.

    Args:
        eeg: (C, S) trial EEG, baseline already cut off.
        baseline: (C, B) the same channels' baseline segment (None or B == 0: there is none).
        mode: ``remove`` returns ``eeg`` unchanged (the baseline is dropped); ``correct``
            subtracts the baseline's per-channel mean.
    Returns:
        (C, S) float64.
    """
    if mode != "correct":
        return eeg
    if baseline is None or baseline.shape[-1] == 0:
        raise InputFileError(path, f"{where}: --baseline correct needs a baseline segment, this trial has none")
    return eeg - baseline.mean(axis=1, keepdims=True)


def refuse_baseline_correct(source: str, options) -> None:
    """These releases ship no baseline segment: ``--baseline correct`` has nothing to subtract."""
    if options.baseline == "correct":
        raise MerclError(f"--baseline correct: the {source} release has no baseline segment to subtract")
