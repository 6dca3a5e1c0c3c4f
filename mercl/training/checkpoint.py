"""Checkpoints: atomic ``torch.save`` of a training state, RNG capture and restore.

A training state (what :meth:`EpochReport.state` returns) is a dict with ``model``,
``optimizer``, ``scheduler`` state dicts, ``stage``, ``epoch``, ``rng`` (python, numpy,
torch CPU and CUDA generators) and the loop's bookkeeping. Saving it after an epoch and
passing it back as ``resume=`` continues a killed run to the same result.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mercl.errors import InputFileError


def rng_state() -> dict[str, Any]:
    """The state of every random generator training draws from."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators captured by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with ``torch.save`` to ``path`` atomically (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (a missing/corrupt file: InputFileError)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such checkpoint file")
    try:
        # weights_only=False: the state holds RNG tuples and numpy arrays, written by us.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated zip, not a torch file, ...
        first_line = (str(exc).splitlines() or [""])[0]
        raise InputFileError(path, f"not a readable checkpoint ({type(exc).__name__}: {first_line})") from None
    if not isinstance(state, dict):
        raise InputFileError(path, "not a mercl checkpoint (expected a dict)")
    return state
