"""AMIGOS (Miranda-Correa et al. 2018), the preprocessed MATLAB release.

Layout: one ``Data_Preprocessed_PXX.mat`` per participant, either as unpacked from its zip
(``RAW/Data_Preprocessed_PXX/Data_Preprocessed_PXX.mat``) or all in one folder (torcheeg's
``data_preprocessed/``, EEGain's ``Matlab Preprocessed Data/``): the files are found anywhere
under RAW. Each holds four 1 x 20 cells:

* ``joined_data{k}``: (samples, 17) at 128 Hz: the 14 EEG channels of
  :data:`AMIGOS_CHANNELS` (microvolts), then ECG right/left and GSR (dropped);
* ``labels_selfassessment{k}``: 12 numbers, arousal, valence, dominance, liking,
  familiarity on 1-9, then seven 0/1 emotion flags;
* ``VideoIDs{k}``: the video's id (``"4"``, ``"138"``, ``"N1"``, ...): 16 short and 4 long
  videos, in a different order per participant.
* (``labels_ext_annotation``: external annotations, not read.)

The stimulus id is ``VideoIDs{k}`` as released (``--stimuli DIR`` looks for ``DIR/N1.mp4``),
trial ``k`` the cell's position. The first 5 s of every cell are a pre-stimulus baseline: never
part of the trial, subtracted as a per-channel mean under ``--baseline correct``. Empty cells
(participants who did not watch the long videos) are skipped and counted in one console
line when RAW is discovered. Ratings are already 1-9: ``valence2`` etc. split at 5, a rating
equal to 5 is low (DEAP's rule here).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mercl.data.sources import SourceOptions
from mercl.data.sources._baseline import handle_baseline
from mercl.data.sources._common import (
    check_ratings,
    expect_dir,
    expect_file,
    pick_indices,
    rating_dict,
    resample,
)
from mercl.data.sources._matlab import (
    cells,
    is_empty,
    load_mat,
    numbers,
    require_keys,
    samples_by_channels,
    text,
)
from mercl.data.trial import Trial
from mercl.errors import InputFileError

log = logging.getLogger(__name__)

SFREQ = 128.0
N_CELLS = 20
N_COLUMNS = 17
BASELINE_SAMPLES = 640  # 5 s at 128 Hz
MICROVOLT = 1e-6
N_RATINGS = 12
RATING_ORDER = ("arousal", "valence", "dominance", "liking")  # the first four of the 12
FILE_PATTERN = re.compile(r"^Data_Preprocessed_P(\d+)\.mat$")
KEYS = ("VideoIDs", "joined_data", "labels_selfassessment")
AMIGOS_CHANNELS = "AF3 F7 F3 FC5 T7 P7 O1 O2 P8 T8 FC6 F4 F8 AF4".split()


def read_cells(path: Path, keys: tuple[str, ...] = KEYS) -> dict[str, list]:
    """The 20 cells of each variable in ``keys`` (reading only those variables)."""
    content = load_mat(path, "an AMIGOS participant file", variable_names=list(keys))
    require_keys(content, keys, path, "the file")
    out = {}
    for key in keys:
        items = cells(content[key], path, key)
        if len(items) != N_CELLS:
            raise InputFileError(path, f"{key} holds {len(items)} cells, AMIGOS has {N_CELLS}")
        out[key] = items
    return out


def empty_cells(path: Path) -> list[int]:
    """Positions k whose video id or ratings are empty (read without the EEG)."""
    content = read_cells(path, ("VideoIDs", "labels_selfassessment"))
    return [k for k in range(N_CELLS)
            if is_empty(content["VideoIDs"][k]) or is_empty(content["labels_selfassessment"][k])]


def cell_trial(content: dict[str, list], k: int, picks: list[int], options: SourceOptions, path: Path):
    """Cell ``k`` as (stimulus id, (C, S) volts without the baseline, ratings), or None if empty."""
    video, data, labels = (content[key][k] for key in KEYS)
    if is_empty(video) or is_empty(labels) or is_empty(data):
        return None
    where = f"cell {k + 1}"
    stimulus = text(video, path, f"VideoIDs {where}")
    joined = samples_by_channels(data, N_COLUMNS, path, f"joined_data {where}",
                                 n_eeg=len(AMIGOS_CHANNELS), at_least=BASELINE_SAMPLES + 1)
    values = numbers(labels, N_RATINGS, path, f"labels_selfassessment {where}")
    ratings = rating_dict(values[: len(RATING_ORDER)], RATING_ORDER)
    ratings = {r: ratings[r] for r in ("valence", "arousal", "dominance", "liking")}
    check_ratings(ratings, path, where)
    eeg = joined[:, picks].T * MICROVOLT
    eeg = handle_baseline(eeg[:, BASELINE_SAMPLES:], eeg[:, :BASELINE_SAMPLES], options.baseline, path, where)
    return stimulus, np.ascontiguousarray(eeg), ratings


@dataclass
class AmigosParticipant:
    """One ``Data_Preprocessed_PXX.mat``; ``load()`` yields its non-empty cells as trials."""

    path: Path
    subject: str
    options: SourceOptions

    @property
    def name(self) -> str:
        return self.subject

    def load(self) -> list[Trial]:
        picks = pick_indices(AMIGOS_CHANNELS, self.options, self.path)
        names = [AMIGOS_CHANNELS[i] for i in picks]
        content = read_cells(self.path)
        trials, seen, no_eeg = [], {}, []
        for k in range(N_CELLS):
            cell = cell_trial(content, k, picks, self.options, self.path)
            if cell is None:
                if not is_empty(content["VideoIDs"][k]) and not is_empty(content["labels_selfassessment"][k]):
                    no_eeg.append(k + 1)
                continue
            stimulus, eeg, ratings = cell
            if stimulus in seen:
                raise InputFileError(self.path, f"VideoIDs cells {seen[stimulus] + 1} and {k + 1} are both '{stimulus}'")
            seen[stimulus] = k
            eeg, sfreq = resample(eeg, SFREQ, self.options.resample)
            trials.append(Trial(
                subject=self.subject, trial=k, stimulus=stimulus, eeg=eeg, sfreq=sfreq, ch_names=names,
                ratings=ratings, label=None, lag=self.options.lag, source_file=self.path,
            ))  # fmt: skip
        if no_eeg:
            log.warning("%s: cells %s have a video id and ratings but no EEG: skipped", self.path, no_eeg)
        if not trials:
            raise InputFileError(self.path, f"all {N_CELLS} cells are empty: no trial (move the file out of RAW "
                                            "to leave the participant out)")
        return trials


def find_files(raw: Path) -> dict[str, Path]:
    """``{"P01": path, ...}`` for every ``Data_Preprocessed_PXX.mat`` under RAW (or RAW itself)."""
    if raw.is_file():
        match = FILE_PATTERN.match(raw.name)
        if match is None:
            raise InputFileError(raw, "not an AMIGOS participant file (expected Data_Preprocessed_PXX.mat)")
        return {f"P{int(match.group(1)):02d}": raw}
    expect_dir(raw, "a folder of AMIGOS Data_Preprocessed_PXX.mat files")
    found: dict[str, Path] = {}
    for path in sorted(raw.rglob("Data_Preprocessed_P*.mat")):
        match = FILE_PATTERN.match(path.name)
        if match is None:
            continue
        expect_file(path, "an AMIGOS participant file")
        subject = f"P{int(match.group(1)):02d}"
        if subject in found:
            raise InputFileError(path, f"participant {subject} twice (also {found[subject]})")
        found[subject] = path
    if not found:
        raise InputFileError(raw, "no AMIGOS participant files Data_Preprocessed_PXX.mat here or below")
    return found


def discover(raw: Path, options: SourceOptions) -> list[AmigosParticipant]:
    """One unit per participant file; the empty cells of all of them are counted in one line."""
    raw = Path(raw)
    if not raw.exists():
        raise InputFileError(raw, "no such file or directory")
    files = find_files(raw)
    empty = {subject: empty_cells(path) for subject, path in files.items()}
    n_empty = sum(len(v) for v in empty.values())
    if n_empty:
        who = ", ".join(f"{s} ({len(v)})" for s, v in empty.items() if v)
        log.warning("%d of %d cells are empty (no video id or ratings) and skipped: %s",
                    n_empty, N_CELLS * len(files), who)
    return [AmigosParticipant(path=path, subject=subject, options=options) for subject, path in files.items()]


def recording_facts(unit: AmigosParticipant) -> tuple[Path, float, list[str]]:
    """(file, EEG rate, channel names) as fixed by the release, for ``mercl predict``'s checks."""
    return unit.path, SFREQ, list(AMIGOS_CHANNELS)
