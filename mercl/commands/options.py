"""Options the commands share (``train``, ``evaluate``, ``experiment``) and the config they describe."""

from __future__ import annotations

import argparse

from mercl.data.labels import SCHEMES
from mercl.data.protocols import DEFAULT_PROTOCOL, PROTOCOL_HELP


def parse_override(text: str) -> tuple[str, object]:
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
                        help=f"label scheme: {', '.join(SCHEMES)}")
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
    parser.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[],
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


def add_protocol_option(parser: argparse.ArgumentParser, *, several: bool) -> None:
    """``--protocol``: one protocol (``mercl train``'s validation split) or a comma list."""
    parser.add_argument("--protocol", default=DEFAULT_PROTOCOL, metavar="P[,P...]" if several else "P",
                        help=PROTOCOL_HELP + ("; both = segment,trial; a comma list runs several" if several else ""))


def dataset_config(cfg, prepared, explicit: bool, say=print):
    """``cfg`` with the modalities the dataset lacks in every row left out, said once: recordings
    without clips (DEAP, SEED, ... prepared without ``--stimuli``) train the EEG-only model. A
    modality asked for explicitly (``--modalities``) that the dataset lacks is an error."""
    from mercl.training.crossval import modalities_for_dataset

    cfg, note = modalities_for_dataset(cfg, prepared, cfg.model.modalities if explicit else None)
    if note:
        say(note)
    return cfg
