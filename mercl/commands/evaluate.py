"""``mercl evaluate DATASET --label SCHEME [--protocol P[,P...]] --folds K -o RUN_DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mercl.commands.options import add_model_options, add_protocol_option, config_from_args, dataset_config


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="cross-validate MERCL beside the majority and clip-majority baselines (honest folds by default)",
        description=(
            "k-fold cross-validation of MERCL beside two trivial baselines: majority (the training side's most "
            "frequent class) and clip-majority (the test clip's usual label among other viewers in training). "
            "Protocols: stimulus (whole clips held out: new content; the default when every clip was watched "
            "by several subjects), subject-stimulus (held-out subjects on held-out clips: a new person and new "
            "content), trial (all segments of a trial on one side; with shared clips, each test clip is also in "
            "training through other viewers), subject (leave-one-subject-out; clips shared likewise) and "
            "segment (the paper's segment-level folds: LEAKY, overlapping windows of a trial on both sides). "
            "A comma list runs several, each into RUN_DIR/<protocol>/. Early stopping and the final epoch use "
            "an inner validation split of the training side held out the same way; normalisation comes from "
            "training rows only. Writes results.csv, summary.md, predictions.parquet and TensorBoard logs in tb/."
        ),
    )
    add_model_options(parser)
    add_protocol_option(parser, several=True)
    parser.add_argument("--folds", type=int, default=4, metavar="K", help="number of folds (default: 4)")
    parser.add_argument("--force", action="store_true", help="overwrite existing results in RUN_DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mercl.data.protocols import parse_protocols
    from mercl.data.reader import load_dataset
    from mercl.errors import MerclError
    from mercl.output_lock import output_lock
    from mercl.training.crossval import cross_validate

    if args.folds < 2:
        raise MerclError(f"--folds must be >= 2, got {args.folds}")
    protocols = parse_protocols(args.protocol)
    cfg = config_from_args(args)
    out = Path(args.out)
    with output_lock(out, "evaluate"):
        dirs = {p: out if len(protocols) == 1 else out / p for p in protocols}
        taken = [d for d in dirs.values() if (d / "results.csv").exists()]
        if taken and not args.force:
            raise MerclError(f"{taken[0]}: already holds results.csv; use --force to overwrite or another -o")
        prepared = load_dataset(args.dataset)
        cfg = dataset_config(cfg, prepared, explicit=bool(args.modalities))
        results = {}
        for protocol, run_dir in dirs.items():
            if args.force and (run_dir / "tb").is_dir():
                import shutil

                shutil.rmtree(run_dir / "tb")
            results[protocol] = cross_validate(
                prepared, args.label, cfg, protocol=protocol, folds=args.folds, out_dir=run_dir,
                show_progress=not args.no_progress, config_name=str(args.config))
        if len(results) > 1:
            print("\nprotocols side by side (accuracy, mean over folds):")
            for res in results.values():
                base = ", ".join(f"{m} {res.mean(m):.3f}" for m in ("majority", "clip-majority"))
                print(f"  {res.protocol:<40} mercl {res.mean('mercl'):.3f}  {base}")
    return 0
