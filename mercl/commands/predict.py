"""``mercl predict MODEL RAW --source {deap,seed,manifest,uea} [--stimuli DIR] -o OUT``."""

from __future__ import annotations

import argparse

from mercl.data.sources import SOURCE_NAMES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="run a trained model on new recordings (per segment and per trial)",
        description=(
            "Prepare new recordings with the model's own preprocessing (channels, rate, segments, bands, "
            "audio and video settings, all read from MODEL), run the model and write OUT/segments.csv "
            "(one row per segment: predicted class and one probability column per class) and "
            "OUT/trials.csv (per trial: mean of its segments' probabilities and the predicted class). "
            "Where the input has ratings or labels, accuracy and macro-F1 are printed beside the majority "
            "baseline (the model's training majority class) and written to OUT/metrics.json. The prepared "
            "features stay in OUT/prepared (a re-run reuses those whose inputs are unchanged)."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="model file written by mercl train (RUN_DIR/model.pt)")
    parser.add_argument("raw", metavar="RAW", help="new recordings (a folder or file, per source)")
    parser.add_argument("--source", required=True, choices=SOURCE_NAMES, help="how to read RAW")
    parser.add_argument("--stimuli", metavar="DIR", help="folder of clips named <stimulus>.<mp4|mkv|avi|mov|webm>")
    parser.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="segments per batch (default: the model's fine-tuning batch size)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes for the preparation")
    parser.add_argument("--force", action="store_true", help="overwrite earlier predictions in OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mercl.errors import MerclError
    from mercl.inference.predict import predict_recordings
    from mercl.output_lock import output_lock

    if args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
        raise MerclError(f"--device: expected auto, cpu, cuda or cuda:N, got {args.device!r}")
    if args.workers is not None and args.workers < 1:
        raise MerclError(f"--workers must be >= 1, got {args.workers}")
    with output_lock(args.out, "predict"):
        predict_recordings(args.model, args.raw, args.source, args.out, stimuli=args.stimuli, device=args.device,
                           batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress,
                           force=args.force)
    return 0
