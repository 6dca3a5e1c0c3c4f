"""``mercl report RUN_DIR``: report.md + report.html (tables, confusion matrices, curves, t-SNE)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write RUN_DIR/report.md and report.html from an experiment run or a search output",
        description=(
            "Write a self-contained Markdown (report.md) and HTML (report.html) report of a "
            "`mercl experiment` run: the paper-style tables (protocol stated, LEAKY flagged), "
            "confusion matrices, per-subject accuracy, MERCL training curves and a t-SNE of the "
            "shared embeddings (PNGs in RUN_DIR/figures/), plus any search plots (plots/*.png)."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="mercl experiment's output folder (or a search's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mercl.experiments.report import write_report

    md, page = write_report(args.run_dir)
    print(f"wrote {md} and {page}")
    return 0
