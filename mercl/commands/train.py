"""``mercl train DATASET --label SCHEME --config NAME_OR_FILE -o RUN_DIR``: one training run, model saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from mercl.commands.options import add_model_options, add_protocol_option, config_from_args, dataset_config


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
    add_protocol_option(parser, several=False)
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    parser.add_argument("--force", action="store_true", help="overwrite an existing run in RUN_DIR")
    parser.add_argument("--keep-ids", action="store_true",
                        help="store the training subject and clip ids in model.pt as they are (default: salted "
                             "hashes, enough for mercl predict to say whether a recording was seen in training, "
                             "so sharing the model does not share the participant list)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mercl.data.reader import load_dataset
    from mercl.errors import MerclError
    from mercl.output_lock import output_lock
    from mercl.training.train_model import MODEL_FILE, train_once

    cfg = config_from_args(args)
    out = Path(args.out)
    with output_lock(out, "train"):
        if (out / MODEL_FILE).exists() and not (args.force or args.resume):
            raise MerclError(f"{out}: already holds a trained model; use --force to overwrite or another -o")
        prepared = load_dataset(args.dataset)
        cfg = dataset_config(cfg, prepared, explicit=bool(args.modalities))
        train_once(prepared, args.label, cfg, out, resume=args.resume, show_progress=not args.no_progress,
                   config_name=str(args.config), protocol=args.protocol, keep_ids=args.keep_ids)
    return 0
