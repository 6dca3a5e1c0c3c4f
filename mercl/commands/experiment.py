"""``mercl experiment {paper,modalities,ablation} DATASET --protocol P[,P...] -o RUN_DIR``: the paper's tables."""

from __future__ import annotations

import argparse

from mercl.commands.options import add_protocol_option, parse_override


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run the paper's experiments (methods, modalities, ablation) over folds, cached per unit",
        description=(
            "Run every method (MERCL and the baselines, paper), MERCL's modality combinations "
            "(modalities) or its ablations (ablation) for every label scheme the dataset supports, on "
            "the same folds, beside the majority and clip-majority baselines. Each method x fold result is cached "
            "in RUN_DIR/cache/, so a re-run only computes what changed. --protocol segment,trial,stimulus runs "
            "each protocol on the same data and the report shows the window leak (segment - trial) and the clip "
            "leak (trial - stimulus). Then: mercl report RUN_DIR."
        ),
    )
    parser.add_argument("kind", choices=("paper", "modalities", "ablation"), help="which experiment")
    parser.add_argument("dataset", metavar="DATASET", help="prepared dataset dir (mercl prepare's output)")
    add_protocol_option(parser, several=True)
    parser.add_argument("-o", "--out", required=True, metavar="RUN_DIR", help="output folder")
    parser.add_argument("--config", default="small", metavar="NAME_OR_FILE",
                        help="MERCL training config: paper, small, tiny or a YAML file (default: small)")
    parser.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field, e.g. --set finetune.epochs=5")
    parser.add_argument("--modalities", default=None, metavar="LETTERS",
                        help="MERCL's modalities, letters of 'ave' (audio, video, eeg); default: the config's, "
                             "less any the dataset lacks (EEG-only recordings run MERCL's EEG branch)")
    parser.add_argument("--folds", type=int, default=5, metavar="K", help="number of folds (default 5)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help="paper: methods to run (mercl ve_bilstm ave_rt ave_kelm ave_lstm); majority and "
                             "clip-majority are always added, and with clips shared across subjects MERCL on audio + "
                             "video alone (content only)")
    parser.add_argument("--schemes", nargs="+", default=None, metavar="SCHEME",
                        help="label schemes (default: every scheme the dataset supports)")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run one Ray task per method x fold unit: a fresh local Ray instance, or the "
                             "cluster at ADDRESS (e.g. auto); same results as without")
    parser.add_argument("--gpus-per-unit", type=float, default=None, metavar="G",
                        help="with --ray: GPUs each unit of a method that trains a network (mercl, ve_bilstm, "
                             "ave_lstm) asks for (default: 1 when the cluster has GPUs, else 0); the tree/ELM "
                             "baselines and the majority rows ask for none")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="local processes sharing the units (default: min(4, CPUs)); 1 runs them here, "
                             "one after the other; ignored with --ray")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from mercl.errors import MerclError
    from mercl.output_lock import output_lock

    if args.folds < 2:
        raise MerclError(f"--folds: must be >= 2, got {args.folds}")
    workers = min(4, os.cpu_count() or 1) if args.workers is None else args.workers
    if workers < 1:
        raise MerclError(f"--workers: must be >= 1, got {workers}")
    with output_lock(args.out, "experiment"):
        _run_locked(args, workers)
    print(f"next: mercl report {args.out}")
    return 0


def _run_locked(args: argparse.Namespace, workers: int) -> None:
    """The experiment, run while this process holds the lock of RUN_DIR."""
    from pathlib import Path

    from mercl.data.protocols import shared_stimuli
    from mercl.data.reader import load_dataset
    from mercl.errors import MerclError
    from mercl.experiments.runner import (
        Experiment,
        dataset_modalities,
        dataset_schemes,
        experiment_rows,
        protocols_of,
        run_experiment,
    )
    from mercl.modalities import parse_modalities
    from mercl.training.config import NAMED_CONFIGS, load_train_config

    cfg = load_train_config(args.config, dict(args.overrides))
    prepared = load_dataset(args.dataset)
    wanted = parse_modalities(args.modalities) if args.modalities else None
    cfg, note = dataset_modalities(args.kind, cfg, prepared, wanted)
    if note:
        print(note)
    schemes = dataset_schemes(prepared, args.schemes)
    protocols, protocol_note = protocols_of(args.protocol, prepared, schemes[0], args.folds, cfg.seed)
    if protocol_note:
        print(protocol_note)
    content_only = (shared_stimuli(prepared.subjects, prepared.stimulus_ids)
                    and {"video", "audio"} <= set(prepared.present_modalities())
                    and "eeg" in cfg.model.modalities)
    exp = Experiment(
        kind=args.kind,
        dataset=Path(args.dataset),
        protocols=protocols,
        schemes=schemes,
        rows=experiment_rows(args.kind, cfg, args.methods, content_only=content_only),
        folds=args.folds,
        cfg=cfg,
        config_name=args.config if args.config in NAMED_CONFIGS else Path(args.config).name,
    )
    if args.gpus_per_unit is not None and args.gpus_per_unit < 0:
        raise MerclError(f"--gpus-per-unit: must be >= 0, got {args.gpus_per_unit:g}")
    run_experiment(exp, args.out, show_progress=not args.no_progress, ray_address=args.ray, workers=workers,
                   gpus_per_unit=args.gpus_per_unit)
