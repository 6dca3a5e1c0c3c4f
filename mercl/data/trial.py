"""The unit every source yields: one trial of one subject's EEG while watching one clip."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RATING_NAMES = ("valence", "arousal", "dominance", "liking")


@dataclass
class Trial:
    """One subject watching one stimulus.

    Attributes:
        subject: subject id (string, e.g. ``"s01"``).
        trial: trial index within the subject (0-based int).
        stimulus: stimulus id; the clip is ``<stimuli dir>/<stimulus>.<ext>``.
        eeg: (channels, samples) float64 EEG in volts, baseline already handled.
        sfreq: EEG sampling rate in Hz.
        ch_names: channel names, ``len(ch_names) == eeg.shape[0]``.
        ratings: rating columns present in the source (subset of RATING_NAMES), 1-9.
        label: a class label given by the source (SEED: -1/0/1), or None.
        lag: time-lagged synchronisation, seconds. EEG sample 0 is clip onset; the clip
            window [t, t + 4 s) is paired with the EEG window [t + lag, t + lag + 4 s)
            (a positive lag lets the brain response trail the stimulus).
        source_file: the file this trial was read from (for error messages).
    """

    subject: str
    trial: int
    stimulus: str
    eeg: np.ndarray
    sfreq: float
    ch_names: list[str]
    ratings: dict[str, float] = field(default_factory=dict)
    label: int | None = None
    lag: float = 0.0
    source_file: Path | None = None

    @property
    def duration(self) -> float:
        """EEG duration in seconds."""
        return self.eeg.shape[1] / self.sfreq
