"""Stimulus audio: demux, mono, resample; per-segment log-Mel sequences and loudness.

A clip's audio is read once with PyAV (first audio stream, downmixed to mono and
resampled by libswresample through ``av.AudioResampler``), and only as far as the
segments need (:func:`audio_stop_s`): decoding stops there, and the samples kept equal
those of decoding the whole track, cut. Its Mel spectrogram is computed
once with librosa: frame ``i`` covers samples ``[i*hop, i*hop + win)`` (``center=False``;
with ``n_fft`` > window the frame is zero-padded to ``n_fft`` for the FFT), the window is
``window`` (Hamming by default), ``power`` 2 (power) or 1 (magnitude), ``n_mels`` Mel
bands on the Slaney or HTK scale. The log is

* ``log: db`` (default): ``librosa.power_to_db(S, ref=1.0, amin=log_floor, top_db=None)``,
  i.e. ``10 * log10(max(S, log_floor))`` (``log_floor`` 1e-10 -> floor of -100 dB);
* ``log: ln``: ``ln(S + log_offset)``, VGGish's "stabilized log".

Defaults: 50 ms Hamming window, 10 ms hop, power, 20 Slaney-normalised bands, dB (the
paper's audio features). The ``vggish`` preset (``audio: {preset: vggish}``) is VGGish's
front end (torchvggish ``vggish_input``/``mel_features``): 16 kHz, 25 ms periodic-Hann
window, 10 ms hop, 512-point FFT, magnitude, 64 HTK Mel bands 125-7500 Hz without
normalisation, ``ln(S + 0.01)``; the audio encoder's 96-frame patches are then VGGish's
0.96 s examples and the public VGGish weights load whole. One difference is left: librosa's
triangular filters are linear in Hz between Mel-spaced edges, VGGish's linear in Mel.

Segment ``k`` is the frame slice starting at its start time rounded to the nearest hop
(<= 5 ms off), of length ``T_a = n_audio_frames(seg_s, cfg)``; audio past the clip's end
is zeros.

Warm-up: librosa compiles its numba helpers on first use and caches them in its
``__pycache__``. The very first call after installing took ~20 s on the 2-core dev machine
(compile + cache write); after that the first call in each new process still costs ~1-4 s
(imports, cache load, Mel filter bank), and later calls ~0.25 s per 60 s clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import librosa
import numpy as np
import scipy.signal

from mercl.config import FieldProblem, at_least
from mercl.errors import InputFileError
from mercl.modalities import SILENT_DB

MAX_SAMPLE_RATE = 192_000  # Hz; the highest rate audio is mastered at

# Named settings a user selects with ``audio.preset``; the preset fills the fields the
# config leaves out, and a field set to another value is an error (the name must not lie).
AUDIO_PRESETS: dict[str, dict[str, Any]] = {
    "vggish": {  # torchvggish vggish_params.py / mel_features.py
        "sample_rate": 16000,
        "n_mels": 64,
        "win_s": 0.025,
        "hop_s": 0.01,
        "n_fft": 512,
        "window": "hann",
        "power": 1.0,
        "mel_scale": "htk",
        "mel_norm": None,
        "fmin": 125.0,
        "fmax": 7500.0,
        "log": "ln",
        "log_offset": 0.01,
    },
}


def apply_audio_preset(data: dict[str, Any]) -> dict[str, Any]:
    """Fill the ``audio`` mapping of a raw prepare-config dict from its ``preset`` (in place).

    Fields the user gave are kept (validation then refuses those that contradict the preset).
    """
    audio = data.get("audio")
    if isinstance(audio, dict) and audio.get("preset") in AUDIO_PRESETS:
        for key, value in AUDIO_PRESETS[audio["preset"]].items():
            audio.setdefault(key, value)
    return data


@dataclass
class AudioFeatureConfig:
    """How stimulus audio becomes log-Mel sequences (see the module docstring).

    preset: a name from AUDIO_PRESETS (``vggish``) whose values the other fields must have;
        None = set them freely.
    sample_rate: the clip's audio is resampled to this rate (Hz).
    n_mels: Mel bands per frame.
    win_s: STFT window length in seconds.
    hop_s: STFT hop in seconds (one sequence step).
    n_fft: FFT length in samples (>= the window; zero-padded); None = the window length.
    window: SciPy/librosa window name (``hann`` is the periodic Hann window).
    power: 2 = power spectrogram, 1 = magnitude.
    mel_scale: ``slaney`` or ``htk`` Mel formula; mel_norm: ``slaney`` area normalisation or None.
    fmin, fmax: Mel range in Hz; fmax None = Nyquist.
    log: ``db`` = ``10*log10(max(S, log_floor))``; ``ln`` = ``ln(S + log_offset)``.
    log_floor: floor before the dB log (dB values are >= 10*log10(log_floor)).
    log_offset: offset inside the natural log.
    """

    preset: str | None = None
    sample_rate: int = 16000
    n_mels: int = 20
    win_s: float = 0.05
    hop_s: float = 0.01
    n_fft: int | None = None
    window: str = "hamming"
    power: float = 2.0
    mel_scale: Literal["slaney", "htk"] = "slaney"
    mel_norm: Literal["slaney"] | None = "slaney"
    fmin: float = 0.0
    fmax: float | None = None
    log: Literal["db", "ln"] = "db"
    log_floor: float = 1e-10
    log_offset: float = 0.01

    def validate(self) -> None:
        if self.preset is not None:
            if self.preset not in AUDIO_PRESETS:
                raise FieldProblem("preset", f"unknown preset {self.preset!r} (known: {', '.join(AUDIO_PRESETS)})")
            for name, value in AUDIO_PRESETS[self.preset].items():
                if getattr(self, name) != value:
                    raise FieldProblem(
                        name,
                        f"{getattr(self, name)!r} differs from the {self.preset} preset's {value!r} "
                        "(leave it out, or drop the preset to set it freely)",
                    )
        if not 1000 <= self.sample_rate <= MAX_SAMPLE_RATE:
            raise FieldProblem("sample_rate", f"must be in [1000, {MAX_SAMPLE_RATE}] Hz, got {self.sample_rate}")
        at_least(self, 1, "n_mels")
        if self.win_s <= 0 or self.win_s * self.sample_rate < 8:
            raise FieldProblem("win_s", f"must give at least 8 samples, got {self.win_s} s")
        if self.hop_s <= 0 or self.hop_s * self.sample_rate < 1:
            raise FieldProblem("hop_s", f"must give at least 1 sample, got {self.hop_s} s")
        if self.fmin < 0:
            raise FieldProblem("fmin", f"must be >= 0 Hz, got {self.fmin}")
        nyquist = self.sample_rate / 2
        if self.fmax is not None and not self.fmin < self.fmax <= nyquist:
            raise FieldProblem("fmax", f"must be in (fmin, {nyquist:g}] Hz, got {self.fmax}")
        if self.fmin >= (self.fmax or nyquist):
            raise FieldProblem("fmin", f"must be below fmax/Nyquist, got {self.fmin}")
        if self.log_floor <= 0:
            raise FieldProblem("log_floor", f"must be > 0, got {self.log_floor}")
        if self.log_offset <= 0:
            raise FieldProblem("log_offset", f"must be > 0, got {self.log_offset}")
        if self.n_fft is not None and self.n_fft < round(self.win_s * self.sample_rate):
            raise FieldProblem("n_fft", f"{self.n_fft} is shorter than the window ({self.win_s} s)")
        if self.power <= 0:
            raise FieldProblem("power", f"must be > 0 (2 = power, 1 = magnitude), got {self.power}")
        try:
            scipy.signal.get_window(self.window, 16)
        except ValueError as exc:
            raise FieldProblem("window", f"unknown window '{self.window}' ({exc})") from None


def n_audio_frames(seg_s: float, cfg: AudioFeatureConfig) -> int:
    """``T_a``: whole STFT frames in a segment of ``seg_s`` seconds."""
    seg_len = int(round(seg_s * cfg.sample_rate))
    win = int(round(cfg.win_s * cfg.sample_rate))
    if seg_len < win:
        raise ValueError(f"audio segment {seg_s} s is shorter than the STFT window {cfg.win_s} s")
    return (seg_len - win) // int(round(cfg.hop_s * cfg.sample_rate)) + 1


def audio_stop_s(starts_s: np.ndarray, seg_s: float, sr: int, cfg: AudioFeatureConfig) -> float:
    """Clip seconds of audio that :func:`audio_segment_features` reads for these segments:
    passed as ``read_audio(..., stop_s=)`` it gives the same features as the whole track."""
    starts_s = np.asarray(starts_s, dtype=np.float64).reshape(-1)
    if len(starts_s) == 0:
        return 0.0
    hop = int(round(cfg.hop_s * sr))
    seg_len = int(round(seg_s * sr))
    first_frame = int(np.rint(starts_s.max() * sr / hop))
    start_sample = int(np.rint(starts_s.max() * sr))
    return max(first_frame * hop + seg_len, start_sample + seg_len) / sr


def read_audio(path: Path, sample_rate: int, stop_s: float | None = None) -> np.ndarray | None:
    """The clip's first audio stream as mono float32 at ``sample_rate``.

    stop_s: decode only the first ``stop_s`` seconds (the samples are those of decoding the
        whole track, cut); None = the whole track.

    Returns (S,) float32 in [-1, 1], or None when the file has no audio stream.
    Raises InputFileError when the file cannot be opened or decoded.
    """
    path = Path(path)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    limit = None if stop_s is None else max(0, int(np.ceil(stop_s * sample_rate)))
    chunks: list[np.ndarray] = []
    have = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                if limit is not None and have >= limit:
                    break  # what follows is not needed (and the resampler's flush would not reach it)
                frame.pts = None  # let the resampler count samples (robust to odd timestamps)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    have += len(chunks[-1])
            else:
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except (av.FFmpegError, OSError) as exc:
        raise InputFileError(path, f"cannot read audio ({_one_line(exc)})") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    wave = np.concatenate(chunks)[:limit]
    return np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def log_mel(wave: np.ndarray, sr: int, cfg: AudioFeatureConfig) -> np.ndarray:
    """Log-Mel spectrogram of a waveform: (S,) -> (n_frames, n_mels) float32.

    ``n_frames = (S - win) // hop + 1``: frame ``i`` is samples ``[i*hop, i*hop + win)``, also
    when ``n_fft`` > win (librosa centres the window in its n_fft-long frame, so the signal
    is padded by the difference to keep the window where VGGish's framing puts it).
    """
    win = int(round(cfg.win_s * sr))
    n_fft = cfg.n_fft or win
    left = (n_fft - win) // 2
    y = np.asarray(wave, dtype=np.float32)
    if n_fft > win:
        y = np.pad(y, (left, n_fft - win - left))
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=sr,
        n_fft=n_fft,
        hop_length=int(round(cfg.hop_s * sr)),
        win_length=win,
        window=cfg.window,
        center=False,
        power=cfg.power,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        htk=cfg.mel_scale == "htk",
        norm=cfg.mel_norm,
    )
    if cfg.log == "ln":
        logged = np.log(mel + cfg.log_offset)
    else:
        logged = librosa.power_to_db(mel, ref=1.0, amin=cfg.log_floor, top_db=None)
    return logged.T.astype(np.float32)


def audio_segment_features(
    wave: np.ndarray, sr: int, starts_s: np.ndarray, seg_s: float, cfg: AudioFeatureConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment log-Mel sequences and loudness of one clip's audio.

    Args:
        wave: (S,) mono waveform in [-1, 1] at ``sr`` Hz.
        sr: its sampling rate (normally ``cfg.sample_rate``).
        starts_s: (N,) segment start times in clip seconds.
        seg_s: segment length in seconds.

    Returns:
        log_mel: (N, T_a, n_mels) float32 dB (see module docstring).
        energy_db: (N,) float32 RMS of each segment's waveform in dBFS (full scale = 1.0),
            floored at -120 (silence).
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    starts_s = np.asarray(starts_s, dtype=np.float64).reshape(-1)
    win = int(round(cfg.win_s * sr))
    hop = int(round(cfg.hop_s * sr))
    seg_len = int(round(seg_s * sr))
    if seg_len < win:
        raise ValueError(f"audio segment {seg_s} s is shorter than the STFT window {cfg.win_s} s")
    n_frames = (seg_len - win) // hop + 1
    n = len(starts_s)
    if n == 0:
        return np.zeros((0, n_frames, cfg.n_mels), np.float32), np.zeros(0, np.float32)
    if starts_s.min() < 0:
        raise ValueError(f"audio segment start {starts_s.min():g} s is before the clip")

    first_frame = np.rint(starts_s * sr / hop).astype(np.int64)  # (N,)
    start_sample = np.rint(starts_s * sr).astype(np.int64)
    need = max(int(first_frame.max()) * hop + seg_len, int(start_sample.max()) + seg_len)
    padded = np.zeros(max(need, len(wave)), dtype=np.float32)
    padded[: len(wave)] = wave

    mel = log_mel(padded[: int(first_frame.max()) * hop + seg_len], sr, cfg)  # (F, n_mels)
    frames = first_frame[:, None] + np.arange(n_frames)[None, :]
    log_mel_seq = mel[frames]  # (N, T_a, n_mels)

    segments = padded[start_sample[:, None] + np.arange(seg_len)[None, :]]  # (N, seg_len)
    rms = np.sqrt(np.mean(np.square(segments, dtype=np.float64), axis=1))
    with np.errstate(divide="ignore"):
        energy = 20 * np.log10(rms)
    energy_db = np.maximum(energy, SILENT_DB).astype(np.float32)
    return log_mel_seq, energy_db
