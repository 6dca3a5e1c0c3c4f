"""``mercl info MODEL``: what a trained model file describes, in a few readable lines."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe a trained model file (model.pt)",
        description=(
            "Print what a model file written by `mercl train` describes: the label scheme and class "
            "names, the modalities, the preprocessing (segments, EEG channels, rate and bands, audio and "
            "video settings) and its hash, the backbones and their weights digest, the training data and "
            "scores, the mercl version. The file is read without running code from it."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="model file (RUN_DIR/model.pt)")
    parser.add_argument("--json", action="store_true", help="print the whole description as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mercl.inference.info import format_info
    from mercl.inference.model_file import read_model_file

    model_file = read_model_file(args.model)
    if args.json:
        print(json.dumps(model_file.description, indent=2))
    else:
        print(format_info(model_file))
    return 0
