"""SEED-V (Liu et al. 2021), the ``EEG_raw`` release.

Layout: ``RAW/EEG_raw/<subject>_<session>_<date>.cnt`` (``RAW`` may also be the
``EEG_raw`` folder), one Neuroscan CNT file per subject and session (1-3), read with
:func:`mne.io.read_raw_cnt` (``preload=False``: only the trial windows are read, in
pieces of at most a minute). 1000 Hz, 66 channels: the 62 EEG channels keep the file's
names and order; ``M1 M2 VEO HEO`` are dropped, as torcheeg and LibEER do. MNE returns
volts.

Trial windows are not marked in the files: every loader cuts each session at the same
start/end seconds, :data:`TRIAL_SECONDS` (torcheeg ``seed_v.py`` = LibEER
``read_seedV_raw``). ``SourceOptions.trial_times`` (``mercl prepare --trial-times CSV``,
columns ``session,trial,start_s,end_s``, trials numbered from 1 within a session)
replaces the table for recordings cut differently. Samples ``[round(start_s * 1000),
round(end_s * 1000))`` make the trial.

Every subject watches the same 15 clips per session in the same order (45 clips, all
different; the per-session label lists), so the stimulus id is ``s<session>t<NN>``
(``"s1t01"`` .. ``"s3t15"``): a clip file for ``--stimuli`` is named ``s3t15.mp4``.
``label`` is the ``seed5`` code (disgust, fear, sad, neutral, happy = the release's
0-4). Trial index is ``(session - 1) * 15 + trial - 1``. SEED-V has no baseline segment.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import mne
import numpy as np

from mercl.data.labels import release_label
from mercl.data.sources import SourceOptions
from mercl.data.sources._baseline import refuse_baseline_correct
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

SFREQ = 1000.0
N_TRIALS = 15
N_EEG = 62
NON_EEG = ("M1", "M2", "VEO", "HEO")
PIECE_S = 60.0
SUBFOLDER = "EEG_raw"
FILE_PATTERN = re.compile(r"^(\d+)_(\d+)_(\d+)\.cnt$")
TRIAL_TIMES_COLUMNS = ["session", "trial", "start_s", "end_s"]
# 0 disgust, 1 fear, 2 sad, 3 neutral, 4 happy, per session (torcheeg = LibEER)
SESSION_LABELS = {
    1: (4, 1, 3, 2, 0, 4, 1, 3, 2, 0, 4, 1, 3, 2, 0),
    2: (2, 1, 3, 0, 4, 4, 0, 3, 2, 1, 3, 4, 1, 2, 0),
    3: (2, 1, 3, 0, 4, 4, 0, 3, 2, 1, 3, 4, 1, 2, 0),
}
# session -> (start seconds, end seconds) of trials 1..15 (torcheeg = LibEER)
TRIAL_SECONDS = {
    1: ((30, 132, 287, 555, 773, 982, 1271, 1628, 1730, 2025, 2227, 2435, 2667, 2932, 3204),
        (102, 228, 524, 742, 920, 1240, 1568, 1697, 1994, 2166, 2401, 2607, 2901, 3172, 3359)),
    2: ((30, 299, 548, 646, 836, 1000, 1091, 1392, 1657, 1809, 1966, 2186, 2333, 2490, 2741),
        (267, 488, 614, 773, 967, 1059, 1331, 1622, 1777, 1908, 2153, 2302, 2428, 2709, 2817)),
    3: ((30, 353, 478, 674, 825, 908, 1200, 1346, 1451, 1711, 2055, 2307, 2457, 2726, 2888),
        (321, 418, 643, 764, 877, 1147, 1284, 1418, 1679, 1996, 2275, 2425, 2664, 2857, 3066)),
}  # fmt: skip


def default_trial_times() -> list[list[float]]:
    """The released table as ``[[session, trial, start_s, end_s], ...]``."""
    return [[s, t + 1, float(a), float(b)] for s, (starts, ends) in TRIAL_SECONDS.items()
            for t, (a, b) in enumerate(zip(starts, ends, strict=True))]  # fmt: skip


def check_trial_times(rows, where: Path | str) -> list[list[float]]:
    """Validated ``[[session, trial, start_s, end_s], ...]`` rows; ``where`` names the CSV or config field."""
    seen = set()
    out = []
    for i, row in enumerate(rows, start=1):
        if len(row) != 4:
            raise InputFileError(where, f"row {i}: expected 4 values session,trial,start_s,end_s, got {len(row)}")
        session, trial, start, end = (float(v) for v in row)
        if not (session.is_integer() and session in SESSION_LABELS):
            raise InputFileError(where, f"row {i}: session {session:g} is not 1, 2 or 3")
        if not (trial.is_integer() and 1 <= trial <= N_TRIALS):
            raise InputFileError(where, f"row {i}: trial {trial:g} is not an integer 1-{N_TRIALS}")
        if not (np.isfinite(start) and np.isfinite(end) and 0 <= start < end):
            raise InputFileError(where, f"row {i}: need 0 <= start_s < end_s, got start_s={start:g} end_s={end:g}")
        key = (int(session), int(trial))
        if key in seen:
            raise InputFileError(where, f"row {i}: session {key[0]} trial {key[1]} is listed twice")
        seen.add(key)
        out.append([key[0], key[1], start, end])
    if not out:
        raise InputFileError(where, "no trial rows")
    return sorted(out)


def read_trial_times(path: str | Path) -> list[list[float]]:
    """``--trial-times CSV``: a header ``session,trial,start_s,end_s`` and one row per trial."""
    path = Path(path)
    expect_file(path, "a CSV of trial times with columns session,trial,start_s,end_s")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(path, f"cannot read as CSV ({short_reason(exc)})") from None
    if not lines or [c.strip() for c in lines[0]] != TRIAL_TIMES_COLUMNS:
        got = "".join(c if c.isprintable() else "?" for c in ",".join(lines[0])) if lines else "an empty file"
        raise InputFileError(path, f"the header must be {','.join(TRIAL_TIMES_COLUMNS)}, got {got[:80]}")
    rows = []
    for i, line in enumerate(lines[1:], start=1):
        try:
            rows.append([float(cell) for cell in line])
        except ValueError:
            shown = "".join(c if c.isprintable() else "?" for c in ",".join(line))
            raise InputFileError(path, f"row {i}: not numbers: {shown[:80]}") from None
    return check_trial_times(rows, path)


def open_cnt(path: Path) -> mne.io.BaseRaw:
    """The CNT file, header only (data stay on disk); one-line errors for damage or a wrong rate."""
    expect_file(path, "a SEED-V Neuroscan .cnt file")
    try:
        raw = mne.io.read_raw_cnt(path, preload=False, verbose="error")
    except Exception as exc:  # MNE raises many types for damaged headers
        reason = short_reason(exc).replace("\n", " ")[:160]
        raise InputFileError(path, f"truncated or not a Neuroscan CNT file ({reason})") from None
    if not np.isclose(raw.info["sfreq"], SFREQ):
        raise InputFileError(path, f"sampling rate {raw.info['sfreq']:g} Hz; SEED-V's recordings are 1000 Hz")
    return raw


def eeg_channels(raw: mne.io.BaseRaw, path: Path) -> list[int]:
    """Indices of the 62 EEG channels: all but M1 M2 VEO HEO (matched ignoring case)."""
    keep = [i for i, name in enumerate(raw.ch_names) if name.strip().upper() not in NON_EEG]
    if len(keep) != N_EEG:
        raise InputFileError(path, f"{len(keep)} channels besides {' '.join(NON_EEG)}; SEED-V has {N_EEG} EEG "
                                   f"channels (the file has {len(raw.ch_names)})")
    return keep


def read_window(raw: mne.io.BaseRaw, picks: list[int], start: int, stop: int, path: Path) -> np.ndarray:
    """(len(picks), stop - start) volts, read in pieces of at most PIECE_S seconds."""
    step = int(PIECE_S * SFREQ)
    try:
        pieces = [raw.get_data(picks=picks, start=a, stop=min(a + step, stop)) for a in range(start, stop, step)]
    except Exception as exc:  # a file shorter than its header says
        raise InputFileError(path, f"cannot read samples {start}-{stop} ({short_reason(exc)[:120]})") from None
    return np.concatenate(pieces, axis=1) if pieces else np.zeros((len(picks), 0))


@dataclass
class SeedVSubject:
    """One SEED-V subject: its .cnt files in session order; ``load()`` yields up to 45 trials."""

    subject: str
    files: list[Path]
    options: SourceOptions

    @property
    def name(self) -> str:
        return self.subject

    def load(self) -> list[Trial]:
        table = self.options.trial_times
        table = default_trial_times() if table is None else check_trial_times(table, "source.trial_times")
        trials = []
        for path in self.files:
            session = int(FILE_PATTERN.match(path.name).group(2))
            windows = [row for row in table if row[0] == session]
            if not windows:
                raise InputFileError(path, f"the trial times list no trial of session {session}")
            raw = open_cnt(path)
            eeg_index = eeg_channels(raw, path)
            names = [raw.ch_names[i] for i in eeg_index]
            picks = [eeg_index[i] for i in pick_indices(names, self.options, path)]
            for _, number, start_s, end_s in windows:
                trials.append(self._trial(raw, path, session, int(number), start_s, end_s, picks))
        return trials

    def _trial(self, raw, path: Path, session: int, number: int, start_s: float, end_s: float, picks) -> Trial:
        index = (session - 1) * N_TRIALS + number - 1
        start, stop = round(start_s * SFREQ), round(end_s * SFREQ)
        if stop > raw.n_times:
            raise InputFileError(path, f"session {session} trial {number} ends at {end_s:g} s but the recording "
                                       f"lasts {raw.n_times / SFREQ:g} s (truncated, or cut differently: "
                                       "see prepare --trial-times)")
        eeg = read_window(raw, picks, start, stop, path)
        check_finite(eeg, path, f"trial {index} (session {session} trial {number})")
        eeg, sfreq = resample(eeg, SFREQ, self.options.resample)
        return Trial(
            subject=self.subject, trial=index, stimulus=f"s{session}t{number:02d}", eeg=eeg, sfreq=sfreq,
            ch_names=[raw.ch_names[i] for i in picks], label=release_label("seed5", SESSION_LABELS[session][number - 1]),
            lag=self.options.lag, source_file=path,
        )  # fmt: skip


def discover(raw: Path, options: SourceOptions) -> list[SeedVSubject]:
    """One unit per subject found in RAW or RAW/EEG_raw."""
    refuse_baseline_correct("SEED-V", options)
    raw = Path(raw)
    expect_dir(raw, f"SEED-V's {SUBFOLDER} folder (or the folder holding it)")
    folder = raw / SUBFOLDER if (raw / SUBFOLDER).is_dir() else raw
    subjects: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        match = FILE_PATTERN.match(path.name)
        if match is None:
            continue
        expect_file(path, "a SEED-V Neuroscan .cnt file")
        subject, session = str(int(match.group(1))), int(match.group(2))
        if session not in SESSION_LABELS:
            raise InputFileError(path, f"session {session}: SEED-V has sessions 1, 2 and 3")
        taken = subjects.setdefault(subject, {})
        if session in taken:
            raise InputFileError(path, f"subject {subject} already has session {session} in {taken[session].name}")
        taken[session] = path
    if not subjects:
        raise InputFileError(raw, f"no SEED-V files <subject>_<session>_<date>.cnt here or in {SUBFOLDER}/")
    return [SeedVSubject(subject, [subjects[subject][s] for s in sorted(subjects[subject])], options)
            for subject in sorted(subjects, key=int)]  # fmt: skip
