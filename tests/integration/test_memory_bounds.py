"""Memory follows the rows, not the files (issue 21, section 2).

Real files throughout: EDF recordings written with MNE's exporter, mp4/mkv clips written
with PyAV. Peak memory is the child process's own high-water mark (``VmHWM``), read as it
exits, so the test process's size does not enter it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import mne
import numpy as np
import pandas as pd
import pytest
import scipy.signal
import torch
from builders import make_manifest_raw, small_config
from PIL import Image

from mercl.cli import main as mercl_main
from mercl.data.features.audio import AudioFeatureConfig, audio_segment_features, audio_stop_s, read_audio
from mercl.data.features.video import VideoFeatureConfig, probe_clip, read_video_frames
from mercl.data.prepare import prepare
from mercl.data.reader import SegmentDataset, ShardedArray, load_dataset
from mercl.data.sources import SourceOptions
from mercl.data.sources.manifest import MAX_RECORDINGS, MAX_ROWS, discover
from mercl.data.synth import write_clip
from mercl.data.synth_sources import write_recording
from mercl.errors import InputFileError

CHANNELS, SFREQ = 32, 512.0
ROW_ONSET, ROW_S = 60.0, 12.0
SHORT_S, LONG_S = 180.0, 1800.0
# Reading the whole 30 min file would add (1800 - 180) s * 512 Hz * 32 ch * 8 B = 212 MB
# (more when resampled); one row's window costs the same in both files.
PEAK_MARGIN_MB = 40

PEAK_OF_ONE_ROW = """
import sys
from pathlib import Path
from mercl.data.sources import SourceOptions
from mercl.data.sources.manifest import discover
for rate in (None, 128.0):
    (unit,) = discover(Path(sys.argv[1]), SourceOptions(resample=rate))
    (trial,) = unit.load()
    assert trial.eeg.shape == (32, round(12 * (rate or 512))), trial.eeg.shape
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]))
"""


def one_row_manifest(folder: Path, seconds: float, onset: float = ROW_ONSET, duration: float = ROW_S) -> Path:
    """``folder/manifest.csv`` with one row of ``folder/rec.edf`` (32 ch, 512 Hz noise, ``seconds`` long)."""
    rng = np.random.default_rng(int(seconds))
    eeg = rng.standard_normal((CHANNELS, int(seconds * SFREQ))) * 20e-6
    write_recording(folder / "rec.edf", eeg, SFREQ, [f"EEG{i:02d}" for i in range(CHANNELS)])
    (folder / "manifest.csv").write_text(
        f"subject,trial,stimulus,eeg,onset,duration,valence\ns01,0,none,rec.edf,{onset},{duration},5\n"
    )
    return folder


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("memory")
    return {name: one_row_manifest(base / name, seconds) for name, seconds in (("short", SHORT_S), ("long", LONG_S))}


def peak_rss_mb(raw: Path) -> float:
    done = subprocess.run([sys.executable, "-c", PEAK_OF_ONE_ROW, str(raw)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) / 1024


# ---------------------------------------------------------------- EEG: only the row's window


def test_one_row_of_a_long_recording_peaks_like_one_of_a_short_one(recordings):
    short, long = peak_rss_mb(recordings["short"]), peak_rss_mb(recordings["long"])
    assert long - short < PEAK_MARGIN_MB, f"peak RSS {long:.0f} MB for the 30 min file vs {short:.0f} MB for 3 min"


def test_the_window_holds_the_same_samples_as_the_whole_file(recordings):
    raw = recordings["short"]
    whole = mne.io.read_raw(raw / "rec.edf", preload=True, verbose="error").get_data()
    a, b = int(ROW_ONSET * SFREQ), int((ROW_ONSET + ROW_S) * SFREQ)
    (unit,) = discover(raw, SourceOptions())
    (trial,) = unit.load()
    np.testing.assert_array_equal(trial.eeg, whole[:, a:b])

    full = mne.filter.resample(whole, up=128.0 / SFREQ, down=1.0, axis=-1, verbose="error")
    (unit,) = discover(raw, SourceOptions(resample=128.0))
    (trial,) = unit.load()
    assert trial.sfreq == 128.0
    want = full[:, int(ROW_ONSET * 128) : int((ROW_ONSET + ROW_S) * 128)]
    # white noise up to the new Nyquist is the worst case for the FFT resampler's edges: they
    # differ by ~1-3 % RMS, nearly all of it near the cut-off, above the EEG bands
    assert relative_rms(trial.eeg - want, want) < 0.05
    assert relative_rms(trial.eeg - want, want, fs=128.0, below=45.0) < 0.005


def relative_rms(error: np.ndarray, signal: np.ndarray, fs: float = 0.0, below: float | None = None) -> float:
    """RMS of ``error`` over RMS of ``signal``, both low-passed to ``below`` Hz if given."""
    if below is not None:
        sos = scipy.signal.butter(8, below, fs=fs, output="sos")
        error, signal = scipy.signal.sosfiltfilt(sos, error), scipy.signal.sosfiltfilt(sos, signal)
    return float(np.sqrt(np.mean(error**2) / np.mean(signal**2)))


def test_a_row_reaching_the_end_of_the_file_resamples_to_the_same_length(tmp_path):
    raw = one_row_manifest(tmp_path, 30.0, onset=18.0, duration=12.0)
    whole = mne.io.read_raw(raw / "rec.edf", preload=True, verbose="error").get_data()
    for rate, in_band in ((128.0, 0.005), (100.0, 0.05)):
        full = mne.filter.resample(whole, up=rate / SFREQ, down=1.0, axis=-1, verbose="error")
        (unit,) = discover(raw, SourceOptions(resample=rate))  # 512 -> 100 Hz: 128 old samples are 25 new
        (trial,) = unit.load()
        want = full[:, int(18 * rate) :]
        assert trial.eeg.shape == want.shape == (CHANNELS, int(12 * rate))
        # a non-integer ratio agrees less tightly (~1-5 % in band, measured on white noise):
        # MNE's FFT resampler rounds each call's padded length to whole output samples
        assert relative_rms(trial.eeg - want, want, fs=rate, below=0.4 * rate) < in_band


# ---------------------------------------------------------------- video: decoded at the target size


def textured_frames(n: int, height: int = 240, width: int = 320) -> np.ndarray:
    """(n, H, W, 3) uint8: moving colour gradients and a checkerboard (detail for the scaler)."""
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (x + 7 * i) % 256
        frames[i, ..., 1] = (y * 255 // height + 13 * i) % 256
        frames[i, ..., 2] = ((x // 16 + y // 16) % 2) * 200 + 20
    return frames


def full_size_reference(path: Path, cfg: VideoFeatureConfig, times: np.ndarray) -> np.ndarray:
    """Today's path spelled out: every frame decoded at full size to RGB, the one nearest each
    sample time (ties to the later) resized with PIL's bicubic filter."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(frame.time, frame.to_image()) for frame in container.decode(stream)]
    stamps = np.array([t for t, _ in decoded])
    kept = []
    for t in times:
        nearest = int(np.argmin(np.abs(stamps - t) - 1e-9 * (stamps >= t)))
        image = decoded[nearest][1].resize((cfg.size, cfg.size), Image.Resampling.BICUBIC)
        kept.append(np.asarray(image).transpose(2, 0, 1))
    return np.stack(kept)


def test_video_decoded_at_target_size_matches_the_full_size_path(tmp_path):
    clip = tmp_path / "texture.mp4"
    write_clip(clip, textured_frames(40), 10, None, 16000)
    for cfg in (VideoFeatureConfig(fps=3.0, size=64), VideoFeatureConfig(fps=1.0, size=224)):
        frames, times = read_video_frames(clip, cfg)
        assert frames.shape == (len(times), 3, cfg.size, cfg.size)
        diff = np.abs(frames.astype(int) - full_size_reference(clip, cfg, times))
        assert diff.mean() < 3 and np.percentile(diff, 99) < 24, (cfg, diff.mean(), np.percentile(diff, 99))

    # stop_s keeps the first samples only, the same frames
    cfg = VideoFeatureConfig(fps=3.0, size=64)
    frames, times = read_video_frames(clip, cfg)
    early, early_times = read_video_frames(clip, cfg, stop_s=1.5)
    np.testing.assert_allclose(early_times, np.arange(5) / 3)
    np.testing.assert_array_equal(early, frames[:5])


# ---------------------------------------------------------------- audio: only the span


def test_audio_decoded_to_the_span_equals_the_whole_track_cut(tmp_path):
    clip = tmp_path / "tone.mp4"
    t = np.arange(int(9 * 44100)) / 44100
    sound = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2).astype(np.float32)
    write_clip(clip, textured_frames(9 * 4, 32, 32), 4, sound, 44100)
    whole = read_audio(clip, 16000)
    for stop in (0.0, 0.25, 3.0, 5.5):
        part = read_audio(clip, 16000, stop_s=stop)
        assert len(part) == int(np.ceil(stop * 16000))
        np.testing.assert_array_equal(part, whole[: len(part)])

    cfg = AudioFeatureConfig()
    starts = np.arange(3) * 2.0  # segments [0, 4), [2, 6), [4, 8) of a 9 s clip
    span = audio_stop_s(starts, 4.0, 16000, cfg)
    assert span == pytest.approx(8.0)
    cut = read_audio(clip, 16000, stop_s=span)
    for got, want in zip(audio_segment_features(cut, 16000, starts, 4.0, cfg),
                         audio_segment_features(whole, 16000, starts, 4.0, cfg), strict=True):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- refusals with limits


def one_line_error(capsys, argv: list[str]) -> str:
    assert mercl_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mercl: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_absurd_frame_size_and_near_one_overlap_are_one_line_refusals(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "manifest.csv").write_text("subject,trial,stimulus,eeg,valence\ns01,0,none,rec.edf,5\n")
    base = ["prepare", str(raw), "--source", "manifest", "-o", str(tmp_path / "out"), "--no-progress"]
    assert "<= 1024 pixels" in one_line_error(capsys, [*base, "--video-size", "100000"])
    assert "<= 120 frames/s" in one_line_error(capsys, [*base, "--video-fps", "100000"])
    err = one_line_error(capsys, [*base, "--overlap", "0.99999"])
    assert "overlap" in err and "0.99" in err

    # a clip whose frames are wider than any video: refused on probing and on decoding
    wide = tmp_path / "wide.mkv"
    with av.open(str(wide), "w") as container:
        stream = container.add_stream("ffv1", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16400, 16, "gray"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16400), np.uint8), format="gray")
            frame.pts, frame.time_base = i, Fraction(1, 1)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    for read in (probe_clip, lambda p: read_video_frames(p, VideoFeatureConfig())):
        with pytest.raises(InputFileError) as info:
            read(wide)
        message = str(info.value)
        assert message.startswith(str(wide)) and "16400 x 16" in message and "16384 per side" in message
        assert "\n" not in message


def test_manifests_of_too_many_rows_or_files_are_one_line_refusals(tmp_path):
    header = "subject,trial,stimulus,eeg,valence\n"
    rows = tmp_path / "rows.csv"
    rows.write_text(header + "".join(f"s01,{i},none,rec.edf,5\n" for i in range(MAX_ROWS + 1)))
    with pytest.raises(InputFileError, match=f"more than {MAX_ROWS:,} rows") as info:
        discover(rows, SourceOptions())
    assert "\n" not in str(info.value)

    files = tmp_path / "files.csv"
    files.write_text(header + "".join(f"s{i},0,none,rec{i}.edf,5\n" for i in range(MAX_RECORDINGS + 1)))
    with pytest.raises(InputFileError, match=f"more than {MAX_RECORDINGS:,}") as info:
        discover(files, SourceOptions())  # refused before looking up any of the (missing) files
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- bookkeeping: one line per shard


def test_progress_is_appended_one_line_per_shard_and_a_cut_line_rebuilds_that_shard(tmp_path):
    raw = make_manifest_raw(tmp_path, subjects=("s01", "s02"))
    first = prepare(raw, "manifest", tmp_path / "out", config=small_config(), workers=1, progress=False)
    progress = first.dataset_dir / "progress.json"
    lines = progress.read_text().splitlines()
    assert len(lines) == len(first.built) == 4  # s01, s02, A, B: one appended line each
    entries = [json.loads(line) for line in lines]
    assert all(len(entry) == 1 for entry in entries)
    assert {rel for entry in entries for rel in entry} == set(first.manifest["files"])

    # a run killed while appending: the last line is cut short and no manifest was written
    progress.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    (first.dataset_dir / "manifest.json").unlink()
    again = prepare(raw, "manifest", tmp_path / "out", config=small_config(), workers=1, progress=False)
    assert again.built == [next(iter(entries[-1]))] and len(again.skipped) == 3
    assert again.manifest["files"] == first.manifest["files"]
    assert [json.loads(line) for line in progress.read_text().splitlines()] == entries


# ---------------------------------------------------------------- load_dataset: streamed for predict


def test_a_streamed_dataset_serves_the_same_items_holding_two_shards_at_most(demo_dataset):
    eager = load_dataset(demo_dataset)
    streamed = load_dataset(demo_dataset, stream=True)
    arrays = [(streamed.eeg, eager.eeg), (streamed.stimuli.audio, eager.stimuli.audio),
              (streamed.stimuli.video, eager.stimuli.video)]
    for lazy, whole in arrays:
        assert isinstance(lazy, ShardedArray) and lazy.shape == whole.shape and lazy.dtype == whole.dtype
        assert len(lazy.paths) > 2  # more shards than it keeps
    pd.testing.assert_frame_equal(streamed.rows, eager.rows)

    rows = np.arange(len(eager))
    for got, want in zip(SegmentDataset(streamed, rows, "quadrant4"), SegmentDataset(eager, rows, "quadrant4"),
                         strict=True):
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
        for lazy, _ in arrays:
            assert len(lazy._cache) <= lazy.keep

    rng = np.random.default_rng(0)
    for lazy, whole in arrays:
        pick = rng.integers(0, len(whole), 50)
        np.testing.assert_array_equal(lazy[pick], whole[pick])
        np.testing.assert_array_equal(lazy[-1], whole[-1])
        np.testing.assert_array_equal(lazy[3:40:7], whole[3:40:7])
        np.testing.assert_array_equal(np.asarray(lazy), whole)
        with pytest.raises(IndexError):
            lazy[len(whole)]
