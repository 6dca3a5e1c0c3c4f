"""Loading encoder weights from a local file: nothing is ever downloaded."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from mercl.errors import InputFileError

log = logging.getLogger(__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _names(keys: list[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_local_weights(
    module: nn.Module, path: str | Path | None, what: str, ignore_prefixes: tuple[str, ...] = ()
) -> None:
    """Load a state dict from the local file ``path`` into ``module``, or keep the random init.

    The file may be a plain state dict, a ``{"state_dict"|"model": ...}`` checkpoint or a
    ``.safetensors`` file (read with timm's loader; DDP ``module.`` prefixes are removed).
    Keys starting with one of ``ignore_prefixes`` (e.g. a classifier head the encoder does
    not have) are dropped; every other key must match exactly, in name and shape.

    Raises :class:`InputFileError` naming the file when it is missing, unreadable or does
    not fit the module.
    """
    if path is None:
        log.info("%s: random init", what)
        return
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(path, f"no such weights file for the {what}")
    import timm.models  # here: building a model without a weights file does not import timm

    try:
        state = timm.models.load_state_dict(str(path), use_ema=False)
    except Exception as exc:  # torch.load / safetensors raise many kinds
        raise InputFileError(path, f"cannot read weights for the {what}: {_first_line(exc)}") from None
    if not isinstance(state, dict):
        raise InputFileError(path, f"not a state dict (got {type(state).__name__})")
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        problem = " ".join(str(exc).split())
        raise InputFileError(path, f"weights do not fit the {what}: {problem[:300]}") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {_names(result.missing_keys)}")
        if result.unexpected_keys:
            parts.append(f"unexpected {_names(result.unexpected_keys)}")
        raise InputFileError(path, f"weights do not fit the {what}: {'; '.join(parts)}")
    log.info("%s: weights from %s", what, path)
