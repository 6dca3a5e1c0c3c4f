"""``mercl train DATASET --label SCHEME --config NAME_OR_FILE -o RUN_DIR``: one training run, model saved."""

from __future__ import annotations

import argparse
from pathlib import Path


def _override(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. finetune.epochs=5), got {text!r}")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options ``mercl train`` and ``mercl evaluate`` share: dataset, label, config, ablations."""
    parser.add_argument("dataset", metavar="DATASET", help="prepared dataset dir (mercl prepare's output)")
    parser.add_argument("--label", required=True, metavar="SCHEME",
                        help="label scheme: valence2, arousal2, dominance2, valence3, ..., quadrant4, seed3")
    parser.add_argument("--config", default="small", metavar="NAME_OR_FILE",
                        help="training config: paper, small, tiny or a YAML file (default: small)")
    parser.add_argument("--modalities", default=None, metavar="LETTERS",
                        help="modalities to use: letters of 'ave' (audio, video, eeg); default: the config's")
    parser.add_argument("--no-contrastive", action="store_true", help="ablation: skip contrastive pre-training")
    parser.add_argument("--no-cross-attention", action="store_true",
                        help="ablation: concatenate pooled features instead of cross-modal attention")
    parser.add_argument("--no-energy-gate", action="store_true",
                        help="ablation: keep low-energy audio in the contrastive terms")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
    parser.add_argument("--set", dest="overrides", type=_override, action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field, e.g. --set finetune.epochs=5 (repeatable)")
    parser.add_argument("-o", "--out", required=True, metavar="RUN_DIR", help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace):
    """The TrainConfig the options describe: named/file config, --set overrides, --seed, ablations."""
    from mercl.modalities import parse_modalities
    from mercl.training.config import load_train_config
    from mercl.training.crossval import apply_ablations

    overrides = dict(args.overrides)
    if args.seed is not None:
        overrides["seed"] = args.seed
    cfg = load_train_config(args.config, overrides)
    modalities = parse_modalities(args.modalities) if args.modalities else None
    return apply_ablations(
        cfg,
        modalities=modalities,
        contrastive=not args.no_contrastive,
        cross_attention=not args.no_cross_attention,
        energy_gate=not args.no_energy_gate,
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train MERCL once (a held-out validation split for early stopping) and save the model",
        description=(
            "Train MERCL (contrastive pre-training, then fine-tuning with cross-modal attention) on "
            "training rows and validation rows held out as --protocol says (whole clips by default on shared clips). Writes "
            "RUN_DIR/model.pt, checkpoint.pt (every epoch; --resume continues), metrics.json, "
            "history.csv and TensorBoard logs in RUN_DIR/tb."
        ),
    )
    add_model_options(parser)
    parser.add_argument("--protocol", default="auto", metavar="P",
                        help="how the validation rows are held out: stimulus (whole clips), subject-stimulus, trial, "
                             "subject or segment (LEAKY); default auto: stimulus when the clips are shared across "
                             "subjects, else trial")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    parser.add_argument("--force", action="store_true", help="overwrite an existing run in RUN_DIR")
    parser.add_argument("--keep-ids", action="store_true",
                        help="store the training subject and clip ids in model.pt as they are (default: salted "
                             "hashes, enough for mercl predict to say whether a recording was seen in training, "
                             "so sharing the model does not share the participant list)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mercl.errors import MerclError
    from mercl.output_lock import output_lock
    from mercl.training.train_model import MODEL_FILE, train_once

    cfg = config_from_args(args)
    out = Path(args.out)
    with output_lock(out, "train"):
        if (out / MODEL_FILE).exists() and not (args.force or args.resume):
            raise MerclError(f"{out}: already holds a trained model; use --force to overwrite or another -o")
        train_once(args.dataset, args.label, cfg, out, resume=args.resume, show_progress=not args.no_progress,
                   config_name=str(args.config), protocol=args.protocol, keep_ids=args.keep_ids)
    return 0
