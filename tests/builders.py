"""Builders of the small real datasets the tests share (plain functions; fixtures in conftest.py).

Each writes real files (mp4, EDF, manifest CSV) with :mod:`mercl.data.synth` /
:mod:`mercl.data.synth_sources` and, where it returns a prepared dataset, runs the real
``mercl prepare`` on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mercl.cli import main as mercl_main
from mercl.data.prepare import PrepareConfig, load_prepare_config, prepare
from mercl.data.summary import find_dataset_dir
from mercl.data.synth import SynthConfig, synthesize
from mercl.data.synth_sources import write_mp4, write_recording
from mercl.training.config import load_train_config

SFREQ = 128.0
CHANNELS = ["Fp1", "Fz", "Cz", "Pz"]
TRIAL_S = 12.0  # -> 5 segments of 4 s every 2 s


def build_demo_dataset(base: Path) -> Path:
    """A 4-subject x 8-clip x 12 s synthetic study prepared with 32 px frames (160 segments)."""
    root = base / "mercl-demo-small"
    done = root / "DATASET"
    if done.is_file():
        return Path(done.read_text())
    raw, shards = root / "raw", root / "shards"
    assert mercl_main(["synth", str(raw), "--subjects", "4", "--stimuli", "8", "--duration", "12",
                       "--video-size", "32", "--fps", "4"]) == 0
    assert mercl_main(["prepare", str(raw), "--source", "manifest", "-o", str(shards), "--video-size", "32",
                       "--workers", "1", "--no-progress"]) == 0
    dataset = find_dataset_dir(shards)
    done.write_text(str(dataset))
    return dataset


def tiny(**overrides):
    return load_train_config("tiny", overrides)


def make_tiny_dataset(root: Path, subjects: int = 4, stimuli: int = 4, duration: float = 12.0) -> Path:
    """A real prepared dataset: `mercl synth` (mp4 + EDF + ratings) then `mercl prepare` (32 px, 1 fps)."""
    raw = root / "raw"
    synthesize(raw, SynthConfig(subjects=subjects, stimuli=stimuli, duration=duration, video_size=32, fps=4))
    config = load_prepare_config(None, {"video.size": 32, "video.fps": 1.0})
    return prepare(raw, "manifest", root / "shards", config=config, workers=1, progress=False).dataset_dir


def make_manifest_raw(root: Path, subjects=("s01", "s02"), short_clip: str | None = None) -> Path:
    """Manifest dataset: per subject one EDF of 3 trials x 12 s, clips A (audio) and B (no audio),
    stimulus C has no clip. Ratings vary per subject and trial."""
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for k, subject in enumerate(subjects):
        n = int(3 * TRIAL_S * SFREQ)
        t = np.arange(n) / SFREQ
        eeg = 20e-6 * np.sin(2 * np.pi * (6 + 3 * np.arange(4))[:, None] * t) + 5e-6 * rng.standard_normal(
            (4, n)
        )
        write_recording(raw / f"{subject}.edf", eeg, SFREQ, CHANNELS)
        for trial, stimulus in enumerate("ABC"):
            rows.append(
                {
                    "subject": subject,
                    "trial": trial,
                    "stimulus": stimulus,
                    "eeg": f"{subject}.edf",
                    "onset": trial * TRIAL_S,
                    "duration": TRIAL_S,
                    "valence": 2.0 + 3 * trial + k,
                    "arousal": 8.0 - 2 * trial,
                    "dominance": 5.0,
                    "liking": 5.0,
                }
            )
    pd.DataFrame(rows).to_csv(raw / "manifest.csv", index=False)
    write_mp4(raw / "stimuli" / "A.mp4", 6.0 if short_clip == "A" else TRIAL_S, audio=True)
    write_mp4(raw / "stimuli" / "B.mp4", TRIAL_S, audio=False)
    return raw


def small_config(**overrides) -> PrepareConfig:
    return load_prepare_config(None, {"video.size": 32, **overrides})
