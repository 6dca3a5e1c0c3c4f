"""``mercl synth OUT``: write a synthetic demo study (mp4 clips, EDF EEG, ratings, manifest)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from mercl.config import from_dict
from mercl.data.synth import SynthConfig, synthesize
from mercl.errors import ConfigError, MerclError

# CLI flag -> SynthConfig field (the flags' names and help follow the config's).
_FLAGS = {
    "subjects": (int, "number of subjects"),
    "stimuli": (int, "number of clips (balanced over the 4 valence-arousal quadrants)"),
    "duration": (float, "seconds per clip"),
    "seed": (int, "random seed (same seed, same study)"),
    "sfreq": (float, "EEG sampling rate in Hz"),
    "channels": (int, "EEG channels (Emotiv-like 10-20 names)"),
    "video_size": (int, "video frame side in pixels (even)"),
    "fps": (int, "video frames per second"),
}


def add_parser(subparsers) -> None:
    defaults = SynthConfig()
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic demo study in real formats",
        description="Write a synthetic study with planted emotion structure: OUT/stimuli/*.mp4 "
        "(video + AAC audio), OUT/eeg/<subject>.edf, OUT/ratings.csv, OUT/stimuli.csv and "
        "OUT/manifest.csv for `mercl prepare OUT --source manifest`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="folder to write the study into")
    for name, (kind, text) in _FLAGS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name), help=text
        )
    parser.add_argument("--force", action="store_true", help="write into a non-empty OUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = from_dict(SynthConfig, {name: getattr(args, name) for name in _FLAGS})
    except ConfigError as exc:
        raise MerclError(f"--{exc.field.replace('_', '-')}: {exc.problem}") from None
    study = synthesize(args.out, config, force=args.force)
    design = study.design
    with_audio = sum(s.has_audio for s in design.stimuli)
    print(f"wrote {len(design.stimuli)} clips ({with_audio} with audio) to {study.stimuli_dir}")
    print(
        f"wrote {len(design.subjects)} EDF recordings ({config.channels} channels, {config.sfreq:g} Hz) "
        f"to {study.eeg_dir}"
    )
    print(f"wrote ratings to {study.ratings}, the clip design to {study.design_csv}")
    print(f"wrote the manifest to {study.manifest}")
    print(f"next: mercl prepare {study.root} --source manifest -o <shards folder>")
    fields = ", ".join(f"{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config))
    print(f"config: {fields}")
    return 0
