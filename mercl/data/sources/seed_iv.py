"""SEED-IV (Zheng et al. 2019), the ``eeg_raw_data`` release.

Layout: ``RAW/eeg_raw_data/{1,2,3}/<subject>_<date>.mat`` (``RAW`` may also be the
``eeg_raw_data`` folder); the folder is the session. Each file holds the session's 24
trials as variables ``<initials>_eeg<N>`` (N = 1..24, parsed as an integer, never sorted
as text; the initials differ per subject), each (62 channels, samples) at 200 Hz in
microvolts, converted here to volts (x 1e-6). The .mat holds no sampling rate, so a
file at another rate cannot be told apart; the 62 x samples shape is checked (a
transposed trial is refused). Channel names are the release's (torcheeg's
``SEED_IV_CHANNEL_LIST``, the same 62 as SEED).

Every subject watches the same 24 clips per session in the same order (72 clips; the
per-session label lists of torcheeg and LibEER, which the release's ReadMe.txt gives),
so the stimulus id is ``s<session>t<NN>`` (``"s1t01"`` .. ``"s3t24"``): a clip file for
``--stimuli`` is named ``s2t07.mp4``. ``label`` is the ``seed4`` code (neutral, sad,
fear, happy = the release's 0-3; see :mod:`mercl.data.labels`). Trial index is
``(session - 1) * 24 + N - 1``. SEED-IV has no baseline segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mercl.data.labels import release_label
from mercl.data.sources import SourceOptions
from mercl.data.sources._baseline import refuse_baseline_correct
from mercl.data.sources._common import check_finite, expect_dir, expect_file, pick_indices, resample
from mercl.data.sources.seed import SEED_CHANNELS, numbered_keys, read_mat
from mercl.data.trial import Trial
from mercl.errors import InputFileError

SFREQ = 200.0
N_TRIALS = 24
MICROVOLT = 1e-6
SUBFOLDER = "eeg_raw_data"
FILE_PATTERN = re.compile(r"^(\d+)_(\d+)\.mat$")
SEED_IV_CHANNELS = list(SEED_CHANNELS)
# 0 neutral, 1 sad, 2 fear, 3 happy, per session (torcheeg seed_iv.py = LibEER read_seedIV_raw)
SESSION_LABELS = {
    1: (1, 2, 3, 0, 2, 0, 0, 1, 0, 1, 2, 1, 1, 1, 2, 3, 2, 2, 3, 3, 0, 3, 0, 3),
    2: (2, 1, 3, 0, 0, 2, 0, 2, 3, 3, 2, 3, 2, 0, 1, 1, 2, 1, 0, 3, 0, 1, 3, 1),
    3: (1, 2, 2, 1, 3, 3, 3, 1, 1, 2, 1, 0, 2, 3, 3, 0, 2, 3, 0, 0, 2, 0, 1, 0),
}


def numbered_trials(path: Path, content: dict, n_trials: int, n_channels: int) -> dict[int, np.ndarray]:
    """``{N: (n_channels, S) array}`` from variables ``<prefix>_eeg<N>``, N = 1..n_trials, all present."""
    found = numbered_keys(path, content, n_trials, "trial")
    missing = [n for n in range(1, n_trials + 1) if n not in found]
    if missing:
        shown = ", ".join(map(str, missing[:6])) + (", ..." if len(missing) > 6 else "")
        raise InputFileError(path, f"{len(missing)} of {n_trials} trial variables '<prefix>_eeg<N>' missing "
                                   f"(N = {shown})")
    trials = {}
    for number in sorted(found):
        eeg = np.asarray(content[found[number]])
        real = np.issubdtype(eeg.dtype, np.number) and not np.issubdtype(eeg.dtype, np.complexfloating)
        if eeg.ndim != 2 or eeg.shape[0] != n_channels or not real:
            raise InputFileError(path, f"variable '{found[number]}' must be ({n_channels} channels, samples) "
                                       f"real numbers, got {eeg.dtype} {eeg.shape}")
        trials[number] = eeg
    return trials


@dataclass
class SeedIvSubject:
    """One SEED-IV subject: its session files (session = the folder name, in order); ``load()``
    yields up to 72 trials."""

    subject: str
    files: list[Path]
    options: SourceOptions

    @property
    def name(self) -> str:
        return self.subject

    def load(self) -> list[Trial]:
        picks = pick_indices(SEED_IV_CHANNELS, self.options, self.files[0])
        names = [SEED_IV_CHANNELS[i] for i in picks]
        trials = []
        for path in self.files:
            session = int(path.parent.name)
            for number, raw_eeg in numbered_trials(path, read_mat(path), N_TRIALS, len(SEED_IV_CHANNELS)).items():
                index = (session - 1) * N_TRIALS + number - 1
                check_finite(raw_eeg, path, f"trial {index} (session {session}, eeg{number})")
                eeg, sfreq = resample(raw_eeg[picks].astype(np.float64) * MICROVOLT, SFREQ, self.options.resample)
                trials.append(Trial(
                    subject=self.subject, trial=index, stimulus=f"s{session}t{number:02d}", eeg=eeg, sfreq=sfreq,
                    ch_names=names, label=release_label("seed4", SESSION_LABELS[session][number - 1]),
                    lag=self.options.lag, source_file=path,
                ))  # fmt: skip
        return trials


def discover(raw: Path, options: SourceOptions) -> list[SeedIvSubject]:
    """One unit per subject found in RAW/eeg_raw_data/{1,2,3} (or RAW/{1,2,3})."""
    refuse_baseline_correct("SEED-IV", options)
    raw = Path(raw)
    expect_dir(raw, f"SEED-IV's {SUBFOLDER} folder (or the folder holding it)")
    folder = raw / SUBFOLDER if (raw / SUBFOLDER).is_dir() else raw
    subjects: dict[str, dict[int, Path]] = {}
    for session_dir in sorted(p for p in folder.iterdir() if p.name.isdigit()):
        session = int(session_dir.name)
        if session not in SESSION_LABELS:
            raise InputFileError(session_dir, "SEED-IV has session folders 1, 2 and 3 only")
        expect_dir(session_dir, f"SEED-IV's session {session} folder")
        for path in sorted(session_dir.iterdir()):
            match = FILE_PATTERN.match(path.name)
            if match is None:
                continue
            expect_file(path, "a SEED-IV session .mat file")
            subject = str(int(match.group(1)))
            taken = subjects.setdefault(subject, {})
            if session in taken:
                raise InputFileError(path, f"subject {subject} already has session {session} in {taken[session].name}")
            taken[session] = path
    if not subjects:
        raise InputFileError(raw, f"no SEED-IV files {{1,2,3}}/<subject>_<date>.mat here or in {SUBFOLDER}/")
    return [SeedIvSubject(subject, [subjects[subject][s] for s in sorted(subjects[subject])], options)
            for subject in sorted(subjects, key=int)]  # fmt: skip


def recording_facts(unit: SeedIvSubject) -> tuple[Path, float, list[str]]:
    """(first session file, EEG rate, channel names) as fixed by the release, for ``mercl predict``."""
    return unit.files[0], SFREQ, list(SEED_IV_CHANNELS)
