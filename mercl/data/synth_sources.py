"""Writers of small real-format recording files for tests (import from any test module).

DEAP pickles (the real (40, 40, 8064) layout), SEED ``.mat`` sessions and ``label.mat``
(scipy.io), EDF/BDF (MNE's exporter) and FIF (MNE), mp4 clips (PyAV), and the path of
a real EEG file that ``pyedflib`` ships.
"""

from __future__ import annotations

import functools
import importlib.util
import pickle
from pathlib import Path

import mne
import numpy as np
import scipy.io

from mercl.data.sources.deap import DEAP_CHANNELS
from mercl.data.sources.seed import SEED_CHANNELS
from mercl.data.synth import write_clip

DEAP_SHAPE = (40, 40, 8064)


def deap_content(seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """A fresh copy of :func:`_deap_content` (cached: building 13 M samples is not free)."""
    content = _deap_content(seed)
    return {"data": content["data"].astype(dtype), "labels": content["labels"].copy()}


@functools.lru_cache(maxsize=4)
def _deap_content(seed: int) -> dict[str, np.ndarray]:
    """A DEAP subject dict: ``data`` (40, 40, 8064) microvolts, ``labels`` (40, 4) on 1-9.

    EEG channel c of trial t carries a constant offset ``t + c`` microvolts during the
    3 s baseline and ``100 + t + c`` after it, plus noise, so baseline handling is visible.
    """
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 5.0, size=(40, 40, 1008))
    data = np.tile(noise - noise.mean(axis=-1, keepdims=True), 8)  # zero-mean noise, cheaply
    offsets = np.arange(40)[:, None, None] + np.arange(40)[None, :, None]
    data += offsets
    data[:, :, 384:] += 100.0
    labels = rng.uniform(1.0, 9.0, size=(40, 4)).round(2)
    return {"data": data.astype(np.float32), "labels": labels}


def write_pickle(path: Path, content, protocol: int = 2) -> Path:
    """Pickle ``content`` (DEAP's files are Python 2 pickles; protocol 2 reads the same way)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=protocol)
    return path


def write_deap(path: Path, seed: int = 0, dtype=np.float32, **changes) -> Path:
    """A DEAP ``sNN.dat`` with :func:`deap_content`; ``changes`` replace/add dict keys."""
    content = deap_content(seed, dtype)
    content.update(changes)
    return write_pickle(path, content)


def seed_trial(clip: int, n_samples: int = 400, seed: int = 0) -> np.ndarray:
    """(62, n_samples) microvolts; channel 0 holds the clip number (so order is checkable)."""
    rng = np.random.default_rng([seed, clip])
    eeg = rng.normal(0.0, 10.0, size=(len(SEED_CHANNELS), n_samples))
    eeg[0] = clip
    return eeg


def write_seed_session(
    path: Path, clips=range(1, 16), prefix: str = "djc", n_samples: int = 400, seed: int = 0
):
    """A SEED session ``.mat``: variables ``<prefix>_eeg<N>`` (``eeg<N>`` without a prefix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    variables = {f"{prefix}_eeg{n}" if prefix else f"eeg{n}": seed_trial(n, n_samples, seed) for n in clips}
    scipy.io.savemat(str(path), variables)
    return path


def write_seed_labels(folder: Path, labels=None) -> Path:
    """SEED's ``label.mat``: ``label`` (1, 15) of -1/0/1."""
    folder.mkdir(parents=True, exist_ok=True)
    if labels is None:
        labels = np.array([[1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1]])
    scipy.io.savemat(str(folder / "label.mat"), {"label": np.asarray(labels)})
    return folder / "label.mat"


def make_raw(eeg: np.ndarray, sfreq: float, ch_names: list[str], ch_types="eeg") -> mne.io.RawArray:
    """An MNE RawArray of (C, S) volts."""
    return mne.io.RawArray(eeg, mne.create_info(list(ch_names), sfreq, ch_types), verbose="error")


def write_recording(path: Path, eeg: np.ndarray, sfreq: float, ch_names: list[str], ch_types="eeg") -> Path:
    """Write (C, S) volts as EDF, BDF (MNE's exporter) or FIF (``raw.save``), by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = make_raw(eeg, sfreq, ch_names, ch_types)
    suffix = path.suffix.lower()
    if suffix in (".edf", ".bdf"):
        mne.export.export_raw(path, raw, fmt=suffix[1:], overwrite=True, verbose="error")
    elif path.name.endswith(("_raw.fif", "_eeg.fif")):
        raw.save(path, overwrite=True, verbose="error")
    else:
        raise ValueError(f"no writer for {path.name} (use .edf, .bdf or *_raw.fif)")
    return path


def sine_eeg(freqs, seconds: float, sfreq: float, amplitude: float = 20e-6) -> np.ndarray:
    """(len(freqs), S) sines in volts, one frequency per channel."""
    t = np.arange(int(round(seconds * sfreq))) / sfreq
    return amplitude * np.sin(2 * np.pi * np.asarray(freqs, float)[:, None] * t)


def write_mp4(path: Path, seconds: float = 4.0, fps: int = 10, size: int = 32, audio: bool = True) -> Path:
    """A small H.264 mp4 (colour ramps over time) with a 440 Hz AAC tone unless ``audio=False``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * fps))
    frames = np.zeros((n, size, size, 3), np.uint8)
    frames[..., 0] = (np.arange(n) * 255 // max(n - 1, 1)).astype(np.uint8)[:, None, None]
    sound = None
    if audio:
        t = np.arange(int(seconds * 16000)) / 16000
        sound = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_clip(path, frames, fps, sound, 16000)
    return path


def pyedflib_test_edf() -> Path | None:
    """pyedflib's ``tests/data/test_subsecond.edf`` (real one-channel EEG, 128 Hz), or None."""
    spec = importlib.util.find_spec("pyedflib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "tests" / "data" / "test_subsecond.edf"
    return path if path.is_file() else None


__all__ = [
    "DEAP_CHANNELS",
    "SEED_CHANNELS",
    "deap_content",
    "make_raw",
    "pyedflib_test_edf",
    "seed_trial",
    "sine_eeg",
    "write_deap",
    "write_mp4",
    "write_pickle",
    "write_recording",
    "write_seed_labels",
    "write_seed_session",
]
