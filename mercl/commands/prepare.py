"""``mercl prepare RAW --source {deap,seed,manifest} -o OUT``: recordings -> Parquet shards + manifest."""

from __future__ import annotations

import argparse
import os

from mercl.data.sources import SOURCE_NAMES


def _channels(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated channel names, e.g. Fp1,Fp2,Cz")
    return names


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="segment recordings and stimulus clips into feature shards",
        description=(
            "Cut every trial into segments, compute EEG band-power sequences and the stimulus clips' "
            "log-Mel and frame features, and write Parquet shards plus manifest.json under "
            "OUT/<source>-<config hash>. Re-running with the same config resumes and rebuilds exactly the "
            "shards whose inputs (files, manifest rows) changed, saying which; a changed config writes a new "
            "dataset. One run at a time per OUT (a lock names the holder)."
        ),
    )
    parser.add_argument("raw", metavar="RAW", help="raw recordings (a folder or file, per source)")
    parser.add_argument("--source", required=True, choices=SOURCE_NAMES, help="how to read RAW")
    parser.add_argument(
        "--stimuli", metavar="DIR", help="folder of clips named <stimulus>.<mp4|mkv|avi|mov|webm>"
    )
    parser.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder for datasets")
    parser.add_argument("--config", metavar="YAML", help="prepare config (PrepareConfig fields)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"worker processes (default min(2, CPUs) = {min(2, os.cpu_count() or 1)})",
    )
    parser.add_argument("--segment", type=float, metavar="S", help="segment length in seconds (default 4)")
    parser.add_argument("--overlap", type=float, metavar="F", help="segment overlap fraction (default 0.5)")
    parser.add_argument("--video-fps", type=float, metavar="FPS", help="video frames sampled per second")
    parser.add_argument("--video-size", type=int, metavar="PX", help="video frame side in pixels")
    parser.add_argument("--resample", type=float, metavar="HZ", help="resample EEG to this rate")
    parser.add_argument("--channels", type=_channels, metavar="A,B,..", help="EEG channels to keep, in order")
    parser.add_argument("--baseline", choices=("remove", "correct"), help="the release's own pre-stimulus baseline (DEAP 3 s, DREAMER 61 s, AMIGOS 5 s, MAHNOB the seconds before the Status start): remove it (default) or correct (subtract its per-channel mean, then remove it)")
    parser.add_argument(
        "--lag", type=float, metavar="S", help="EEG-to-clip lag in seconds when the source has none"
    )
    parser.add_argument(
        "--trial-times", metavar="CSV", help="seed-v: trial windows, columns session,trial,start_s,end_s "
        "(trials numbered from 1 within a session; default: the released table)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mercl.data.prepare import load_prepare_config, prepare
    from mercl.data.summary import format_summary
    from mercl.errors import MerclError
    from mercl.output_lock import output_lock

    if args.workers is not None and args.workers < 1:
        raise MerclError(f"--workers must be >= 1, got {args.workers}")
    trial_times = None
    if args.trial_times is not None:
        if args.source != "seed-v":
            raise MerclError(f"--trial-times applies to --source seed-v, not {args.source}")
        from mercl.data.sources.seed_v import read_trial_times

        trial_times = read_trial_times(args.trial_times)
    overrides = {
        "segment_s": args.segment,
        "overlap": args.overlap,
        "video.fps": args.video_fps,
        "video.size": args.video_size,
        "source.resample": args.resample,
        "source.channels": args.channels,
        "source.baseline": args.baseline,
        "source.lag": args.lag,
        "source.trial_times": trial_times,
    }
    cfg = load_prepare_config(args.config, overrides)
    with output_lock(args.out, "prepare"):
        result = prepare(
            args.raw,
            args.source,
            args.out,
            stimuli=args.stimuli,
            config=cfg,
            workers=args.workers,
            progress=not args.no_progress,
        )
    print(format_summary(result.manifest, result.dataset_dir))
    for line in result.changes:
        print(line)
    print(f"built {len(result.built)} shards, reused {len(result.skipped)}")
    return 0
