"""``mercl evaluate DATASET --label SCHEME --protocol {trial,subject,segment} --folds K -o RUN_DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mercl.commands.train import add_model_options, config_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="cross-validate MERCL and the majority baseline (honest trial-grouped folds by default)",
        description=(
            "k-fold cross-validation of MERCL beside the majority-class baseline. Protocols: trial "
            "(default; all segments of a trial on one side), subject (leave-one-subject-out) and "
            "segment (the paper's segment-level folds: LEAKY, overlapping windows of a trial fall on "
            "both sides). Early stopping and the final epoch use an inner validation split of the "
            "training trials; normalisation comes from training rows only. Writes RUN_DIR/results.csv, "
            "summary.md, predictions.parquet and TensorBoard logs in RUN_DIR/tb."
        ),
    )
    add_model_options(parser)
    parser.add_argument("--protocol", choices=("trial", "subject", "segment"), default="trial",
                        help="cross-validation protocol (default: trial)")
    parser.add_argument("--folds", type=int, default=4, metavar="K", help="number of folds (default: 4)")
    parser.add_argument("--force", action="store_true", help="overwrite existing results in RUN_DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mercl.errors import MerclError
    from mercl.training.crossval import cross_validate

    if args.folds < 2:
        raise MerclError(f"--folds must be >= 2, got {args.folds}")
    cfg = config_from_args(args)
    out = Path(args.out)
    if (out / "results.csv").exists() and not args.force:
        raise MerclError(f"{out}: already holds results.csv; use --force to overwrite or another -o")
    if args.force and (out / "tb").is_dir():
        import shutil

        shutil.rmtree(out / "tb")
    cross_validate(args.dataset, args.label, cfg, protocol=args.protocol, folds=args.folds, out_dir=out,
                   show_progress=not args.no_progress, config_name=str(args.config))
    return 0
