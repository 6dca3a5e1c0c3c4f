"""A synthetic demo study in real file formats, with planted, learnable structure.

``synthesize(out, SynthConfig())`` writes::

    OUT/stimuli/<stimulus>.mp4   H.264 (or MPEG-4) video + AAC mono audio, written with PyAV
    OUT/eeg/<subject>.edf        one EDF per subject: all its trials back to back (MNE + edfio)
    OUT/ratings.csv              subject, trial, stimulus, valence, arousal, dominance, liking
    OUT/stimuli.csv              the design: each clip's intended quadrant/valence/arousal, audio
    OUT/manifest.csv             for ``--source manifest`` (written last): onset, duration, lag

Design (what a model can learn, and from which modality):

* Stimuli. Each clip has an intended quadrant of the valence-arousal plane (HVHA, LVHA,
  LVLA, HVLA; balanced, shuffled by the seed) and intended ratings near 6.8 (high) or
  3.2 (low), jittered per clip.
* Ratings. Subject rating = intended + a per-subject bias + trial noise, clipped to 1-9;
  so labels (rating > 5) mostly, not always, follow the clip. Dominance and liking
  follow valence loosely.
* Video tells mainly valence. The colour runs from dark blue (low valence) to bright
  warm orange (high valence), with per-clip colour jitter. A drifting stripe pattern
  moves faster for high arousal, but a per-clip random speed swamps that, and at the
  1-2 fps ``prepare`` samples it is hard to see: video alone separates valence only.
* Audio tells mainly arousal. A train of harmonic notes: loudness (-30 to -12 dBFS) and
  tempo (1 to 4 notes/s) rise with arousal; pitch rises slightly with valence but a
  per-clip random transposition of +-0.4 octave swamps it. About half the clips have a
  4.5 s near-silent stretch (about -80 dBFS) aligned so that one whole 4 s segment falls
  below a -50 dBFS energy gate, and exactly one clip has no audio stream at all.
* EEG tells both, noisily, and from the subject's own ratings (what they felt), not the
  clip's intent. 1/f background (exponent ~1) mixed across channels; alpha (subject
  peak 9-11.5 Hz) rises with valence overall, and frontal alpha asymmetry (right minus
  left on AF3/AF4, F3/F4, F7/F8, FC5/FC6) grows with valence; beta + gamma power rises
  with arousal and follows the clip's loudness envelope, delayed by the subject's lag
  (0-0.5 s, written in the manifest). Per-subject channel gains, a per-trial random
  strength of each effect and per-trial alpha/asymmetry/beta changes unrelated to the
  ratings (``NUISANCE``) make EEG informative but unreliable alone.

So the four-class quadrant needs video (or EEG) for valence and audio (or EEG) for
arousal, and the ratings' subject-level deviations are visible only in the EEG. (One
caveat: under trial- or subject-grouped folds every clip is also in the training set,
so any stimulus modality can learn a clip's identity and its usual label; the
"needs a combination" property is about features, and shows in full for unseen clips:
the ``stimulus`` protocol holds whole clips out, and the ``clip-majority`` baseline
measures how far clip memory alone gets under the other protocols.)
Everything is drawn from ``numpy.random.default_rng([seed, part, index])`` streams, so
a seed gives the same study, and changing e.g. the video size leaves the EEG unchanged.
"""

from __future__ import annotations

import csv
import datetime
import functools
import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import mne
import numpy as np
import scipy.signal

from mercl.atomic import write_atomic, write_text
from mercl.config import FieldProblem
from mercl.errors import ConfigError, InputFileError

QUADRANTS = ("HVHA", "LVHA", "LVLA", "HVLA")  # same order as mercl.data.labels' quadrant4
HIGH, LOW = 6.8, 3.2
# Emotiv-like first (frontal pairs up front, so small montages keep them), then 10-20 extras.
CHANNEL_ORDER = (
    "AF3 AF4 F3 F4 F7 F8 FC5 FC6 T7 T8 P7 P8 O1 O2 "
    "Fz Cz Pz Oz Fp1 Fp2 C3 C4 CP1 CP2 CP5 CP6 P3 P4 PO3 PO4 FC1 FC2"
).split()
FRONTAL_PAIRS = (("AF3", "AF4"), ("F3", "F4"), ("F7", "F8"), ("FC5", "FC6"))
POSTERIOR = {"P7", "P8", "O1", "O2", "Pz", "Oz", "P3", "P4", "PO3", "PO4"}
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MEAS_DATE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)  # fixed, for reproducible files

# Independent random streams: default_rng([seed, PART, index]).
_DESIGN, _VIDEO, _AUDIO, _EEG = 1, 2, 3, 4
NUISANCE = 0.2  # sd of the per-trial log-amplitude changes of alpha, asymmetry and beta/gamma


@dataclass
class SynthConfig:
    """Size of the synthetic study (defaults: ``mercl prepare`` on it takes seconds).

    The default study (8 subjects x 16 clips of 12 s, 4 clips per quadrant) is sized so that
    ``stimulus`` folds (whole clips held out) have every class on every training side.

    subjects, stimuli: counts (every subject watches every stimulus once).
    duration: seconds per clip. seed: the random seed.
    sfreq: EEG rate in Hz. channels: EEG channel count (Emotiv-like 14 by default).
    video_size: square frame side in pixels (even). fps: video frame rate.
    audio_rate: audio sample rate in Hz (an AAC rate). rest: seconds of EEG between trials.
    max_lag: subjects' EEG lags are drawn from [0, max_lag] s; each trial's EEG runs
        ``duration + max_lag`` seconds so that the lagged response is complete.
    """

    subjects: int = 8
    stimuli: int = 16  # 4 per quadrant: enough clips per class for 4 stimulus-held-out folds
    duration: float = 12.0
    seed: int = 0
    sfreq: float = 128.0
    channels: int = 14
    video_size: int = 64
    fps: int = 10
    audio_rate: int = 16000
    rest: float = 2.0
    max_lag: float = 0.5

    def validate(self) -> None:
        if not 1 <= self.subjects <= 999:
            raise FieldProblem("subjects", f"must be 1-999, got {self.subjects}")
        if not 4 <= self.stimuli <= 999:
            raise FieldProblem("stimuli", f"must be 4-999 (one per quadrant at least), got {self.stimuli}")
        if not 4.0 <= self.duration <= 600.0:
            raise FieldProblem("duration", f"must be 4-600 s (one 4 s segment at least), got {self.duration}")
        if not 100.0 <= self.sfreq <= 2048.0:
            raise FieldProblem("sfreq", f"must be 100-2048 Hz (gamma reaches 45 Hz), got {self.sfreq}")
        if not 2 <= self.channels <= len(CHANNEL_ORDER):
            raise FieldProblem("channels", f"must be 2-{len(CHANNEL_ORDER)}, got {self.channels}")
        if not 16 <= self.video_size <= 1024 or self.video_size % 2:
            raise FieldProblem(
                "video_size", f"must be an even number of pixels 16-1024, got {self.video_size}"
            )
        if not 1 <= self.fps <= 60:
            raise FieldProblem("fps", f"must be 1-60, got {self.fps}")
        if self.audio_rate not in AAC_RATES:
            raise FieldProblem("audio_rate", f"must be one of {AAC_RATES}, got {self.audio_rate}")
        if not 0.0 <= self.rest <= 60.0:
            raise FieldProblem("rest", f"must be 0-60 s, got {self.rest}")
        if not 0.0 <= self.max_lag <= 2.0:
            raise FieldProblem("max_lag", f"must be 0-2 s, got {self.max_lag}")


@dataclass
class StimulusDesign:
    """One clip's planted properties (intended ratings are on the 1-9 scale)."""

    stimulus: str
    quadrant: str
    valence: float
    arousal: float
    has_audio: bool
    silent_span: tuple[float, float] | None  # near-silent audio stretch, clip seconds
    hue_jitter: np.ndarray  # (3,) RGB offset
    stripe_speed: float  # cycles/s of the drifting stripes
    pitch: float  # Hz of the notes' root
    loudness_db: float  # dBFS of the note train
    tempo: float  # notes per second
    envelope_phase: float  # phase of the slow loudness envelope


@dataclass
class SubjectDesign:
    """One subject: presentation order, ratings, lag and EEG traits."""

    subject: str
    order: list[int]  # stimulus indices in presentation (trial) order
    ratings: np.ndarray  # (n_stimuli, 4) valence, arousal, dominance, liking per trial
    lag: float
    alpha_freq: float
    gains: np.ndarray  # (channels,) per-channel gain


@dataclass
class StudyDesign:
    config: SynthConfig
    stimuli: list[StimulusDesign]
    subjects: list[SubjectDesign]
    ch_names: list[str] = field(default_factory=list)


@dataclass
class SynthStudy:
    """Where ``synthesize`` wrote the study, and its design."""

    root: Path
    stimuli_dir: Path
    eeg_dir: Path
    ratings: Path
    design_csv: Path
    manifest: Path
    design: StudyDesign


def _rng(config: SynthConfig, part: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([config.seed, part, index])


def design_study(config: SynthConfig) -> StudyDesign:
    """All the study's random choices (no I/O): clips, ratings, subject traits."""
    rng = _rng(config, _DESIGN)
    n = config.stimuli
    quadrants = rng.permutation(np.arange(n) % 4)
    no_audio = int(rng.integers(n))
    can_gap = config.duration >= 8.5
    stimuli = []
    for i, q in enumerate(quadrants):
        name = QUADRANTS[q]
        valence = (HIGH if name[0] == "H" else LOW) + rng.uniform(-0.6, 0.6)
        arousal = (HIGH if name[2] == "H" else LOW) + rng.uniform(-0.6, 0.6)
        a01 = (arousal - 1) / 8
        gap = None
        if i != no_audio and can_gap and rng.random() < 0.5:
            k = int(rng.integers(1, int((config.duration - 4.25) // 2) + 1))
            gap = (2.0 * k - 0.25, 2.0 * k + 4.25)
        stimuli.append(
            StimulusDesign(
                stimulus=f"clip{i + 1:02d}",
                quadrant=name,
                valence=round(float(valence), 2),
                arousal=round(float(arousal), 2),
                has_audio=i != no_audio,
                silent_span=gap,
                hue_jitter=rng.uniform(-30, 30, size=3),
                stripe_speed=float(0.2 + 0.4 * a01 + rng.uniform(0.0, 1.0)),
                pitch=float(220.0 * 2 ** (0.5 * ((valence - 1) / 8 - 0.5) + rng.uniform(-0.4, 0.4))),
                loudness_db=float(-30.0 + 18.0 * a01 + rng.uniform(-2.0, 2.0)),
                tempo=float(1.0 + 3.0 * a01 + rng.uniform(-0.3, 0.3)),
                envelope_phase=float(rng.uniform(0, 2 * np.pi)),
            )
        )
    # A gap somewhere, whenever the clips are long enough for one.
    if can_gap and not any(s.silent_span for s in stimuli):
        first = next(s for s in stimuli if s.has_audio)
        first.silent_span = (1.75, 6.25)
    intended = np.array([[s.valence, s.arousal] for s in stimuli])
    subjects = []
    for j in range(config.subjects):
        bias = rng.normal(0.0, 0.6, size=2)
        va = intended + bias + rng.normal(0.0, 1.1, size=intended.shape)
        dominance = 5.0 + 0.4 * (va[:, 0] - 5.0) + rng.normal(0.0, 1.0, size=n)
        liking = 5.0 + 0.6 * (va[:, 0] - 5.0) + rng.normal(0.0, 1.0, size=n)
        ratings = np.clip(np.column_stack([va, dominance, liking]), 1.0, 9.0).round(2)
        order = [int(i) for i in rng.permutation(n)]
        subjects.append(
            SubjectDesign(
                subject=f"s{j + 1:02d}",
                order=order,
                ratings=ratings[order],
                lag=round(float(rng.uniform(0.0, config.max_lag)), 2),
                alpha_freq=float(rng.uniform(9.0, 11.5)),
                gains=np.exp(rng.normal(0.0, 0.2, size=config.channels) + rng.normal(0.0, 0.15)),
            )
        )
    return StudyDesign(config, stimuli, subjects, ch_names=CHANNEL_ORDER[: config.channels])


# ---------------------------------------------------------------- stimuli


def loudness_envelope(stim: StimulusDesign, t: np.ndarray) -> np.ndarray:
    """Slow loudness modulation (about 1 +- 0.3, period 7 s) at clip times ``t`` (s)."""
    return 1.0 + 0.3 * np.sin(2 * np.pi * t / 7.0 + stim.envelope_phase)


def clip_frames(stim: StimulusDesign, config: SynthConfig) -> np.ndarray:
    """The clip's video, (T, H, W, 3) uint8 RGB, T = duration * fps."""
    rng = _rng(config, _VIDEO, int(stim.stimulus[4:]))
    size, n = config.video_size, int(round(config.duration * config.fps))
    v01 = (stim.valence - 1) / 8
    cool, warm = np.array([40.0, 70.0, 150.0]), np.array([235.0, 165.0, 60.0])
    colour = (cool + v01 * (warm - cool) + stim.hue_jitter) * (0.55 + 0.45 * v01)
    x = np.linspace(0.0, 1.0, size, endpoint=False)
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        t = i / config.fps
        stripes = 1.0 + 0.25 * np.sin(
            2 * np.pi * (3.0 * x[None, :] + 0.3 * x[:, None] - stim.stripe_speed * t)
        )
        image = stripes[:, :, None] * colour + rng.normal(0.0, 6.0, size=(size, size, 3))
        frames[i] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def clip_audio(stim: StimulusDesign, config: SynthConfig) -> np.ndarray | None:
    """The clip's mono audio, (S,) float32 in [-1, 1], or None for the clip without audio."""
    if not stim.has_audio:
        return None
    rng = _rng(config, _AUDIO, int(stim.stimulus[4:]))
    sr = config.audio_rate
    t = np.arange(int(round(config.duration * sr))) / sr
    wave = np.zeros_like(t)
    note_len = 1.0 / stim.tempo
    steps = (0, 4, 7, 12, 7, 4)  # an arpeggio on the root
    for k, start in enumerate(np.arange(0.0, config.duration, note_len)):
        freq = stim.pitch * 2 ** (steps[k % len(steps)] / 12)
        span = slice(int(round(start * sr)), int(round((start + note_len) * sr)))
        local = t[span] - start
        shape = np.minimum(local / 0.01, 1.0) * np.exp(-local / (0.6 * note_len))
        wave[span] = shape * sum(np.sin(2 * np.pi * h * freq * local) / h for h in (1, 2, 3))
    wave /= np.sqrt(np.mean(wave**2)) + 1e-12
    wave += 0.1 * rng.normal(0.0, 1.0, size=t.size)
    wave *= 10 ** (stim.loudness_db / 20) * loudness_envelope(stim, t)
    if stim.silent_span is not None:
        lo, hi = stim.silent_span
        fade = np.clip(np.minimum(t - lo, hi - t) / 0.05, 0.0, 1.0)  # 0 inside, 1 outside
        gain = 1.0 - fade * ((t > lo) & (t < hi))
        wave *= np.maximum(gain, 1e-4)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def video_codec() -> str:
    """H.264 (libx264) where this PyAV build has it, else MPEG-4 part 2."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


@functools.cache
def x264_cpu_cap() -> dict[str, str]:
    """x264 options that keep it off its AVX-512 kernels on a CPU that has them.

    With those kernels the same frames gave different bitstreams from run to run within one
    process (x264 in PyAV 18.1's wheel, a 2-core AVX-512 EPYC: the synthetic study was not
    reproducible); capped at AVX2 every run was identical. Every CPU with AVX-512 BW has AVX2,
    BMI2 and FMA3, which ``asm=AVX2`` implies. Elsewhere x264 detects the CPU itself.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return {}
    return {"x264-params": "asm=AVX2"} if "avx512bw" in flags and "avx2" in flags else {}


def write_clip(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None, audio_rate: int) -> None:
    """Write an mp4 with PyAV, atomically.

    Args:
        frames: (T, H, W, 3) uint8 RGB, H and W even.
        audio: (S,) float32 mono in [-1, 1], or None for a clip with no audio stream.
    """

    def write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            video = container.add_stream(video_codec(), rate=fps)
            video.width, video.height = frames.shape[2], frames.shape[1]
            video.pix_fmt = "yuv420p"
            if video.codec_context.name == "libx264":
                video.options = {"preset": "veryfast", "crf": "20", **x264_cpu_cap()}
            sound = None
            if audio is not None:
                sound = container.add_stream("aac", rate=audio_rate, layout="mono")
            per_second = max(1, fps)
            for first in range(0, len(frames), per_second):  # interleave ~1 s of each
                for i in range(first, min(first + per_second, len(frames))):
                    frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                    frame.pts = i
                    frame.time_base = Fraction(1, fps)
                    container.mux(video.encode(frame))
                if sound is not None:
                    a0, a1 = (
                        first * audio_rate // fps,
                        min(len(audio), (first + per_second) * audio_rate // fps),
                    )
                    if a1 > a0:
                        chunk = av.AudioFrame.from_ndarray(audio[None, a0:a1], format="fltp", layout="mono")
                        chunk.sample_rate, chunk.pts, chunk.time_base = (
                            audio_rate,
                            a0,
                            Fraction(1, audio_rate),
                        )
                        container.mux(sound.encode(chunk))
            container.mux(video.encode(None))
            if sound is not None:
                container.mux(sound.encode(None))

    write_atomic(Path(path), write, suffix=".mp4")


# ---------------------------------------------------------------- EEG


def pink_noise(rng: np.random.Generator, shape: tuple[int, int], sfreq: float, exponent: float) -> np.ndarray:
    """(C, S) noise with a 1/f^exponent power spectrum, unit standard deviation per channel."""
    spectrum = np.fft.rfft(rng.normal(size=shape), axis=-1)
    freqs = np.fft.rfftfreq(shape[-1], d=1.0 / sfreq)
    spectrum *= 1.0 / np.maximum(freqs, 0.5) ** (exponent / 2)
    noise = np.fft.irfft(spectrum, n=shape[-1], axis=-1)
    return noise / noise.std(axis=-1, keepdims=True)


def band_noise(
    rng: np.random.Generator, shape: tuple[int, int], sfreq: float, band: tuple[float, float]
) -> np.ndarray:
    """(C, S) band-limited noise (4th-order Butterworth, zero phase), unit std per channel."""
    sos = scipy.signal.butter(4, band, btype="bandpass", fs=sfreq, output="sos")
    noise = scipy.signal.sosfiltfilt(sos, rng.normal(size=shape), axis=-1)
    return noise / noise.std(axis=-1, keepdims=True)


def trial_layout(config: SynthConfig) -> tuple[float, int, int]:
    """(trial EEG duration s, samples per trial, samples per rest) of every subject's recording."""
    trial_s = config.duration + config.max_lag
    return trial_s, int(round(trial_s * config.sfreq)), int(round(config.rest * config.sfreq))


def subject_eeg(design: StudyDesign, subject: SubjectDesign, index: int) -> tuple[np.ndarray, list[int]]:
    """One subject's whole recording and its trials' onsets.

    Returns:
        eeg: (channels, S) float64 volts, S a whole number of seconds.
        onsets: sample index of each trial's clip onset, in trial order.
    """
    config = design.config
    rng = _rng(config, _EEG, index)
    sf = config.sfreq
    _, trial_n, rest_n = trial_layout(config)
    n_trials = len(subject.order)
    total = n_trials * (trial_n + rest_n) + rest_n
    total = int(np.ceil(total / sf) * sf)  # whole seconds: whole EDF records, no padding
    shape = (config.channels, total)
    names = design.ch_names

    # Per-sample state: valence/arousal in [-1, 1] (0 at rest) and the clip's loudness envelope.
    valence = np.zeros(total)
    arousal = np.zeros(total)
    envelope = np.ones(total)
    strength = np.ones((2, total))
    nuisance = np.exp(rng.normal(0.0, NUISANCE, size=(3, 1))) * np.ones((3, total))
    onsets = []
    for k, stim_index in enumerate(subject.order):
        start = rest_n + k * (trial_n + rest_n)
        onsets.append(start)
        span = slice(start, start + trial_n)
        valence[span] = (subject.ratings[k, 0] - 5.0) / 4.0
        arousal[span] = (subject.ratings[k, 1] - 5.0) / 4.0
        clip_t = np.arange(trial_n) / sf - subject.lag  # the response trails the clip by the lag
        envelope[span] = loudness_envelope(design.stimuli[stim_index], np.clip(clip_t, 0.0, None))
        strength[:, span] = np.exp(rng.normal(0.0, 0.35, size=(2, 1)))  # how strongly it shows
        nuisance[:, span] = np.exp(rng.normal(0.0, NUISANCE, size=(3, 1)))  # unrelated state changes

    mixing = np.eye(config.channels) + rng.normal(0.0, 0.15, size=(config.channels, config.channels))
    background = 9.0 * (mixing @ pink_noise(rng, shape, sf, exponent=float(rng.uniform(0.8, 1.3))))

    alpha_band = (subject.alpha_freq - 1.5, subject.alpha_freq + 1.5)
    alpha = 0.6 * band_noise(rng, (1, total), sf, alpha_band) + 0.8 * band_noise(rng, shape, sf, alpha_band)
    alpha_base = np.array([8.0 if ch in POSTERIOR else 4.5 for ch in names])[:, None]
    alpha_gain = 1.0 + 0.25 * valence * strength[0]
    asymmetry = np.zeros((config.channels, 1))
    for left, right in FRONTAL_PAIRS:
        if left in names and right in names:
            asymmetry[names.index(left)], asymmetry[names.index(right)] = -1.0, 1.0
    alpha_gain = alpha_gain * (1.0 + 0.3 * asymmetry * valence * strength[0]) * nuisance[0]
    alpha_gain = alpha_gain * nuisance[1] ** asymmetry  # random asymmetry, unrelated to valence

    fast_gain = (1.0 + 0.5 * arousal * strength[1]) * envelope * nuisance[2]
    beta = 2.5 * band_noise(rng, shape, sf, (13.0, 30.0))
    gamma = 1.2 * band_noise(rng, shape, sf, (30.0, 45.0))

    microvolts = background + alpha_base * alpha * alpha_gain + (beta + gamma) * fast_gain
    return subject.gains[:, None] * microvolts * 1e-6, onsets


def write_edf(path: Path, eeg: np.ndarray, sfreq: float, ch_names: list[str]) -> None:
    """Write (C, S) volts as EDF through MNE's exporter (edfio), atomically."""
    raw = mne.io.RawArray(eeg, mne.create_info(list(ch_names), sfreq, "eeg"), verbose="error")
    raw.set_meas_date(MEAS_DATE)
    write_atomic(path, lambda tmp: mne.export.export_raw(tmp, raw, fmt="edf", overwrite=True, verbose="error"),
                 suffix=".edf")


# ---------------------------------------------------------------- tables and the whole study


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Write a CSV atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputFileError(out, "is not empty (pass --force to write the study into it anyway)")


def synthesize(out: Path, config: SynthConfig | None = None, force: bool = False) -> SynthStudy:
    """Write the whole study under ``out`` (see the module docstring); returns where."""
    config = config or SynthConfig()
    try:
        config.validate()
    except FieldProblem as exc:
        raise ConfigError(exc.field, exc.problem) from None
    out = Path(out)
    _check_out(out, force)
    design = design_study(config)
    study = SynthStudy(
        root=out,
        stimuli_dir=out / "stimuli",
        eeg_dir=out / "eeg",
        ratings=out / "ratings.csv",
        design_csv=out / "stimuli.csv",
        manifest=out / "manifest.csv",
        design=design,
    )
    study.stimuli_dir.mkdir(parents=True, exist_ok=True)
    study.eeg_dir.mkdir(parents=True, exist_ok=True)
    for stim in design.stimuli:
        write_clip(
            study.stimuli_dir / f"{stim.stimulus}.mp4",
            clip_frames(stim, config),
            config.fps,
            clip_audio(stim, config),
            config.audio_rate,
        )
    trial_s, _, _ = trial_layout(config)
    ratings_rows, manifest_rows = [], []
    for index, subject in enumerate(design.subjects):
        eeg, onsets = subject_eeg(design, subject, index)
        edf = study.eeg_dir / f"{subject.subject}.edf"
        write_edf(edf, eeg, config.sfreq, design.ch_names)
        for k, stim_index in enumerate(subject.order):
            stimulus = design.stimuli[stim_index].stimulus
            values = [f"{v:.2f}" for v in subject.ratings[k]]
            ratings_rows.append([subject.subject, k, stimulus, *values])
            onset = onsets[k] / config.sfreq
            manifest_rows.append(
                [
                    subject.subject,
                    k,
                    stimulus,
                    f"eeg/{edf.name}",
                    repr(onset),
                    repr(trial_s),
                    *values,
                    subject.lag,
                ]
            )
    ratings = ["valence", "arousal", "dominance", "liking"]
    write_csv(study.ratings, ["subject", "trial", "stimulus", *ratings], ratings_rows)
    write_csv(
        study.design_csv,
        ["stimulus", "quadrant", "valence", "arousal", "has_audio", "silent_from", "silent_to"],
        [
            [s.stimulus, s.quadrant, s.valence, s.arousal, int(s.has_audio), *(s.silent_span or ("", ""))]
            for s in design.stimuli
        ],
    )
    write_csv(
        study.manifest,
        ["subject", "trial", "stimulus", "eeg", "onset", "duration", *ratings, "lag"],
        manifest_rows,
    )
    return study
