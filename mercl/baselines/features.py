"""Handcrafted inputs of the paper's baselines, computed once per prepared dataset and cached.

:func:`build_features` returns a :class:`BaselineFeatures`: every array the baselines of
:mod:`mercl.baselines` read, aligned with the dataset's EEG rows (the index space of
:mod:`mercl.data.reader` and :mod:`mercl.data.protocols`) or with its stimulus segments.

From the shards (no recomputation): the band-PSD sequences ``eeg_psd`` and the sampled
frames (for the visual statistics, VGG19 features and the pooled frames).

Recomputed from the original recordings, because the shards do not hold them: the raw EEG
segments (for wavelet packets and PCA) and each stimulus segment's audio waveform (for
eGeMAPS and MFCC). The dataset's ``manifest.json`` names the source, the raw path, the
stimuli folder and the prepare config; the recordings are re-read through the same
source (:func:`mercl.data.sources.discover`) and cut at the same segment starts
(:func:`mercl.data.prepare.segment_starts`, EEG shifted by each trial's lag), and the
result is checked against the shard rows' ``start_s`` / ``lag_s``.

Cache: ``DATASET/cache/baselines-<hash>/`` (hash of this config, the dataset id and its
shard checksums) holding ``eeg.parquet`` (one row per EEG row, keyed by subject, trial,
segment), ``stimuli.parquet`` (one row per stimulus segment, keyed by stimulus, segment)
and ``meta.json`` written last (atomic writes throughout). A second call reads the cache.

Arrays (N EEG rows, M stimulus segments; see :class:`BaselineFeatures`):

* ``eeg_psd`` (N, T_e, C, B) log10 band power (the shards' EEG).
* ``eeg_wpd`` (N, C, P) log10 mean energy of the P frequency-ordered wavelet-packet nodes
  (``pywt.WaveletPacket``) below ``wpd_max_hz``; the level is chosen so that a node is at
  most ``wpd_node_hz`` wide (128 Hz EEG: level 4, 4 Hz nodes, P = 12 below 48 Hz).
* ``eeg_raw`` (N, C, S_r) the raw segment in microvolts resampled to ``raw_sfreq``
  (``scipy.signal.resample_poly``).
* ``egemaps`` (M, 88) openSMILE eGeMAPSv02 functionals of the segment's waveform.
* ``mfcc`` (M, T_m, n_mfcc) librosa MFCCs of the segment's waveform.
* ``visual`` (M, 9) luminance / lighting key / colour energy / motion statistics.
* ``vgg`` (M, T_v, 512) VGG19 (torchvision) conv features, global-average-pooled, per frame.
* ``frames`` (M, T_v, 3, p, p) float32 frames average-pooled to ``frame_pool`` pixels, in [0, 1].
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.signal
import torch
from tqdm import tqdm

from mercl.config import FieldProblem, config_hash, from_dict, to_dict
from mercl.data import shards
from mercl.data.features.audio import read_audio
from mercl.data.prepare import PrepareConfig, find_clip, input_folders, segment_starts
from mercl.data.reader import PreparedDataset, lookup_rows
from mercl.data.sources import discover
from mercl.errors import InputFileError, MerclError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
VISUAL_NAMES = (
    "luminance_mean",
    "luminance_std",
    "lighting_key",
    "color_energy",
    "saturation_mean",
    "luminance_mean_sd_over_frames",
    "color_energy_sd_over_frames",
    "motion_mean",
    "motion_max",
)
VGG_DIM = 512
_MICROVOLT = 1e6
_TOL_S = 1e-3


@dataclass
class BaselineFeatureConfig:
    """How the baselines' handcrafted inputs are computed (part of the cache key).

    raw_sfreq: rate (Hz) of the raw EEG kept for AVE-LSTM's PCA.
    wavelet: PyWavelets wavelet of the wavelet-packet decomposition (AVE-KELM).
    wpd_node_hz: the decomposition level is the smallest giving nodes at most this wide.
    wpd_max_hz: keep the nodes that start below this frequency.
    n_mfcc, mfcc_win_s, mfcc_hop_s: MFCCs per step, STFT window and hop (AVE-LSTM). The
        default 100 ms frames (40 steps per 4 s) keep the audio LSTM affordable on a CPU;
        the speech-style 25 ms / 10 ms gives 400 steps.
    vgg19_weights: a local torchvision VGG19 state-dict file; None = random initialisation
        (seeded, logged); nothing is ever downloaded.
    vgg_size: frames are resized to this side before VGG19 (None = as prepared, 224 by
        default; 112 costs a quarter).
    frame_pool: frames are average-pooled to ``frame_pool x frame_pool`` for VE-BiLSTM.
    """

    raw_sfreq: float = 64.0
    wavelet: str = "db4"
    wpd_node_hz: float = 4.0
    wpd_max_hz: float = 48.0
    n_mfcc: int = 13
    mfcc_win_s: float = 0.1
    mfcc_hop_s: float = 0.1
    vgg19_weights: str | None = None
    vgg_size: int | None = None
    frame_pool: int = 16

    def validate(self) -> None:
        import pywt

        if self.raw_sfreq < 8:
            raise FieldProblem("raw_sfreq", f"must be >= 8 Hz, got {self.raw_sfreq}")
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise FieldProblem("wavelet", f"unknown discrete wavelet '{self.wavelet}'")
        if self.wpd_node_hz <= 0:
            raise FieldProblem("wpd_node_hz", f"must be > 0 Hz, got {self.wpd_node_hz}")
        if self.wpd_max_hz <= 0:
            raise FieldProblem("wpd_max_hz", f"must be > 0 Hz, got {self.wpd_max_hz}")
        if not 1 <= self.n_mfcc <= 128:
            raise FieldProblem("n_mfcc", f"must be 1-128, got {self.n_mfcc}")
        if self.mfcc_win_s <= 0 or self.mfcc_hop_s <= 0:
            raise FieldProblem("mfcc_win_s", "window and hop must be > 0 s")
        if self.vgg19_weights is not None and not Path(self.vgg19_weights).is_file():
            raise FieldProblem("vgg19_weights", f"no such file {self.vgg19_weights}")
        if self.vgg_size is not None and not 32 <= self.vgg_size <= 1024:
            raise FieldProblem("vgg_size", f"must be 32-1024 pixels, got {self.vgg_size}")
        if not 1 <= self.frame_pool <= 64:
            raise FieldProblem("frame_pool", f"must be 1-64 pixels, got {self.frame_pool}")


@dataclass
class BaselineFeatures:
    """Everything the baselines read, for N EEG rows and M stimulus segments.

    keys: (N rows) subject, trial, segment, stimulus of each EEG row (dataset row order).
    eeg_psd: (N, T_e, C, B) float32 log10 band power per sub-window, channel, band.
    eeg_wpd: (N, C, P) float32 log10 wavelet-packet node energies (microvolts^2).
    eeg_raw: (N, C, S_r) float32 raw EEG segment in microvolts at ``raw_sfreq``.
    stim_row: (N,) int64 row of each EEG row's stimulus segment in the arrays below, -1 if none.
    audio_present, video_present: (M,) bool.
    egemaps: (M, 88) float32 eGeMAPS functionals (zeros where audio is absent).
    mfcc: (M, T_m, n_mfcc) float32 (zeros where audio is absent).
    visual: (M, 9) float32 luminance / colour-energy / motion statistics (VISUAL_NAMES).
    vgg: (M, T_v, 512) float32 VGG19 features per frame.
    frames: (M, T_v, 3, p, p) float32 pooled frames in [0, 1].
    names: feature names per array (``egemaps``, ``visual``).
    raw_sfreq: rate of ``eeg_raw`` in Hz.

    Built by :func:`build_features`; tests may construct it from arrays directly.
    """

    keys: pd.DataFrame
    eeg_psd: np.ndarray
    eeg_wpd: np.ndarray
    eeg_raw: np.ndarray
    stim_row: np.ndarray
    audio_present: np.ndarray
    video_present: np.ndarray
    egemaps: np.ndarray
    mfcc: np.ndarray
    visual: np.ndarray
    vgg: np.ndarray
    frames: np.ndarray
    names: dict[str, list[str]] = field(default_factory=dict)
    raw_sfreq: float = 64.0

    def __len__(self) -> int:
        return len(self.stim_row)

    def stimulus(self, name: str, rows: np.ndarray, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """A stimulus array joined to EEG rows.

        Args:
            name: the array (``egemaps``, ``mfcc``, ``visual``, ``vgg``, ``frames``).
            rows: (n,) EEG row indices.
            modality: ``audio`` or ``video``: whose presence flag applies.
        Returns:
            values (n, ...) float32 (zeros where absent), present (n,) bool.
        """
        table = getattr(self, name)
        flags = self.audio_present if modality == "audio" else self.video_present
        s = self.stim_row[np.asarray(rows, dtype=np.int64)]
        present = s >= 0
        if len(flags):
            present &= flags[np.where(present, s, 0)]
        values = np.zeros((len(s), *table.shape[1:]), np.float32)
        values[present] = table[s[present]]
        return values, present


# ---------------------------------------------------------------- EEG


def wpd_level(sfreq: float, node_hz: float) -> int:
    """The smallest decomposition level whose nodes are at most ``node_hz`` wide (>= 1)."""
    return max(1, int(np.ceil(np.log2((sfreq / 2) / node_hz) - 1e-9)))


def wavelet_packet_energy(segments: np.ndarray, sfreq: float, cfg: BaselineFeatureConfig) -> np.ndarray:
    """Log10 mean energy of the frequency-ordered wavelet-packet nodes below ``wpd_max_hz``.

    segments: (n, C, L) microvolts -> (n, C, P) float32.
    """
    import pywt

    level = wpd_level(sfreq, cfg.wpd_node_hz)
    width = (sfreq / 2) / 2**level
    n_keep = max(1, min(2**level, int(np.ceil(cfg.wpd_max_hz / width - 1e-9))))
    packet = pywt.WaveletPacket(segments, cfg.wavelet, mode="symmetric", maxlevel=level, axis=-1)
    nodes = packet.get_level(level, order="freq")[:n_keep]
    energy = np.stack([np.mean(np.square(node.data), axis=-1) for node in nodes], axis=-1)
    return np.log10(np.maximum(energy, 1e-12)).astype(np.float32)


def resample_raw(segments: np.ndarray, sfreq: float, new_sfreq: float) -> np.ndarray:
    """(n, C, L) -> (n, C, L') with ``scipy.signal.resample_poly`` (anti-aliased), float32."""
    if np.isclose(sfreq, new_sfreq):
        return segments.astype(np.float32)
    ratio = Fraction(new_sfreq / sfreq).limit_denominator(1000)
    out = scipy.signal.resample_poly(segments, ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32)


def _eeg_arrays(prepared: PreparedDataset, cfg: BaselineFeatureConfig, progress: bool):
    """Re-read the recordings and cut every EEG row's raw segment: (wpd (N, C, P), raw (N, C, S_r))."""
    manifest = prepared.manifest
    pcfg = from_dict(PrepareConfig, manifest["config"])
    rows = prepared.rows.reset_index(drop=True)
    by_trial = {
        (str(s), int(t)): idx.to_numpy()
        for (s, t), idx in rows.groupby(["subject", "trial"], sort=False).groups.items()
    }
    raw_input, _ = input_folders(prepared.path, manifest)
    units = discover(manifest["source"], raw_input, pcfg.source)
    wpd: np.ndarray | None = None
    raw: np.ndarray | None = None
    filled = np.zeros(len(rows), bool)
    seg_s = float(pcfg.segment_s)
    for unit in tqdm(units, desc="baseline EEG", unit="unit", disable=not progress, leave=False):
        for trial in unit.load():
            index = by_trial.get((str(trial.subject), int(trial.trial)))
            if index is None:
                continue
            index = index[np.argsort(rows["segment"].to_numpy()[index])]
            starts = segment_starts(len(index), pcfg.hop_s)
            where = trial.source_file or unit.name
            if not np.allclose(starts, rows["start_s"].to_numpy()[index], atol=_TOL_S) or (
                "lag_s" in rows and not np.allclose(trial.lag, rows["lag_s"].to_numpy()[index], atol=_TOL_S)
            ):
                raise InputFileError(
                    where, f"trial {trial.trial}: segments differ from the prepared dataset (re-run prepare)"
                )
            first = np.rint((starts + trial.lag) * trial.sfreq).astype(np.int64)
            length = int(round(seg_s * trial.sfreq))
            if first.max() + length > trial.eeg.shape[1]:
                raise InputFileError(where, f"trial {trial.trial}: recording is shorter than at prepare time")
            segments = trial.eeg[:, first[:, None] + np.arange(length)].transpose(1, 0, 2) * _MICROVOLT
            w = wavelet_packet_energy(segments, trial.sfreq, cfg)
            r = resample_raw(segments, trial.sfreq, cfg.raw_sfreq)
            if wpd is None:
                wpd = np.zeros((len(rows), *w.shape[1:]), np.float32)
                raw = np.zeros((len(rows), *r.shape[1:]), np.float32)
            if w.shape[1:] != wpd.shape[1:] or r.shape[1:] != raw.shape[1:]:
                raise InputFileError(where, f"trial {trial.trial}: channels or sampling rate differ")
            wpd[index], raw[index] = w, r
            filled[index] = True
    if not filled.all():
        missing = rows.iloc[int(np.flatnonzero(~filled)[0])]
        raise InputFileError(
            raw_input,
            f"recording of subject {missing['subject']} trial {missing['trial']} not found (re-run prepare)",
        )
    return wpd, raw


# ---------------------------------------------------------------- stimuli


def _egemaps_extractor():
    import opensmile

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )


def egemaps_functionals(segments: np.ndarray, sr: int, smile=None) -> np.ndarray:
    """openSMILE eGeMAPSv02 functionals of each waveform: (n, L) -> (n, 88) float32."""
    smile = smile or _egemaps_extractor()
    out = [smile.process_signal(seg, sr).to_numpy().reshape(-1) for seg in segments]
    values = np.stack(out) if out else np.zeros((0, len(smile.feature_names)))
    return np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def mfcc_sequences(segments: np.ndarray, sr: int, cfg: BaselineFeatureConfig) -> np.ndarray:
    """librosa MFCCs of each waveform: (n, L) -> (n, T_m, n_mfcc) float32 (``center=False``)."""
    import librosa

    win = int(round(cfg.mfcc_win_s * sr))
    mfcc = librosa.feature.mfcc(
        y=np.ascontiguousarray(segments, dtype=np.float32),
        sr=sr,
        n_mfcc=cfg.n_mfcc,
        n_fft=win,
        win_length=win,
        hop_length=int(round(cfg.mfcc_hop_s * sr)),
        center=False,
    )
    return np.swapaxes(mfcc, -1, -2).astype(np.float32)


def n_mfcc_steps(seg_s: float, sr: int, cfg: BaselineFeatureConfig) -> int:
    """``T_m``: MFCC steps in a segment (``center=False`` framing)."""
    win, hop = int(round(cfg.mfcc_win_s * sr)), int(round(cfg.mfcc_hop_s * sr))
    return (int(round(seg_s * sr)) - win) // hop + 1


def visual_statistics(frames: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Luminance, lighting key, colour energy and motion of each segment's frames.

    frames: (n, T_v, 3, H, W) uint8 RGB -> (n, 9) float32 in VISUAL_NAMES order. Luminance
    is Rec. 601 luma in [0, 1]; the lighting key is mean x std of luminance (Hanjalic 2006);
    colour energy is the mean of HSV saturation x value, i.e. of ``max(R,G,B) - min(R,G,B)``
    (Wang & Cheong 2006, without the hue weighting); saturation is HSV's
    ``(max - min) / max``; motion is the mean absolute luminance change between consecutive
    frames. Computed ``chunk`` segments at a time to bound memory.
    """
    out = np.zeros((len(frames), len(VISUAL_NAMES)), np.float32)
    for start in range(0, len(frames), chunk):
        x = frames[start : start + chunk].astype(np.float32) / 255.0  # (n, T, 3, H, W)
        luma = 0.299 * x[:, :, 0] + 0.587 * x[:, :, 1] + 0.114 * x[:, :, 2]  # (n, T, H, W)
        high, low = x.max(axis=2), x.min(axis=2)
        chroma = high - low  # saturation x value
        saturation = np.divide(chroma, high, out=np.zeros_like(chroma), where=high > 0)
        lum_mean, lum_std = luma.mean(axis=(2, 3)), luma.std(axis=(2, 3))  # (n, T)
        energy = chroma.mean(axis=(2, 3))
        if luma.shape[1] > 1:
            motion = np.abs(np.diff(luma, axis=1)).mean(axis=(2, 3))  # (n, T - 1)
        else:
            motion = np.zeros((len(luma), 1), np.float32)
        stats = [
            lum_mean.mean(1),
            lum_std.mean(1),
            (lum_mean * lum_std).mean(1),
            energy.mean(1),
            saturation.mean(axis=(1, 2, 3)),
            lum_mean.std(1),
            energy.std(1),
            motion.mean(1),
            motion.max(1),
        ]
        out[start : start + len(x)] = np.stack(stats, axis=1)
    return out


def pooled_frames(frames: np.ndarray, size: int, chunk: int = 256) -> np.ndarray:
    """(n, T, 3, H, W) uint8 -> (n, T, 3, size, size) float32 in [0, 1] (adaptive average pooling)."""
    n, t = frames.shape[:2]
    flat = frames.reshape(n * t, *frames.shape[2:])
    out = np.zeros((n * t, 3, size, size), np.float32)
    for start in range(0, len(flat), chunk):
        x = torch.from_numpy(flat[start : start + chunk]).float().div_(255.0)
        out[start : start + len(x)] = torch.nn.functional.adaptive_avg_pool2d(x, size).numpy()
    return out.reshape(n, t, 3, size, size)


def vgg19_extractor(weights: str | None) -> torch.nn.Module:
    """torchvision VGG19's convolutional part (``vgg19(weights=None).features``, eval mode).

    The model is built on the meta device and only its conv part is materialised (the
    unused 120 M-parameter classifier took seconds to initialise). Weights: the
    ``features.*`` entries of a local torchvision VGG19 state dict, or, without a file,
    torchvision's own conv initialisation (Kaiming normal, fan-out; zero bias) seeded with 0
    (logged). Nothing is downloaded.
    """
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.vgg19(weights=None)
    features = model.features.to_empty(device="cpu")
    if weights is None:
        log.warning("VGG19 features use random (seeded) weights: no vgg19_weights file given")
        with torch.random.fork_rng():
            torch.manual_seed(0)
            for layer in features.modules():
                if isinstance(layer, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                    torch.nn.init.zeros_(layer.bias)
    else:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            conv = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
            features.load_state_dict(conv)
        except (OSError, RuntimeError, KeyError, ValueError, AttributeError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise InputFileError(weights, f"not a torchvision VGG19 state dict ({reason})") from None
    return features.eval()


def vgg19_frame_features(
    frames: np.ndarray, weights: str | None, size: int | None = None, batch: int = 16
) -> np.ndarray:
    """VGG19 conv features of every frame, global-average-pooled.

    frames: (n, T_v, 3, H, W) uint8 -> (n, T_v, 512) float32. Identical frames (segments
    overlap) are computed once. Frames are resized to ``size`` (bilinear, antialiased) when
    given; ImageNet normalisation; H, W >= 32.
    """
    n, t = frames.shape[:2]
    flat = frames.reshape(n * t, *frames.shape[2:])
    if min(flat.shape[-2:]) < 32 and (size is None or size < 32):
        raise MerclError(f"VGG19 needs frames of at least 32x32 pixels, got {flat.shape[-2:]}")
    digest_row: dict[bytes, int] = {}
    which = np.empty(len(flat), np.int64)
    unique = []
    for i, frame in enumerate(flat):
        key = hashlib.blake2b(frame.tobytes(), digest_size=16).digest()
        if key not in digest_row:
            digest_row[key] = len(unique)
            unique.append(i)
        which[i] = digest_row[key]
    model = vgg19_extractor(weights)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = np.zeros((len(unique), VGG_DIM), np.float32)
    with torch.inference_mode():
        for b in range(0, len(unique), batch):
            x = torch.from_numpy(flat[unique[b : b + batch]]).float().div_(255.0)
            if size is not None and tuple(x.shape[-2:]) != (size, size):
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
            y = model((x - mean) / std)
            out[b : b + batch] = y.mean(dim=(2, 3)).numpy()
    return out[which].reshape(n, t, VGG_DIM)


def _stimulus_arrays(prepared: PreparedDataset, cfg: BaselineFeatureConfig, progress: bool) -> dict:
    """Per stimulus segment: eGeMAPS and MFCC (from the clips' audio), visual stats, VGG19, pooled frames."""
    manifest = prepared.manifest
    pcfg = from_dict(PrepareConfig, manifest["config"])
    stim = prepared.stimuli
    keys = stim.keys
    m = len(keys)
    sr = int(pcfg.audio.sample_rate)
    seg_len = int(round(pcfg.segment_s * sr))
    smile = _egemaps_extractor()
    egemaps = np.zeros((m, len(smile.feature_names)), np.float32)
    mfcc = np.zeros((m, n_mfcc_steps(pcfg.segment_s, sr, cfg), cfg.n_mfcc), np.float32)
    stimuli_dir = input_folders(prepared.path, manifest)[1]
    groups = keys.groupby("stimulus", sort=False).groups.items()
    for stimulus, idx in tqdm(groups, desc="baseline audio", unit="clip", disable=not progress, leave=False):
        idx = idx.to_numpy()
        if not stim.audio_present[idx].any():
            continue
        clip = find_clip(stimuli_dir, str(stimulus))
        if clip is None:
            raise InputFileError(
                stimuli_dir or "stimuli", f"clip of stimulus '{stimulus}' is gone since prepare"
            )
        wave = read_audio(clip, sr)
        if wave is None:
            raise InputFileError(clip, "has no audio stream any more (it had one at prepare time)")
        first = np.rint(keys["start_s"].to_numpy(np.float64)[idx] * sr).astype(np.int64)
        padded = np.zeros(max(len(wave), int(first.max()) + seg_len), np.float32)
        padded[: len(wave)] = wave
        segments = padded[first[:, None] + np.arange(seg_len)]
        egemaps[idx] = egemaps_functionals(segments, sr, smile)
        mfcc[idx] = mfcc_sequences(segments, sr, cfg)
    video = stim.video
    visual = visual_statistics(video) if m else np.zeros((0, len(VISUAL_NAMES)), np.float32)
    if m and (video.shape[-1] >= 32 or cfg.vgg_size is not None):
        vgg = vgg19_frame_features(video, cfg.vgg19_weights, cfg.vgg_size)
    else:
        if m:
            log.warning("frames of %d px are too small for VGG19: its features are zeros", video.shape[-1])
        vgg = np.zeros((m, video.shape[1], VGG_DIM), np.float32)
    frames = (
        pooled_frames(video, cfg.frame_pool)
        if m
        else np.zeros((0, video.shape[1], 3, cfg.frame_pool, cfg.frame_pool))
    )
    return {
        "egemaps": egemaps,
        "mfcc": mfcc,
        "visual": visual,
        "vgg": vgg,
        "frames": frames,
        "egemaps_names": list(smile.feature_names),
    }


# ---------------------------------------------------------------- cache


def cache_key(prepared: PreparedDataset, cfg: BaselineFeatureConfig) -> dict:
    """What the cached features depend on (its hash names the cache folder)."""
    weights = cfg.vgg19_weights
    return {
        "version": CACHE_VERSION,
        "config": to_dict(cfg),
        "dataset_id": prepared.manifest.get("dataset_id"),
        "files": prepared.manifest.get("files"),
        "vgg19_weights_sha256": shards.sha256_file(Path(weights)) if weights else None,
    }


def cache_folder(prepared: PreparedDataset, cfg: BaselineFeatureConfig, root: Path | None = None) -> Path:
    """``<root or DATASET/cache>/baselines-<12 hex>``."""
    base = Path(root) if root is not None else Path(prepared.path) / "cache"
    return base / f"baselines-{config_hash(cache_key(prepared, cfg))}"


def _write_cache(folder: Path, key: dict, prepared: PreparedDataset, eeg: dict, stim: dict) -> None:
    rows = prepared.rows
    eeg_table = pa.table(
        {
            "subject": pa.array(rows["subject"].astype(str).to_numpy(), pa.string()),
            "trial": pa.array(rows["trial"].to_numpy(np.int64), pa.int32()),
            "segment": pa.array(rows["segment"].to_numpy(np.int64), pa.int32()),
            "eeg_wpd": shards.fixed_list_array(eeg["eeg_wpd"], pa.float32()),
            "eeg_raw": shards.fixed_list_array(eeg["eeg_raw"], pa.float32()),
        }
    )
    eeg_shapes = {k: eeg[k].shape[1:] for k in ("eeg_wpd", "eeg_raw")}
    shards.write_table(
        eeg_table.replace_schema_metadata(shards.shapes_metadata(eeg_shapes)), folder / "eeg.parquet"
    )
    keys = prepared.stimuli.keys
    arrays = ("egemaps", "mfcc", "visual", "vgg", "frames")
    stim_table = pa.table(
        {
            "stimulus": pa.array(keys["stimulus"].astype(str).to_numpy(), pa.string()),
            "segment": pa.array(keys["segment"].to_numpy(np.int64), pa.int32()),
            **{name: shards.fixed_list_array(stim[name].astype(np.float32), pa.float32()) for name in arrays},
        }
    )
    meta = shards.shapes_metadata({k: stim[k].shape[1:] for k in arrays}, {"egemaps": stim["egemaps_names"]})
    shards.write_table(stim_table.replace_schema_metadata(meta), folder / "stimuli.parquet")
    shards.write_json({"key": key, "egemaps_names": stim["egemaps_names"]}, folder / "meta.json")


def _read_cache(folder: Path, prepared: PreparedDataset) -> tuple[dict, dict] | None:
    """The cached arrays aligned with the dataset's rows, or None when the cache is incomplete."""
    if not (folder / "meta.json").is_file():
        return None
    eeg_table = shards.read_table(folder / "eeg.parquet")
    stim_table = shards.read_table(folder / "stimuli.parquet")
    rows = prepared.rows
    cached = pd.MultiIndex.from_arrays(
        [
            eeg_table.column(c).to_numpy(zero_copy_only=False).astype(str)
            for c in ("subject", "trial", "segment")
        ]
    )
    wanted = pd.MultiIndex.from_arrays(
        [rows[c].astype(str).to_numpy() for c in ("subject", "trial", "segment")]
    )
    where = cached.get_indexer(wanted)
    if (where < 0).any():
        return None
    eeg = {name: shards.array_column(eeg_table, name)[where] for name in ("eeg_wpd", "eeg_raw")}
    keys = stim_table.select(["stimulus", "segment"]).to_pandas()
    srow = lookup_rows(keys, prepared.stimuli.keys) if len(prepared.stimuli) else np.zeros(0, np.int64)
    if (srow < 0).any():
        return None
    stim = {
        n: shards.array_column(stim_table, n)[srow] for n in ("egemaps", "mfcc", "visual", "vgg", "frames")
    }
    stim["egemaps_names"] = shards.read_info(stim_table.schema)["egemaps"]
    return eeg, stim


def build_features(
    prepared: PreparedDataset,
    cache_dir: Path | None = None,
    progress: bool = True,
    config: BaselineFeatureConfig | dict | None = None,
) -> BaselineFeatures:
    """The baselines' inputs for a prepared dataset, from its cache or computed and cached.

    cache_dir: where the ``baselines-<hash>`` folder goes (default ``DATASET/cache``).
    config: a :class:`BaselineFeatureConfig` or a dict of its fields.
    Raises InputFileError when the original recordings or clips are gone or changed.
    """
    cfg = (
        config
        if isinstance(config, BaselineFeatureConfig)
        else from_dict(BaselineFeatureConfig, config or {})
    )
    folder = cache_folder(prepared, cfg, cache_dir)
    cached = _read_cache(folder, prepared)
    if cached is None:
        wpd, raw = _eeg_arrays(prepared, cfg, progress)
        eeg = {"eeg_wpd": wpd, "eeg_raw": raw}
        stim = _stimulus_arrays(prepared, cfg, progress)
        _write_cache(folder, cache_key(prepared, cfg), prepared, eeg, stim)
    else:
        eeg, stim = cached
    s = prepared.stimuli
    return BaselineFeatures(
        keys=prepared.rows[["subject", "trial", "segment", "stimulus"]].reset_index(drop=True),
        eeg_psd=prepared.eeg,
        eeg_wpd=eeg["eeg_wpd"],
        eeg_raw=eeg["eeg_raw"],
        stim_row=np.asarray(prepared.stimulus_index, np.int64),
        audio_present=np.asarray(s.audio_present, bool),
        video_present=np.asarray(s.video_present, bool),
        egemaps=stim["egemaps"],
        mfcc=stim["mfcc"],
        visual=stim["visual"],
        vgg=stim["vgg"],
        frames=stim["frames"],
        names={"egemaps": list(stim["egemaps_names"]), "visual": list(VISUAL_NAMES)},
        raw_sfreq=cfg.raw_sfreq,
    )
