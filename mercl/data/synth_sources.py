"""Writers of small real-format recording files for tests (import from any test module).

DEAP pickles (the real (40, 40, 8064) layout), SEED ``.mat`` sessions and ``label.mat``
(scipy.io), EDF/BDF (MNE's exporter) and FIF (MNE), mp4 clips (PyAV), and the path of
a real EEG file that ``pyedflib`` ships.
"""

from __future__ import annotations

import functools
import importlib.util
import pickle
import struct
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


# ---------------------------------------------------------------- SEED-IV, SEED-V (Neuroscan CNT), FACED


def write_seed_iv_session(path: Path, trials: dict, prefix: str = "cz") -> Path:
    """A SEED-IV session ``.mat``: ``{N: (62, S) microvolts}`` as variables ``<prefix>_eeg<N>``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {f"{prefix}_eeg{n}": np.asarray(eeg) for n, eeg in trials.items()})
    return path


def write_faced(path: Path, data: np.ndarray) -> Path:
    """A FACED ``subNNN.pkl``: one pickled (28, 32, 7500) microvolt array (any object for damage tests)."""
    return write_pickle(path, data, protocol=4)


def planted_trial(class_id: int, n_channels: int, n_samples: int, sfreq: float, seed, n_groups: int,
                  amplitude: float = 40.0) -> np.ndarray:
    """(n_channels, n_samples) noise (10 units) plus a 10 Hz sine of ``amplitude`` on the channel group
    ``class_id`` of ``n_groups`` equal groups: EEG band power names the class, whatever the clip."""
    rng = np.random.default_rng(seed)
    eeg = rng.normal(0.0, 10.0, size=(n_channels, n_samples))
    t = np.arange(n_samples) / sfreq
    group = np.array_split(np.arange(n_channels), n_groups)[class_id]
    eeg[group] += amplitude * np.sin(2 * np.pi * 10.0 * t + rng.uniform(0, 2 * np.pi))
    return eeg


CNT_SETUP_BYTES = 900  # Neuroscan SETUP header (MNE's _DATA_OFFSET)
CNT_CHANNEL_BYTES = 75  # one ELECTLOC record per channel (MNE's _CH_SIZE)


def write_cnt(path: Path, n_samples: int, ch_names: list[str], sfreq: int = 1000, *, n_bytes: int = 4,
              resolution_uv: float = 0.1, segments=(), events=()) -> Path:
    """A Neuroscan continuous ``.cnt`` laid out as :func:`mne.io.read_raw_cnt` reads it (MNE cannot
    write CNT): a 900-byte SETUP header, one 75-byte ELECTLOC record per channel, samples
    multiplexed (sample-major, ``channel_offset`` 1) as little-endian int16 or int32 counts of
    ``resolution_uv`` microvolts (MNE scales by ``cal * sensitivity / 204.8`` uV: sensitivity
    204.8, cal = the resolution), then the event table (TEEG type 2 + 19-byte EVENT2 records).

    ``segments``: ``[(first sample, (C, S) microvolts), ...]`` written where they start; the rest of
    the data is a hole (zeros on read), so an hour-long recording costs only what is written.
    ``events``: ``[(sample, stim code), ...]``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    n_ch = len(ch_names)
    dtype = {2: "<i2", 4: "<i4"}[n_bytes]
    data_start = CNT_SETUP_BYTES + CNT_CHANNEL_BYTES * n_ch
    event_pos = data_start + n_samples * n_ch * n_bytes
    setup = bytearray(CNT_SETUP_BYTES)
    setup[0:12] = b"Version 3.0\0"
    setup[225:233] = b"05/07/18"  # session date mm/dd/yy
    setup[235:243] = b"10:00:00"
    setup[370:372] = np.uint16(n_ch).tobytes()
    setup[376:378] = np.uint16(sfreq).tobytes()
    setup[864:868] = np.int32(n_samples).tobytes()
    setup[886:890] = np.int32(event_pos).tobytes()
    setup[890:894] = np.float32(n_samples / sfreq).tobytes()  # continuous seconds
    setup[894:898] = np.int32(0).tobytes()  # channel offset 0 -> one sample of every channel at a time
    angles = np.linspace(0, 2 * np.pi, n_ch, endpoint=False)
    with open(path, "wb") as f:
        f.write(bytes(setup))
        for i, name in enumerate(ch_names):
            record = bytearray(CNT_CHANNEL_BYTES)
            record[0 : len(name)] = name.encode("ascii")
            record[19:27] = np.array([np.cos(angles[i]), np.sin(angles[i])], "<f4").tobytes()  # x, y
            record[59:63] = np.float32(204.8).tobytes()  # sensitivity
            record[71:75] = np.float32(resolution_uv).tobytes()  # calibration
            f.write(bytes(record))
        for first, block in segments:
            counts = np.round(np.asarray(block, np.float64) / resolution_uv)
            f.seek(data_start + int(first) * n_ch * n_bytes)
            f.write(counts.T.astype(dtype).tobytes())  # (S, C): sample-major
        f.seek(event_pos)
        records = b"".join(
            struct.pack("<HBclhhfccc", code, 0, b"\0", data_start + (s + 1) * n_ch * n_bytes, 0, 0, 0.0,
                        b"\0", b"\0", b"\0") for s, code in events
        )  # fmt: skip
        f.write(struct.pack("<Bll", 2, len(records), 0) + records)
    return path


SEED_V_FILE_CHANNELS = SEED_CHANNELS[:32] + ["M1"] + SEED_CHANNELS[32:41] + ["M2"] + SEED_CHANNELS[41:] + ["VEO", "HEO"]


def faced_planted(subject: int, n_samples: int = 7500) -> np.ndarray:
    """A FACED subject (28, 32, n_samples) float32 microvolts: clip k's category lights its own
    group of the 30 EEG channels at 10 Hz (A2, A1 stay noise)."""
    from mercl.data.sources.faced import CLIP_EMOTION

    data = np.empty((28, 32, n_samples), np.float32)
    for clip, emotion in enumerate(CLIP_EMOTION):
        data[clip, :30] = planted_trial(emotion, 30, n_samples, 250.0, [subject, clip], 9)
        data[clip, 30:] = np.random.default_rng([subject, clip, 1]).normal(0, 10.0, (2, n_samples))
    return data


# ---------------------------------------------------------------- DREAMER, AMIGOS (.mat v5), MAHNOB-HCI (BDF)


def class_eeg(class_id: int, n_channels: int, n_samples: int, sfreq: float, seed, n_classes: int = 2) -> np.ndarray:
    """(n_channels, n_samples) microvolts: noise (sd 10) plus a 10 Hz sine (amplitude 40) on the
    ``class_id``-th of ``n_classes`` channel groups, so band power names the class on any clip."""
    rng = np.random.default_rng(seed)
    eeg = rng.normal(0.0, 10.0, (n_channels, n_samples))
    group = np.array_split(np.arange(n_channels), n_classes)[class_id]
    eeg[group] += 40.0 * np.sin(2 * np.pi * 10.0 * np.arange(n_samples) / sfreq + rng.uniform(0, 2 * np.pi))
    return eeg


def mat_cells(items, shape=None) -> np.ndarray:
    """A MATLAB cell array (object array, ``shape`` default (n, 1)) as ``savemat`` writes one."""
    cell = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        cell[i] = np.zeros((0, 0)) if item is None else item
    return cell.reshape(shape or (len(items), 1))


def dreamer_subject(stimuli: list, baselines: list, scores: dict[str, list]) -> dict:
    """One entry of ``DREAMER.Data``: ``stimuli``/``baselines`` (samples, 14) microvolts per clip,
    ``scores`` ``{"valence": [18 numbers 1-5], "arousal": ..., "dominance": ...}``."""
    fields = {"valence": "ScoreValence", "arousal": "ScoreArousal", "dominance": "ScoreDominance"}
    ecg = [np.zeros((4, 2))] * len(stimuli)
    return {"Age": 25, "Gender": "female", "EEG": {"baseline": mat_cells(baselines), "stimuli": mat_cells(stimuli)},
            "ECG": {"baseline": mat_cells(ecg), "stimuli": mat_cells(ecg)},
            **{fields[r]: np.asarray(v, np.float64).reshape(-1, 1) for r, v in scores.items()}}  # fmt: skip


def write_dreamer(path: Path, subjects: list[dict], rate: float = 128.0, electrodes=None, **changes) -> Path:
    """``DREAMER.mat``: the 1x1 struct ``DREAMER`` with ``Data`` a 1xN cell of subject structs
    (:func:`dreamer_subject`) in the release's field order; ``changes`` replace/add struct fields."""
    from mercl.data.sources.dreamer import DREAMER_CHANNELS

    path.parent.mkdir(parents=True, exist_ok=True)
    names = DREAMER_CHANNELS if electrodes is None else electrodes
    dreamer = {"Data": mat_cells(subjects, (1, len(subjects))), "EEG_SamplingRate": rate, "ECG_SamplingRate": 256,
               "EEG_Electrodes": mat_cells([np.array([n]) for n in names]), "ECG_Electrodes": mat_cells(["CH1", "CH2"]),
               "noOfSubjects": len(subjects), "noOfVideoSequences": 18, "Disclaimer": "test", "Provider": "mercl",
               "Version": "1.0.2", "Acknowledgement": "none", **changes}  # fmt: skip
    scipy.io.savemat(str(path), {"DREAMER": dreamer})
    return path


def write_amigos(path: Path, video_ids: list, joined: list, ratings: list, **changes) -> Path:
    """``Data_Preprocessed_PXX.mat``: 1x20 cells ``VideoIDs`` (text), ``joined_data`` ((samples,
    17) microvolts) and ``labels_selfassessment`` (12 numbers); None is an empty cell."""
    path.parent.mkdir(parents=True, exist_ok=True)
    row = (1, len(video_ids))
    content = {"VideoIDs": mat_cells(video_ids, row), "joined_data": mat_cells(joined, row),
               "labels_ext_annotation": mat_cells([np.ones((3, 3))] * len(video_ids), row),
               "labels_selfassessment": mat_cells([None if r is None else np.asarray(r, float).reshape(1, -1)
                                                   for r in ratings], row), **changes}  # fmt: skip
    scipy.io.savemat(str(path), content)
    return path


MAHNOB_BDF_CHANNELS = DEAP_CHANNELS + [f"EXG{i}" for i in range(1, 9)] + [
    "GSR1", "GSR2", "Erg1", "Erg2", "Resp", "Temp", "Status"]  # fmt: skip


def write_biosemi_bdf(path: Path, signals: np.ndarray, ch_names: list[str], sfreq: int = 256) -> Path:
    """A BioSemi BDF as its ActiView writes it (pyedflib): every channel in microvolts on the 24-bit
    range (+-262144 uV) except ``Status``, whose digital values are the trigger codes
    (physical = digital). ``signals``: (C, S) with S a whole number of seconds."""
    import pyedflib

    path.parent.mkdir(parents=True, exist_ok=True)
    full = dict(digital_min=-8388608, digital_max=8388607, sample_frequency=sfreq, prefilter="", transducer="")
    headers = [dict(full, label=name, dimension="Boolean", physical_min=-8388608, physical_max=8388607)
               if name == "Status" else dict(full, label=name, dimension="uV", physical_min=-262144,
                                             physical_max=262143) for name in ch_names]  # fmt: skip
    writer = pyedflib.EdfWriter(str(path), len(ch_names), file_type=pyedflib.FILETYPE_BDF)
    try:
        writer.setSignalHeaders(headers)
        writer.writeSamples([np.ascontiguousarray(row, dtype=np.float64) for row in signals])
    finally:
        writer.close()
    return path


def write_mahnob_session(sessions: Path, session_id: int, subject: str, media: str, felt, eeg: np.ndarray,
                         marks: tuple[float, ...], sfreq: int = 256, ch_names=None, pulse_s: float = 0.04,
                         trial_name: str | None = None) -> Path:
    """``Sessions/<id>/session.xml`` + ``Part_<subject>_S_Trial<k>_emotion.bdf`` (47 channels).

    ``felt``: (valence, arousal) or None (an unrated session, ``isStim="0"``); ``eeg`` (32, S)
    microvolts, S whole seconds; ``marks``: Status pulse onsets in seconds (code 268,
    ``pulse_s`` long; a negative ``pulse_s`` holds one pulse from the first mark to the second)."""
    folder = sessions / str(session_id)
    folder.mkdir(parents=True, exist_ok=True)
    rated = "" if felt is None else f'feltVlnc="{felt[0]}" feltArsl="{felt[1]}" feltCtrl="5" feltPred="5" feltEmo="4" '
    (folder / "session.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\n<session {rated}isStim="{int(felt is not None)}" '
        f'mediaFile="{media}" cutNr="{session_id % 130}" cutLenSec="60" sessionId="{session_id}">\n'
        f'  <subject id="{subject}" />\n  <track type="Physiological" id="1" />\n</session>')  # fmt: skip
    names = MAHNOB_BDF_CHANNELS if ch_names is None else ch_names
    signals = np.random.default_rng(session_id).normal(0.0, 5.0, (len(names), eeg.shape[1]))
    signals[: len(eeg)] = eeg
    status = np.zeros(eeg.shape[1])
    if pulse_s < 0:
        status[int(marks[0] * sfreq) : int(marks[1] * sfreq)] = 268
    else:
        for mark in marks:
            status[int(mark * sfreq) : int((mark + pulse_s) * sfreq)] = 268
    signals[names.index("Status") if "Status" in names else -1] = status
    name = trial_name or f"Part_{subject}_S_Trial{session_id % 130 // 2}_emotion.bdf"
    write_biosemi_bdf(folder / name, signals, names, sfreq)
    return folder


def write_huge_frame_clip(path: Path, seconds: int = 2, width: int = 16400, height: int = 16) -> Path:
    """A real clip (FFV1, lossless, tiny on disk) whose frames are ``width`` x ``height`` pixels, one a
    second: what ``mercl prepare`` must refuse (frames over 16384 px a side) rather than decode."""
    from fractions import Fraction

    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "gray"
        for i in range(seconds):
            frame = av.VideoFrame.from_ndarray(np.zeros((height, width), np.uint8), format="gray")
            frame.pts, frame.time_base = i, Fraction(1, 1)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
