"""Segment features: EEG band-power sequences, stimulus log-Mel audio and video frames.

Segments are defined in clip time (docs/CONTRACTS.md): segment ``k`` covers clip time
``[k*hop, k*hop + seg)`` and EEG time ``[k*hop + lag, ...)``. The prepare pipeline
computes the start times and calls these functions once per trial (EEG) or per clip
(audio, video) with all of that trial's / clip's segment starts.
"""

from mercl.data.features.audio import AudioFeatureConfig, audio_segment_features, n_audio_frames, read_audio
from mercl.data.features.eeg import DEFAULT_BANDS, EegFeatureConfig, eeg_trial_features, n_subwindows
from mercl.data.features.video import (
    ClipInfo,
    VideoFeatureConfig,
    n_video_frames,
    probe_clip,
    read_video_frames,
    video_segment_frames,
)

__all__ = [
    "DEFAULT_BANDS",
    "AudioFeatureConfig",
    "ClipInfo",
    "EegFeatureConfig",
    "VideoFeatureConfig",
    "audio_segment_features",
    "eeg_trial_features",
    "n_audio_frames",
    "n_subwindows",
    "n_video_frames",
    "probe_clip",
    "read_audio",
    "read_video_frames",
    "video_segment_frames",
]
