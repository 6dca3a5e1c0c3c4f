"""Checkpoints: atomic ``torch.save`` of a training state, RNG capture and restore.

A training state (what :meth:`EpochReport.state` returns) is a dict with ``model``,
``optimizer``, ``scheduler`` state dicts, ``stage``, ``epoch``, ``rng`` (python, numpy,
torch CPU generators and each rank's CUDA generator) and the loop's bookkeeping. Saving it after an epoch and
passing it back as ``resume=`` continues a killed run to the same result.

Frozen ViT/VGGish backbones never change during training, so training states leave them out
(:func:`trained_state`): they are most of the weights (17.4 M of the ``small`` config's 18.6 M
parameters) and were written again every epoch. A resumed run rebuilds them from its config
(the same local weights file or seeded random init); the state carries their digest and
:func:`check_backbones` refuses a model whose backbones differ.
"""

from __future__ import annotations

import copy
import logging
import pickle
import random
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mercl.atomic import write_atomic
from mercl.errors import InputFileError

log = logging.getLogger(__name__)


def _numpy_state() -> dict[str, Any]:
    """numpy's global generator state as plain values and a tensor (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: Any) -> None:
    if isinstance(state, dict):
        state = (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                 state["cached_gaussian"])
    np.random.set_state(state)  # a tuple: checkpoints written before the dict form


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without torch.distributed): one collective."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The state of every random generator training draws from.

    ``cuda_per_rank``: when training runs on a CUDA device, each rank's own generator state
    of its own device, gathered in rank order (one collective; every rank must call this),
    as ``{"state": uint8 tensor, "device_index": int}``. Only rank 0 writes checkpoints, so
    the states of the other ranks must travel to it. Plain values and tensors only: the
    state loads with ``torch.load(weights_only=True)``.
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        mine = {"state": torch.cuda.get_rng_state(index).cpu(), "device_index": int(index)}
        state["cuda_per_rank"] = gather_objects(mine)
    return state


def reseed_value(seed: int, rank: int, epoch: int) -> int:
    """The device generator's seed for a resumed ``rank`` whose saved state cannot be restored."""
    return (int(seed) * 1_000_003 + int(rank) * 10_007 + int(epoch) * 101 + 17) % 2**63


def _frozen_backbone_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    encoders = getattr(model, "spatial_encoders", {})
    return tuple(f"spatial_encoders.{m}." for m, e in encoders.items() if getattr(e, "frozen", False))


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` without the frozen backbones (live tensors: copy before keeping)."""
    skip = _frozen_backbone_prefixes(model)
    full = model.state_dict()
    state = OrderedDict((k, v) for k, v in full.items() if not (skip and k.startswith(skip)))
    state._metadata = full._metadata  # module versions, read by load_state_dict
    return state


def snapshot(obj: Any) -> Any:
    """A copy of nested dicts, lists and tuples with every tensor cloned.

    Same result as ``copy.deepcopy`` for training states, ~20x faster: deepcopy spends ~0.1 ms
    per tensor and a state holds hundreds of small ones.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        out = type(obj)((k, snapshot(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata  # module versions: never mutated
        return out
    if type(obj) in (list, tuple):
        return type(obj)(snapshot(v) for v in obj)
    return copy.deepcopy(obj)


def load_trained_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a :func:`trained_state` (or a full state dict); only frozen backbone keys may be absent."""
    result = model.load_state_dict(state, strict=False)
    skip = _frozen_backbone_prefixes(model)
    missing = [k for k in result.missing_keys if not (skip and k.startswith(skip))]
    if missing or result.unexpected_keys:
        raise ValueError(f"state does not fit the model: missing {missing[:5]}, unexpected "
                         f"{list(result.unexpected_keys)[:5]}")


def frozen_backbones_digest(model: torch.nn.Module) -> str | None:
    """Digest of the frozen backbones' configs and weights (None when the model has none)."""
    if not _frozen_backbone_prefixes(model):
        return None
    from mercl.models.cached_backbone import backbone_digest  # not feature_cache: it imports the data stack

    return backbone_digest(model)


def check_backbones(state: dict[str, Any], digest: str | None) -> None:
    """Refuse to resume a state written with other frozen backbones than the model's."""
    saved = state.get("backbones")
    if saved is not None and saved != digest:
        raise ValueError("resume: the checkpoint was written with other frozen backbone weights than this "
                         "model's (another weights file, image size or seed); start a new run")


def set_rng_state(state: dict[str, Any], device: torch.device | None = None, *, rank: int = 0,
                  world_size: int = 1, seed: int = 0, epoch: int = 0) -> bool:
    """Restore the generators captured by :func:`rng_state`; True when the run stays bit-identical.

    The python, numpy and torch CPU generators are always restored. On a CUDA ``device``,
    ``rank`` gets back its own saved device state when the checkpoint has one for it, from a
    run of the same ``world_size`` with a generator of the same size. Otherwise (a trial
    restarted on a node with fewer GPUs, another world size, a checkpoint written on a CPU
    or by an older version that stored rank 0's ``get_rng_state_all()``) the device
    generator is re-seeded from (seed, rank, epoch): deterministic, but no longer the
    uninterrupted run's random numbers; that is logged.
    """
    random.setstate(state["python"])
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda_per_rank")
    if device is None or device.type != "cuda":
        if saved:
            log.warning("resume: the checkpoint was written on CUDA devices, this run is on %s: "
                        "the run is no longer bit-identical to an uninterrupted one", device or "cpu")
        return not saved
    index = device.index if device.index is not None else torch.cuda.current_device()
    if saved is not None and len(saved) == world_size and rank < len(saved):
        mine = saved[rank]["state"]
        if mine.numel() == torch.cuda.get_rng_state(index).numel():
            torch.cuda.set_rng_state(mine, index)
            return True
    why = ("no device generator state (written on a CPU or by an older mercl)" if saved is None else
           f"device states of {len(saved)} rank(s), this run has {world_size}" if len(saved) != world_size else
           "a device generator of another kind")
    value = reseed_value(seed, rank, epoch)
    torch.cuda.manual_seed(value)  # the current device's generator
    log.warning("resume: rank %d: checkpoint holds %s; re-seeded cuda:%d from (seed %d, rank %d, epoch %d): "
                "the run is no longer bit-identical to an uninterrupted one", rank, why, index, seed, rank, epoch)
    return False


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with ``torch.save`` to ``path`` atomically (:func:`mercl.atomic.write_atomic`:
    a temporary name unique across hosts, fsynced, renamed; not world-readable)."""
    path = Path(path)
    write_atomic(path, lambda tmp: torch.save(state, tmp))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    kind: str = "checkpoint") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without running code from the file.

    ``torch.load(weights_only=True)``: only tensors, strings, numbers and containers of them are
    read; a file holding any other pickled Python object (which could run code as it loads) is
    refused. Every problem (missing, corrupt, refused, not a dict) is an InputFileError naming
    the file; ``kind`` names what the file should be (``checkpoint``, ``mercl model file``).
    """
    path = Path(path)
    if not path.is_file():
        problem = "not a file" if path.exists() else "no such file"
        raise InputFileError(path, f"{problem} (expected a {kind})")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:  # the pickle names a Python callable/class: loading it could run code
            raise InputFileError(path, f"refused: it holds a pickled Python object ({found.group(1)}), not only "
                                       f"tensors and plain data, and mercl never runs code from a file (not a "
                                       f"{kind} mercl can load)") from None
        raise InputFileError(path, f"not a readable {kind} (not a torch file of tensors and plain data)") from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise InputFileError(path, f"not a readable {kind} ({_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise InputFileError(path, f"not a {kind} (expected a dict, got {type(state).__name__})")
    return state


def _first_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
