"""SEED (Zheng & Lu 2015), the ``Preprocessed_EEG`` release.

Layout: ``RAW/Preprocessed_EEG/<subject>_<date>.mat`` (``RAW`` may also be that folder)
plus ``label.mat`` (key ``label``, (1, 15), values -1/0/1: negative/neutral/positive)
in the same folder. Each session file holds 15 trials as variables
``<initials>_eeg<N>``, each (62 channels, samples) at 200 Hz in microvolts. N is parsed
as an integer (``eeg10`` comes after ``eeg9``).

A subject has up to 3 session files; sessions are ranked by date and trial index is
``session_rank * 15 + (N - 1)``. The stimulus is the clip number ``"01"`` .. ``"15"``
and ``Trial.label`` the clip's -1/0/1 label (SEED has no ratings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from mercl.data.sources import SourceOptions
from mercl.data.sources._common import (
    check_finite,
    expect_dir,
    expect_file,
    pick_indices,
    resample,
    short_reason,
)
from mercl.data.trial import Trial
from mercl.errors import InputFileError

SFREQ = 200.0
N_CLIPS = 15
MICROVOLT = 1e-6
SUBFOLDER = "Preprocessed_EEG"
LABEL_FILE = "label.mat"
FILE_PATTERN = re.compile(r"^(\d+)_(\d+)\.mat$")
TRIAL_KEY = re.compile(r"(?:^|_)eeg(\d+)$")

SEED_CHANNELS = (
    "FP1 FPZ FP2 AF3 AF4 F7 F5 F3 F1 FZ F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCZ FC2 FC4 FC6 FT8 "
    "T7 C5 C3 C1 CZ C2 C4 C6 T8 TP7 CP5 CP3 CP1 CPZ CP2 CP4 CP6 TP8 P7 P5 P3 P1 PZ P2 P4 "
    "P6 P8 PO7 PO5 PO3 POZ PO4 PO6 PO8 CB1 O1 OZ O2 CB2"
).split()


def read_mat(path: Path) -> dict:
    """``scipy.io.loadmat`` with one-line errors for missing, truncated or v7.3 files."""
    expect_file(path, "a MATLAB .mat file")
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise InputFileError(path, "MATLAB v7.3 (HDF5) files are not supported; re-save with -v7") from None
    except Exception as exc:  # scipy raises many types for damaged files
        raise InputFileError(path, f"truncated or not a MATLAB file ({short_reason(exc)})") from None


def read_labels(path: Path) -> np.ndarray:
    """SEED's ``label.mat``: (15,) int array of -1/0/1."""
    content = read_mat(path)
    if "label" not in content:
        raise InputFileError(
            path, f"no 'label' variable (has {sorted(k for k in content if not k.startswith('__'))})"
        )
    labels = np.asarray(content["label"])
    if labels.size != N_CLIPS or not np.issubdtype(labels.dtype, np.number):
        raise InputFileError(path, f"'label' must hold 15 numbers, got {labels.dtype} {labels.shape}")
    labels = labels.reshape(-1)
    if not np.isin(labels, (-1, 0, 1)).all():
        raise InputFileError(path, f"'label' values must be -1, 0 or 1, got {sorted(set(labels.tolist()))}")
    return labels.astype(int)


def numbered_keys(path: Path, content: dict, n_max: int, what: str) -> dict[int, str]:
    """``{N: key}`` of the variables ``<prefix>_eeg<N>`` of a SEED-family ``.mat`` (N parsed as a
    number, never sorted as a string); N outside 1..n_max or given twice is one InputFileError."""
    found: dict[int, str] = {}
    for key in content:
        match = TRIAL_KEY.search(key)
        if match is None:
            continue
        number = int(match.group(1))
        if not 1 <= number <= n_max:
            raise InputFileError(path, f"variable '{key}': {what} number {number} outside 1-{n_max}")
        if number in found:
            raise InputFileError(path, f"variables '{found[number]}' and '{key}' are both {what} {number}")
        found[number] = key
    return found


def session_trials(path: Path) -> list[tuple[int, np.ndarray]]:
    """The ``(N, eeg)`` pairs of one session file, ordered by the integer N.

    Returns:
        [(clip number 1..15, (62, S) float array in microvolts), ...]
    """
    content = read_mat(path)
    found = numbered_keys(path, content, N_CLIPS, "clip")
    if not found:
        raise InputFileError(path, "no trial variables named like '<prefix>_eeg<N>'")
    trials = []
    for number in sorted(found):
        eeg = np.asarray(content[found[number]])
        real = np.issubdtype(eeg.dtype, np.number) and not np.issubdtype(eeg.dtype, np.complexfloating)
        if eeg.ndim != 2 or eeg.shape[0] != len(SEED_CHANNELS) or not real:
            raise InputFileError(
                path, f"variable '{found[number]}' must be (62, samples) real numbers, got {eeg.dtype} {eeg.shape}"
            )
        trials.append((number, eeg))
    return trials


@dataclass
class SeedSubject:
    """One SEED subject: its session files (ranked by date) and the shared ``label.mat``."""

    subject: str
    sessions: list[Path]
    label_file: Path
    options: SourceOptions

    @property
    def name(self) -> str:
        return self.subject

    def load(self) -> list[Trial]:
        labels = read_labels(self.label_file)
        trials = []
        for rank, path in enumerate(self.sessions):
            picks = pick_indices(SEED_CHANNELS, self.options, path)
            names = [SEED_CHANNELS[i] for i in picks]
            for number, raw_eeg in session_trials(path):
                index = rank * N_CLIPS + number - 1
                check_finite(raw_eeg, path, f"trial {index} (clip {number})")
                eeg = raw_eeg[picks].astype(np.float64) * MICROVOLT
                eeg, sfreq = resample(eeg, SFREQ, self.options.resample)
                trials.append(
                    Trial(
                        subject=self.subject,
                        trial=index,
                        stimulus=f"{number:02d}",
                        eeg=eeg,
                        sfreq=sfreq,
                        ch_names=names,
                        ratings={},
                        label=int(labels[number - 1]),
                        lag=self.options.lag,
                        source_file=path,
                    )
                )
        return trials


def discover(raw: Path, options: SourceOptions) -> list[SeedSubject]:
    """One unit per subject found in RAW or RAW/Preprocessed_EEG."""
    raw = Path(raw)
    expect_dir(raw, f"SEED's {SUBFOLDER} folder (or the folder holding it)")
    folder = raw / SUBFOLDER if (raw / SUBFOLDER).is_dir() else raw
    sessions: dict[str, list[tuple[int, str, Path]]] = {}
    for path in folder.iterdir():
        match = FILE_PATTERN.match(path.name)
        if match is None:
            continue  # label.mat, readme files, ...
        expect_file(path, "a SEED session .mat file")
        subject = str(int(match.group(1)))
        sessions.setdefault(subject, []).append((int(match.group(2)), path.name, path))
    if not sessions:
        raise InputFileError(raw, f"no SEED session files <subject>_<date>.mat here or in {SUBFOLDER}/")
    label_file = folder / LABEL_FILE
    expect_file(label_file, "SEED's clip labels label.mat")
    return [
        SeedSubject(
            subject=subject,
            sessions=[path for _, _, path in sorted(sessions[subject])],
            label_file=label_file,
            options=options,
        )
        for subject in sorted(sessions, key=int)
    ]


def recording_facts(unit: SeedSubject) -> tuple[Path, float, list[str]]:
    """(first session file, EEG rate, channel names) as fixed by the release, for ``mercl predict``."""
    return (unit.sessions or [Path(unit.name)])[0], SFREQ, list(SEED_CHANNELS)
