"""Stimulus video: probe a clip, sample frames at a fixed rate, resize for the ViT.

Frames are decoded sequentially with PyAV (FFmpeg threads on); for each sample time
``t_i = i / fps`` (``t_i`` < the video's duration, and < ``stop_s`` when given) the
decoded frame whose timestamp is nearest is kept. Only kept frames are converted, straight
from the decoder's YUV to ``size x size`` RGB by FFmpeg's scaler (bicubic, accurate
rounding, full chroma: within a few levels of converting to full-size RGB and resizing with
PIL, at ~1/15 of the time), so no full-resolution RGB image is ever made and at most two
decoded frames are alive; decoding stops after the last sample time.

Limits (one-line refusals): ``size`` <= MAX_SIZE, ``fps`` <= MAX_FPS, and a clip whose
frames are wider or taller than MAX_FRAME_SIDE or hold more than MAX_FRAME_PIXELS pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mercl.config import FieldProblem
from mercl.errors import InputFileError

_EPS = 1e-6
MAX_SIZE = 1024  # frame side after resizing (the ViT takes 224)
MAX_FPS = 120.0  # frames sampled per clip second
MAX_FRAME_SIDE = 16384  # a decoded frame's width or height (8K video is 7680 x 4320)
MAX_FRAME_PIXELS = 8192 * 8192
SCALE_FLAGS = "bicubic+accurate_rnd+full_chroma_int+full_chroma_inp"


@dataclass
class VideoFeatureConfig:
    """How stimulus video becomes frame sequences.

    fps: frames sampled per second of clip (``T_v = round(seg_s * fps)`` per segment).
    size: frames are resized to ``size x size`` RGB (the ViT input).
    """

    fps: float = 1.0
    size: int = 224

    def validate(self) -> None:
        if self.fps <= 0:
            raise FieldProblem("fps", f"must be > 0, got {self.fps}")
        if self.fps > MAX_FPS:
            raise FieldProblem("fps", f"must be <= {MAX_FPS:g} frames/s, got {self.fps}")
        if self.size < 8:
            raise FieldProblem("size", f"must be >= 8 pixels, got {self.size}")
        if self.size > MAX_SIZE:
            raise FieldProblem("size", f"must be <= {MAX_SIZE} pixels, got {self.size}")


@dataclass
class ClipInfo:
    """What a stimulus clip holds: duration in seconds, streams, video rate and size."""

    path: Path
    duration: float
    has_video: bool
    has_audio: bool
    fps: float | None
    width: int
    height: int


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _stream_duration(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def check_frame_size(path: Path, width: int, height: int) -> None:
    """Refuse a video stream whose frames are absurdly large (see the module's limits)."""
    if width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE or width * height > MAX_FRAME_PIXELS:
        raise InputFileError(
            path,
            f"video frames of {width} x {height} pixels are too large (at most {MAX_FRAME_SIDE} per side "
            f"and {MAX_FRAME_PIXELS:,} pixels)",
        )


def probe_clip(path: Path) -> ClipInfo:
    """Streams, duration, frame rate and size of a clip (no decoding).

    Raises InputFileError when the file is missing, unreadable, truncated or holds
    neither an audio nor a video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such file")
    try:
        with av.open(str(path)) as container:
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            if video is None and audio is None:
                raise InputFileError(path, "holds no audio or video stream")
            for stream in (video, audio):
                if stream is not None and stream.codec_context is None:
                    raise InputFileError(path, f"its {stream.type} stream has no decoder (unknown codec or a damaged file)")
            durations = [_stream_duration(s) for s in (video, audio) if s is not None]
            durations = [d for d in durations if d]
            if container.duration is not None:
                durations.append(container.duration / av.time_base)
            if not durations:
                raise InputFileError(path, "has no known duration")
            rate = (video.average_rate or video.guessed_rate) if video is not None else None
            if video is not None:
                check_frame_size(path, video.codec_context.width, video.codec_context.height)
            return ClipInfo(
                path=path,
                duration=max(durations),
                has_video=video is not None,
                has_audio=audio is not None,
                fps=float(rate) if rate else None,
                width=video.codec_context.width if video is not None else 0,
                height=video.codec_context.height if video is not None else 0,
            )
    except (av.FFmpegError, OSError) as exc:
        raise InputFileError(path, f"cannot read clip ({_one_line(exc)})") from None


class _Scaler:
    """Decoded frames -> (3, size, size) uint8 RGB by FFmpeg's scaler (a filter graph rebuilt
    when the frames' size or pixel format changes)."""

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size
        self.key: tuple | None = None
        self.graph = self.source = self.sink = None

    def _build(self, frame: av.VideoFrame) -> None:
        check_frame_size(self.path, frame.width, frame.height)
        graph = av.filter.Graph()
        source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                  time_base=frame.time_base or Fraction(1, 1000))
        scale = graph.add("scale", f"{self.size}:{self.size}:flags={SCALE_FLAGS}")
        rgb = graph.add("format", "rgb24")
        sink = graph.add("buffersink")
        source.link_to(scale)
        scale.link_to(rgb)
        rgb.link_to(sink)
        graph.configure()
        self.graph, self.source, self.sink = graph, source, sink
        self.key = (frame.width, frame.height, frame.format.name)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.key != (frame.width, frame.height, frame.format.name):
            self._build(frame)
        self.source.push(frame)
        return self.sink.pull().to_ndarray().transpose(2, 0, 1)


def read_video_frames(
    path: Path, cfg: VideoFeatureConfig, stop_s: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Frames sampled every ``1 / cfg.fps`` seconds, resized.

    stop_s: sample only times before this (the end of the last segment); decoding stops
        there. None = the whole clip.

    Returns:
        frames: (F, 3, size, size) uint8 RGB, the decoded frame nearest each sample time.
        times: (F,) float64 sample times ``i / fps`` in clip seconds.

    Raises InputFileError when the file cannot be opened/decoded or has no video stream.
    """
    path = Path(path)
    empty = np.zeros((0, 3, cfg.size, cfg.size), np.uint8), np.zeros(0)
    kept: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputFileError(path, "holds no video stream")
            stream = container.streams.video[0]
            check_frame_size(path, stream.codec_context.width, stream.codec_context.height)
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            duration = _stream_duration(stream) or (container.duration or 0) / av.time_base
            t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            n_targets = int(np.ceil(duration * cfg.fps - _EPS)) if duration > 0 else None
            if stop_s is not None:
                wanted = max(0, int(np.ceil(stop_s * cfg.fps - _EPS)))
                n_targets = wanted if n_targets is None else min(n_targets, wanted)
            if n_targets == 0:
                return empty
            resize = _Scaler(path, cfg.size)
            prev, prev_t, prev_img = None, None, None
            index = 0
            for count, frame in enumerate(container.decode(stream)):
                t = frame.time - t0 if frame.time is not None else count / rate
                img = None
                while (n_targets is None or len(kept) < n_targets) and index / cfg.fps <= t + _EPS:
                    target = index / cfg.fps
                    if prev is not None and target - prev_t < t - target:
                        prev_img = prev_img if prev_img is not None else resize(prev)
                        kept.append(prev_img)
                    else:
                        img = img if img is not None else resize(frame)
                        kept.append(img)
                    index += 1
                if n_targets is not None and len(kept) >= n_targets:
                    break
                prev, prev_t, prev_img = frame, t, img
            # sample times after the last frame's timestamp but within its display time
            if prev is not None:
                last_img = None
                while (
                    n_targets is None or len(kept) < n_targets
                ) and index / cfg.fps < prev_t + 1 / rate - _EPS:
                    last_img = last_img if last_img is not None else resize(prev)
                    kept.append(last_img)
                    index += 1
    except (av.FFmpegError, OSError) as exc:
        raise InputFileError(path, f"cannot decode video ({_one_line(exc)})") from None
    if not kept:
        return empty
    return np.stack(kept), np.arange(len(kept)) / cfg.fps


def n_video_frames(seg_s: float, cfg: VideoFeatureConfig) -> int:
    """``T_v``: sampled frames per segment of ``seg_s`` seconds."""
    n = int(round(seg_s * cfg.fps))
    if n < 1:
        raise ValueError(f"video: a {seg_s} s segment at {cfg.fps} frames/s holds no frame")
    return n


def video_segment_frames(
    frames: np.ndarray, times: np.ndarray, starts_s: np.ndarray, seg_s: float, cfg: VideoFeatureConfig
) -> np.ndarray:
    """The sampled frames of each segment.

    Args:
        frames: (F, 3, H, W) uint8 from :func:`read_video_frames`.
        times: (F,) increasing sample times in seconds.
        starts_s: (N,) segment start times in clip seconds.

    Returns:
        (N, T_v, 3, H, W) uint8: the frames whose time lies in ``[start, start + seg_s)``,
        in order; slots with no frame (past the clip's end) are zeros.
    """
    starts_s = np.asarray(starts_s, dtype=np.float64).reshape(-1)
    times = np.asarray(times, dtype=np.float64)
    n_slots = n_video_frames(seg_s, cfg)
    out = np.zeros((len(starts_s), n_slots, *frames.shape[1:]), dtype=np.uint8)
    if len(times) == 0 or len(starts_s) == 0:
        return out
    first = np.searchsorted(times, starts_s - _EPS, side="left")
    index = first[:, None] + np.arange(n_slots)[None, :]  # (N, T_v)
    clipped = np.minimum(index, len(times) - 1)
    valid = (index < len(times)) & (times[clipped] < (starts_s + seg_s)[:, None] - _EPS)
    out[valid] = frames[clipped[valid]]
    return out
