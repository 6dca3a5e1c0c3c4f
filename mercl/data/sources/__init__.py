"""Recording sources: each turns a raw directory into picklable load units.

A source module exposes ``discover(raw: Path, options: SourceOptions) -> list[LoadUnit]``.
A :class:`LoadUnit` (usually one subject's file) is picklable so that ``prepare`` can
load units in parallel worker processes; ``unit.load()`` returns that unit's trials.
Every problem with a file raises :class:`mercl.errors.InputFileError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from mercl.config import FieldProblem
from mercl.data.trial import Trial

# --source name -> module of mercl.data.sources that reads it
SOURCE_MODULES = {
    "deap": "deap",
    "seed": "seed",
    "manifest": "manifest",
    "uea": "uea",
    "dreamer": "dreamer",
    "amigos": "amigos",
    "mahnob": "mahnob",
    "seed-iv": "seed_iv",
    "seed-v": "seed_v",
    "faced": "faced",
}
SOURCE_NAMES = tuple(SOURCE_MODULES)


@dataclass
class SourceOptions:
    """Options shared by all sources (typed, validated on load).

    baseline: the release's own pre-stimulus baseline (DEAP 3 s, DREAMER 61 s, AMIGOS 5 s, MAHNOB
        the seconds before the clip's Status start): ``remove`` (drop it) or ``correct``
        (subtract its per-channel mean, then drop it).
    channels: pick these EEG channels (by name, in this order); None keeps all.
    resample: resample EEG to this rate in Hz; None keeps the file's rate
        (a manifest whose recordings disagree on the rate must set it).
    lag: default EEG-to-clip lag in seconds where the source gives none.
    min_channels: fewer EEG channels than this is an error.
    trial_times: SEED-V's trial windows, rows ``[session, trial, start_s, end_s]``
        (``prepare --trial-times CSV``); None uses the released table.
    """

    baseline: Literal["remove", "correct"] = "remove"
    channels: list[str] | None = None
    resample: float | None = None
    lag: float = 0.0
    min_channels: int = 1
    trial_times: list[list[float]] | None = None

    def validate(self) -> None:
        if self.resample is not None and self.resample <= 0:
            raise FieldProblem("resample", f"must be > 0 Hz, got {self.resample}")
        if self.min_channels < 1:
            raise FieldProblem("min_channels", "must be >= 1")


class LoadUnit(Protocol):
    """A picklable piece of a source that loads into trials (e.g. one subject's file)."""

    @property
    def name(self) -> str: ...

    def load(self) -> list[Trial]: ...


def source_module(source: str):
    """The module of :mod:`mercl.data.sources` that reads ``source`` (one of SOURCE_NAMES). Besides
    ``discover``, a module may offer ``recording_facts(unit) -> (file, EEG rate, channel names)``
    from headers or the release's fixed format (``mercl predict`` checks recordings with it)."""
    import importlib

    from mercl.errors import MerclError

    if source not in SOURCE_MODULES:
        raise MerclError(f"unknown source '{source}' (choose from {', '.join(SOURCE_NAMES)})")
    return importlib.import_module(f"mercl.data.sources.{SOURCE_MODULES[source]}")


def discover(source: str, raw: Path, options: SourceOptions | None = None) -> list[LoadUnit]:
    """The load units of ``raw`` read as ``source`` (one of SOURCE_NAMES)."""
    module = source_module(source)
    return module.discover(Path(raw), options or SourceOptions())
