"""DEAP (Koelstra et al. 2012), the preprocessed Python release.

Layout: ``RAW/data_preprocessed_python/sNN.dat`` (``RAW`` may also be that folder or a
single ``sNN.dat``). Each file is a latin-1 pickle of a dict:

* ``data``: (40 trials, 40 channels, 8064 samples) at 128 Hz, microvolts. The first
  3 s (384 samples) are a pre-trial baseline. Channels 0-31 are EEG in the Geneva
  order of :data:`DEAP_CHANNELS`; 32-39 are peripheral signals and are dropped.
* ``labels``: (40, 4) valence, arousal, dominance, liking on 1-9.

Preprocessed trials are ordered by video, so trial ``t`` shows video ``t + 1`` and the
stimulus id is that number zero-padded (``"01"`` .. ``"40"``).
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mercl.data.sources import SourceOptions
from mercl.data.sources._common import (
    check_finite,
    check_ratings,
    pick_indices,
    rating_dict,
    resample,
    short_reason,
    subject_files,
)
from mercl.data.trial import Trial
from mercl.errors import InputFileError

SFREQ = 128.0
N_TRIALS = 40
N_EEG = 32
BASELINE_SAMPLES = 384  # 3 s at 128 Hz
MICROVOLT = 1e-6
SUBFOLDER = "data_preprocessed_python"
FILE_PATTERN = re.compile(r"^s(\d+)\.dat$")

DEAP_CHANNELS = (
    "Fp1 AF3 F3 F7 FC5 FC1 C3 T7 CP5 CP1 P3 P7 PO3 O1 Oz Pz "
    "Fp2 AF4 Fz F4 F8 FC6 FC2 Cz C4 T8 CP6 CP2 P4 P8 PO4 O2"
).split()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else (no arbitrary code from a file)."""

    NUMPY_NAMES = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}
    OTHER = {("_codecs", "encode")}  # how Python 3 writes bytes in protocol-2 pickles

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in self.NUMPY_NAMES:
            if module.startswith("numpy.core"):  # numpy 1 pickles; numpy 2 renamed the package
                module = "numpy._core" + module[len("numpy.core") :]
            return super().find_class(module, name)
        if (module, name) in self.OTHER:
            return super().find_class(module, name)
        raise _Refused(f"refused to unpickle {module}.{name} (a DEAP file holds numpy arrays only)")


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a class or function outside the DEAP format."""


def load_numpy_pickle(path: Path, release: str, unpickler: type[pickle.Unpickler] = _NumpyOnlyUnpickler):
    """The object in a release's latin-1 pickle of numpy arrays (DEAP, FACED), unpickled without
    running code; every failure is one InputFileError naming the file and the release."""
    try:
        with open(path, "rb") as f:
            return unpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(path, f"is a directory, expected a {release} subject file") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror or short_reason(exc)})") from None
    except _Refused as exc:
        raise InputFileError(path, str(exc)) from None
    except Exception as exc:  # a damaged pickle fails in many ways (EOF, bad opcodes, module names)
        raise InputFileError(path, f"truncated or not a {release} pickle ({short_reason(exc)})") from None


def read_deap_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one DEAP pickle.

    Returns:
        data: (40, >=32, S) float array (microvolts, as stored), labels: (40, 4) float64.
    """
    content = load_numpy_pickle(path, "DEAP")
    if not isinstance(content, dict) or "data" not in content or "labels" not in content:
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise InputFileError(path, f"expected a dict with keys 'data' and 'labels', got {keys}")
    data, labels = np.asarray(content["data"]), np.asarray(content["labels"])
    if (
        data.ndim != 3
        or data.shape[0] != N_TRIALS
        or data.shape[1] < N_EEG
        or data.shape[2] <= BASELINE_SAMPLES
        or not np.issubdtype(data.dtype, np.floating)
    ):
        raise InputFileError(
            path,
            f"'data' must be a float array of shape (40, >=32, >{BASELINE_SAMPLES}), "
            f"got {data.dtype} {data.shape}",
        )
    if labels.shape != (N_TRIALS, 4) or not np.issubdtype(labels.dtype, np.number):
        raise InputFileError(
            path, f"'labels' must be a (40, 4) numeric array, got {labels.dtype} {labels.shape}"
        )
    return data, labels.astype(np.float64)


def trial_eeg(raw_trial: np.ndarray, baseline: str) -> np.ndarray:
    """One trial's 32 EEG channels in volts with the 3 s baseline handled.

    Args:
        raw_trial: (40, S) microvolts, as stored.
        baseline: ``remove`` drops the first 3 s; ``correct`` subtracts their
            per-channel mean first.
    Returns:
        (32, S - 384) float64 volts.
    """
    eeg = raw_trial[:N_EEG].astype(np.float64) * MICROVOLT
    if baseline == "correct":
        eeg = eeg - eeg[:, :BASELINE_SAMPLES].mean(axis=1, keepdims=True)
    return np.ascontiguousarray(eeg[:, BASELINE_SAMPLES:])


@dataclass
class DeapSubject:
    """One DEAP subject file; ``load()`` yields its 40 trials."""

    path: Path
    subject: str
    options: SourceOptions

    @property
    def name(self) -> str:
        return self.subject

    def load(self) -> list[Trial]:
        picks = pick_indices(DEAP_CHANNELS, self.options, self.path)
        names = [DEAP_CHANNELS[i] for i in picks]
        data, labels = read_deap_file(self.path)
        trials = []
        for t in range(N_TRIALS):
            where = f"trial {t}"
            check_finite(data[t, :N_EEG], self.path, where)
            ratings = rating_dict(labels[t])
            check_ratings(ratings, self.path, where)
            eeg = trial_eeg(data[t], self.options.baseline)[picks]
            eeg, sfreq = resample(eeg, SFREQ, self.options.resample)
            trials.append(
                Trial(
                    subject=self.subject,
                    trial=t,
                    stimulus=f"{t + 1:02d}",
                    eeg=eeg,
                    sfreq=sfreq,
                    ch_names=names,
                    ratings=ratings,
                    label=None,
                    lag=self.options.lag,
                    source_file=self.path,
                )
            )
        return trials


def discover(raw: Path, options: SourceOptions) -> list[DeapSubject]:
    """One unit per ``sNN.dat`` in RAW, RAW/data_preprocessed_python, or RAW itself if a file."""
    found = subject_files(raw, SUBFOLDER, FILE_PATTERN, "DEAP", "sNN.dat", "s01.dat")
    units = [DeapSubject(path=path, subject=f"s{int(match.group(1)):02d}", options=options) for path, match in found]
    units.sort(key=lambda u: u.subject)
    return units


def recording_facts(unit: DeapSubject) -> tuple[Path, float, list[str]]:
    """(file, EEG rate, channel names) as fixed by the release, for ``mercl predict``'s checks."""
    return unit.path, SFREQ, list(DEAP_CHANNELS)
