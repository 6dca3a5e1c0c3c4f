"""Benchmark the experiment's methods: training and inference time per fold, same data, one run.

Runs ``mercl experiment paper``'s units for one label scheme and protocol in a fresh temporary
RUN_DIR (nothing read from a result cache), then prints per method and fold: training seconds
(MERCL: backbone feature cache + normalisation + both stages with inner validation; baselines:
``fit``), inference seconds on the test fold, test rows and accuracy. The baselines'
handcrafted features are built (or read from DATASET/cache) once beforehand and timed apart.

Usage: ``.venv/bin/python bench/experiments.py DATASET [--scheme valence2] [--protocol trial]
[--folds 2] [--config tiny] [--methods mercl ave_rt ...] [--set finetune.epochs=2]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from mercl.commands.options import parse_override
from mercl.data.protocols import PROTOCOLS
from mercl.data.reader import load_dataset
from mercl.experiments.runner import (
    BASELINE_METHODS,
    PAPER_METHODS,
    Experiment,
    experiment_rows,
    run_experiment,
)
from mercl.training.config import load_train_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--scheme", default="valence2")
    parser.add_argument("--protocol", default="trial", choices=tuple(PROTOCOLS))
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[])
    parser.add_argument("--methods", nargs="+", default=list(PAPER_METHODS))
    args = parser.parse_args()

    cfg = load_train_config(args.config, dict(args.overrides))
    prepared = load_dataset(args.dataset)
    if any(m in BASELINE_METHODS for m in args.methods):
        from mercl.baselines import build_features

        start = time.perf_counter()
        build_features(prepared, progress=False)
        print(f"baseline features (build or read DATASET/cache): {time.perf_counter() - start:.1f} s")
    exp = Experiment("paper", Path(args.dataset), [args.protocol], [args.scheme],
                     experiment_rows("paper", cfg, args.methods), args.folds, cfg, args.config)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        outcome = run_experiment(exp, tmp, show_progress=False, console=None)
        total = time.perf_counter() - start
    res = outcome.results
    print(f"dataset {prepared.path.name}: {len(prepared)} rows, scheme {args.scheme}, protocol {args.protocol}, "
          f"{res['fold'].nunique()} folds, config {args.config}")
    print(f"{'method':<10} {'fold':>4} {'train s':>9} {'infer s':>9} {'n_test':>7} {'accuracy':>9}")
    for r in res.itertuples():
        print(f"{r.method:<10} {r.fold:>4} {r.train_s:>9.2f} {r.predict_s:>9.3f} {r.n_test:>7} {r.accuracy:>9.3f}")
    print("mean per fold:")
    for method, part in res.groupby("method", sort=False):
        print(f"{method:<10} train {part['train_s'].mean():8.2f} s  inference {part['predict_s'].mean():7.3f} s")
    print(f"total wall time of the units: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
