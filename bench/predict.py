"""Benchmark ``mercl predict`` on DEAP-sized input beside ``mercl prepare`` alone on the same input.

Writes DEAP-layout inputs (``sNN.dat``: 40 trials x 40 channels x 8064 samples, float64, the
real release's Python-2 pickles, via ``bench/prepare.py``) and, for the run with clips, 40
stimulus clips ``01.mp4`` .. ``40.mp4`` of 62 s (video + AAC audio, PyAV). Then, for each mode

* ``eeg``: EEG only (no clips; model trained with ``--modalities e``)
* ``clips``: EEG + the clips (``--stimuli``; model with video, audio and EEG)

it times, each in a fresh ``python -m mercl.cli`` process (imports included, as a user sees it):

1. ``mercl prepare RAW --source deap [--stimuli DIR] -o A`` (features only);
2. ``mercl train A`` with the ``tiny`` config for one epoch per stage (not timed: it only
   provides a model file whose preprocessing is A's);
3. ``mercl predict MODEL RAW --source deap [--stimuli DIR] -o B`` on a fresh B: the same
   preparation (B/prepared) plus loading the model, the backbone features (with clips) and
   the model itself on every segment;

and prints segments/s of both and the model's share of ``predict``'s time ((predict - prepare)
/ predict). Run it on an otherwise idle machine: timings on shared cores are distorted.

Usage: ``.venv/bin/python bench/predict.py [--subjects 2] [--device auto] [--video-size 64]
[--modes eeg,clips] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from prepare import N_TRIALS, SEGMENTS_PER_TRIAL, write_deap_inputs  # bench/prepare.py, beside this script

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

CLIP_SECONDS = 62.0  # DEAP trials are 60 s after the baseline; a clip must cover them


def write_clips(folder: Path, n_clips: int = N_TRIALS, size: int = 64, fps: int = 4, rate: int = 16000) -> Path:
    """``folder/01.mp4`` .. : a colour per clip, a moving bar, a tone whose pitch follows the clip number."""
    from mercl.data.synth import write_clip

    folder.mkdir(parents=True, exist_ok=True)
    n_frames = int(CLIP_SECONDS * fps)
    t = np.arange(int(CLIP_SECONDS * rate)) / rate
    for k in range(1, n_clips + 1):
        frames = np.empty((n_frames, size, size, 3), np.uint8)
        frames[:] = np.array([(37 * k) % 256, (91 * k) % 256, (53 * k) % 256], np.uint8)
        for i in range(n_frames):
            frames[i, :, (i * 2) % size] = 255
        audio = (0.1 * np.sin(2 * np.pi * (200 + 10 * k) * t)).astype(np.float32)
        write_clip(folder / f"{k:02d}.mp4", frames, fps, audio, rate)
    return folder


def mercl(*args: str) -> float:
    """Run ``python -m mercl.cli ARGS`` in a fresh process; its wall time in seconds (failure: exit)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mercl.cli", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"mercl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def run_mode(mode: str, raw: Path, clips: Path | None, work: Path, args) -> dict:
    stimuli = ["--stimuli", str(clips)] if clips is not None else []
    prepared = work / f"{mode}-prepared"
    prepare_s = mercl("prepare", str(raw), "--source", "deap", *stimuli, "-o", str(prepared),
                      "--video-size", str(args.video_size), "--no-progress")
    dataset = next(p for p in prepared.iterdir() if (p / "manifest.json").is_file())
    run = work / f"{mode}-run"
    modalities = ["--modalities", "e"] if clips is None else []
    mercl("train", str(dataset), "--label", "valence2", "--config", "tiny", *modalities, "--no-progress",
          "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1", "-o", str(run))
    predict_s = mercl("predict", str(run / "model.pt"), str(raw), "--source", "deap", *stimuli,
                      "-o", str(work / f"{mode}-predict"), "--device", args.device, "--no-progress")
    segments = args.subjects * N_TRIALS * SEGMENTS_PER_TRIAL
    return {"mode": mode, "segments": segments, "prepare_s": prepare_s, "predict_s": predict_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=2, help="DEAP subject files (40 trials each)")
    parser.add_argument("--device", default="auto", help="mercl predict --device")
    parser.add_argument("--video-size", type=int, default=64, help="prepared frame side in pixels")
    parser.add_argument("--modes", default="eeg,clips", help="comma list of eeg, clips")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"eeg", "clips"}:
        sys.exit(f"--modes: expected a comma list of eeg, clips, got {args.modes!r}")

    work = args.keep or Path(tempfile.mkdtemp(prefix="mercl-bench-predict-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        write_deap_inputs(work / "raw", args.subjects)
        raw = work / "raw" / "data_preprocessed_python"
        clips = write_clips(work / "clips") if "clips" in modes else None
        print(f"inputs: {args.subjects} DEAP subject files ({args.subjects * N_TRIALS} trials, "
              f"{args.subjects * N_TRIALS * SEGMENTS_PER_TRIAL} segments of 4 s)"
              + (f", {N_TRIALS} clips of {CLIP_SECONDS:g} s" if clips else "")
              + f", written in {time.perf_counter() - start:.0f} s")
        results = [run_mode(m, raw, clips if m == "clips" else None, work, args) for m in modes]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'mode':<6} {'segments':>8} {'prepare s':>10} {'seg/s':>8} {'predict s':>10} {'seg/s':>8} "
          f"{'model share':>12}")
    for r in results:
        share = (r["predict_s"] - r["prepare_s"]) / r["predict_s"]
        print(f"{r['mode']:<6} {r['segments']:>8} {r['prepare_s']:>10.1f} {r['segments'] / r['prepare_s']:>8.1f} "
              f"{r['predict_s']:>10.1f} {r['segments'] / r['predict_s']:>8.1f} {share:>12.0%}")
    print("\nprepare: `mercl prepare` alone; predict: `mercl predict` on the same input (its own preparation, "
          "model loading, backbone features with clips, the model on every segment); model share = "
          "(predict - prepare) / predict. Each a fresh process, imports included.")


if __name__ == "__main__":
    main()
