"""``mercl summary DATASET``: segments per subject and class, missing modalities, where the shards are."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "summary",
        help="summarise a prepared dataset",
        description="Print a prepared dataset's summary from its manifest.json (DATASET: the dataset "
        "folder, or an output folder holding exactly one dataset).",
    )
    parser.add_argument("dataset", metavar="DATASET", help="dataset folder (OUT/<source>-<hash>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mercl.data.summary import summarize

    print(summarize(args.dataset))
    return 0
