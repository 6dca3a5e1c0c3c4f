"""FACED (Chen et al. 2023), the ``Processed_data`` release.

Layout: ``RAW/Processed_data/subNNN.pkl`` (``RAW`` may also be that folder or a single
``subNNN.pkl``). Each file is a latin-1 pickle of one array (28 clips, 32 channels, 7500
samples): the last 30 s of each clip at 250 Hz, in microvolts, converted here to volts
(x 1e-6). The shape is checked exactly: another sample count means another rate or cut,
and a transposed array is refused.

Channel order (disputed: where the mastoids A1/A2 sit). Chosen: the 30 scalp channels
``Fp1 Fp2 Fz F3 F4 F7 F8 FC1 FC2 FC5 FC6 Cz C3 C4 T7 T8 CP1 CP2 CP5 CP6 Pz P3 P4 P7 P8
PO3 PO4 Oz O1 O2`` then ``A2 A1``, and rows 30-31 (the references) are dropped. Why:
torcheeg's FACED loader keeps rows ``[:30]`` as "EEG, A1 and A2 removed" with this list
(``FACED_CHANNEL_LIST``), and its loader for the same lab's BCI2022 recordings shows
where the other order comes from: the lab's first recording batch stored ``A1 A2`` after
``T8`` and its loader reorders that batch into this (second-batch) order, the order of
the lab's processed data. The lists that put ``A1 A2`` after ``T8`` (third-party FACED
loaders, LGG/EmT scripts) match the raw first batch; LibEER reads only FACED's feature
files and names no channels. So the processed files are read in the lab's unified
order. If a release copy proves otherwise, ``--channels`` picks channels by name.

Every subject watches the same 28 clips in the same order, so the stimulus id is the
clip number ``"01"`` .. ``"28"`` (a clip file for ``--stimuli`` is named ``07.mp4``;
users fetch the clips themselves). ``label`` is the ``faced9`` code of the clip's
category (clips 1-3 anger, 4-6 disgust, 7-9 fear, 10-12 sadness, 13-16 neutral, 17-19
amusement, 20-22 inspiration, 23-25 joy, 26-28 tenderness: torcheeg ``EMOTION_DICT`` =
LibEER); ``faced3`` reads the same codes as negative (1-12), neutral (13-16) and
positive (17-28). FACED has no baseline segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mercl.data.labels import release_label
from mercl.data.sources import SourceOptions
from mercl.data.sources._baseline import refuse_baseline_correct
from mercl.data.sources._common import check_finite, pick_indices, resample, subject_files
from mercl.data.sources.deap import _NumpyOnlyUnpickler, _Refused, load_numpy_pickle
from mercl.data.trial import Trial
from mercl.errors import InputFileError

SFREQ = 250.0
SHAPE = (28, 32, 7500)  # clips, channels (30 EEG + A2 A1), 30 s at 250 Hz
MICROVOLT = 1e-6
SUBFOLDER = "Processed_data"
FILE_PATTERN = re.compile(r"^sub(\d+)\.pkl$")
FACED_CHANNELS = (
    "Fp1 Fp2 Fz F3 F4 F7 F8 FC1 FC2 FC5 FC6 Cz C3 C4 T7 T8 CP1 CP2 CP5 CP6 Pz P3 P4 P7 P8 PO3 PO4 Oz O1 O2"
).split()
REFERENCES = ("A2", "A1")  # rows 30 and 31, dropped
# clip 1..28 -> faced9 class: anger 0, disgust 1, fear 2, sadness 3, neutral 4, amusement 5,
# inspiration 6, joy 7, tenderness 8
CLIP_EMOTION = (0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8)


class _FacedUnpickler(_NumpyOnlyUnpickler):
    """Numpy arrays only, with the refusal naming FACED."""

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except _Refused:
            raise _Refused(f"refused to unpickle {module}.{name} (a FACED file holds one numpy array)") from None


def read_faced_file(path: Path) -> np.ndarray:
    """One subject's (28, 32, 7500) array, microvolts as stored."""
    data = load_numpy_pickle(path, "FACED", _FacedUnpickler)
    if not isinstance(data, np.ndarray):
        raise InputFileError(path, f"expected one numpy array {SHAPE}, got {type(data).__name__}")
    real = np.issubdtype(data.dtype, np.number) and not np.issubdtype(data.dtype, np.complexfloating)
    if data.shape != SHAPE or not real:
        raise InputFileError(path, f"expected a real array of shape {SHAPE} (clips, channels, 30 s at 250 Hz), "
                                   f"got {data.dtype} {data.shape}")
    return data


@dataclass
class FacedSubject:
    """One FACED subject file; ``load()`` yields its 28 trials."""

    path: Path
    subject: str
    options: SourceOptions

    @property
    def name(self) -> str:
        return self.subject

    def load(self) -> list[Trial]:
        picks = pick_indices(FACED_CHANNELS, self.options, self.path)
        names = [FACED_CHANNELS[i] for i in picks]
        data = read_faced_file(self.path)
        trials = []
        for t in range(SHAPE[0]):
            check_finite(data[t, : len(FACED_CHANNELS)], self.path, f"trial {t} (clip {t + 1})")
            eeg, sfreq = resample(data[t, picks].astype(np.float64) * MICROVOLT, SFREQ, self.options.resample)
            trials.append(Trial(
                subject=self.subject, trial=t, stimulus=f"{t + 1:02d}", eeg=eeg, sfreq=sfreq, ch_names=names,
                label=release_label("faced9", CLIP_EMOTION[t]), lag=self.options.lag, source_file=self.path,
            ))  # fmt: skip
        return trials


def discover(raw: Path, options: SourceOptions) -> list[FacedSubject]:
    """One unit per ``subNNN.pkl`` in RAW, RAW/Processed_data, or RAW itself if a file."""
    refuse_baseline_correct("FACED", options)
    found = subject_files(raw, SUBFOLDER, FILE_PATTERN, "FACED", "subNNN.pkl", "sub000.pkl")
    units = [FacedSubject(path=path, subject=f"sub{int(match.group(1)):03d}", options=options) for path, match in found]
    return units


def recording_facts(unit: FacedSubject) -> tuple[Path, float, list[str]]:
    """(file, EEG rate, channel names) as fixed by the release, for ``mercl predict``'s checks."""
    return unit.path, SFREQ, list(FACED_CHANNELS)
