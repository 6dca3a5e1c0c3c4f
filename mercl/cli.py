"""The ``mercl`` command line: ``mercl {synth,prepare,summary,train,evaluate,...}``.

Each subcommand lives in ``mercl/commands/<name>.py`` with ``add_parser(subparsers)``
and ``run(args) -> int``. User errors (:class:`~mercl.errors.MerclError`) print as one
line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mercl.errors import MerclError

COMMANDS = ("synth", "prepare", "summary", "train", "evaluate", "predict", "info", "experiment", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mercl", description="Multimodal emotion recognition from EEG and audio-visual stimuli."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mercl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mercl.commands.{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except MerclError as exc:
        print(f"mercl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mercl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
