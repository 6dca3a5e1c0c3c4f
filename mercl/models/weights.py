"""Encoder weights: a local file, or (opt-in, ViT only) timm's pretrained weights from the hub.

A local file is loaded by :func:`load_local_weights`. ``hub`` / ``hub:<timm name>`` asks timm
for ``create_model(name, pretrained=True)``, which fetches through the Hugging Face hub
(:func:`create_pretrained`); that is the only download mercl ever makes, and only when the
config says so. Without network the fetch fails at once with one line naming the model and
the local-file alternative (a file already in the Hugging Face cache still loads offline).
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
from pathlib import Path

from torch import nn

from mercl.errors import ConfigError, InputFileError, MerclError
from mercl.log_once import info_once

log = logging.getLogger(__name__)

HUB = "hub"
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_model_name(weights: str | None, backbone: str, field: str = "model.video.weights") -> str | None:
    """The timm name to fetch for ``weights`` = ``hub`` (the backbone's default pretrained tag)
    or ``hub:<name>`` (e.g. ``vit_base_patch16_224.augreg_in21k``); None for a local file or None.

    Raises ConfigError when ``<name>`` is empty or another architecture than ``backbone``.
    """
    if weights is None or not (weights == HUB or weights.startswith(f"{HUB}:")):
        return None
    name = weights[len(HUB) + 1 :].strip() if weights != HUB else backbone
    if not name:
        raise ConfigError(field, f"'{weights}' names no model (use '{HUB}' or '{HUB}:<timm name>')")
    if name.split(".")[0] != backbone.split(".")[0]:
        raise ConfigError(field, f"'{weights}' is a {name.split('.')[0]}, the backbone is {backbone}")
    return name


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's endpoint opens (assumed yes behind a proxy)."""
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return True
    import huggingface_hub.constants as hub_constants

    url = urllib.parse.urlparse(hub_constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def create_pretrained(name: str, what: str, field: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=True, **kwargs)``, the weights through the Hugging Face hub.

    Offline (``HF_HUB_OFFLINE=1``, or the hub's endpoint unreachable: then huggingface_hub is
    put in offline mode for this call, so it does not retry for a minute) only the local
    cache is read. Any failure to get the weights is a one-line :class:`MerclError` naming
    the model and how to use a downloaded file instead. TypeError (an unsupported keyword,
    e.g. ``img_size`` for a CNN) is left to the caller.
    """
    import huggingface_hub.constants as hub_constants
    import timm

    forced_offline = not hub_constants.HF_HUB_OFFLINE and not _hub_reachable()
    if forced_offline:
        hub_constants.HF_HUB_OFFLINE = True
    try:
        model = timm.create_model(name, pretrained=True, **kwargs)
    except TypeError:
        raise
    except Exception as exc:  # huggingface_hub / timm raise many kinds
        if hub_constants.HF_HUB_OFFLINE:
            why = "offline and not in the local Hugging Face cache"
        else:
            why = _first_line(exc)
        raise MerclError(
            f"{what}: no pretrained weights for {name} from the Hugging Face hub ({why}); "
            f"fetch them where there is network and set {field} to the local file "
            f"(timm's equivalent: create_model('{name}', pretrained=True, "
            "pretrained_cfg_overlay=dict(file=PATH)))"
        ) from None
    finally:
        if forced_offline:
            hub_constants.HF_HUB_OFFLINE = False
    info_once(log, "%s: pretrained weights %s from the Hugging Face hub", what, name)
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _names(keys: list[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_local_weights(
    module: nn.Module,
    path: str | Path | None,
    what: str,
    ignore_prefixes: tuple[str, ...] = (),
    core_prefixes: tuple[str, ...] = (),
) -> list[str]:
    """Load a state dict from the local file ``path`` into ``module``, or keep the random init.

    The file may be a plain state dict, a ``{"state_dict"|"model": ...}`` checkpoint or a
    ``.safetensors`` file (read with timm's loader, tensors only: ``weights_only=True``; DDP
    ``module.`` prefixes are removed). Keys starting with one of ``ignore_prefixes`` (e.g. a
    classifier head the encoder does not have) are dropped; every other key must match
    exactly, in name and shape.

    With ``core_prefixes`` (VGGish's conv stack ``features.``), the layers outside them load
    only when all of them fit: when one does not (the file was made for another input shape),
    only the core loads and the others keep their random init, which the log names.

    Returns the names of the parameters/buffers left random (empty when everything loaded).
    Raises :class:`InputFileError` naming the file when it is missing, unreadable or does
    not fit the module.
    """
    if path is None:
        info_once(log, "%s: random init", what)
        return sorted(module.state_dict())
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(path, f"no such weights file for the {what}")
    import timm.models  # here: building a model without a weights file does not import timm

    try:
        state = timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as exc:  # torch.load / safetensors raise many kinds
        raise InputFileError(path, f"cannot read weights for the {what}: {_first_line(exc)}") from None
    if not isinstance(state, dict):
        raise InputFileError(path, f"not a state dict (got {type(state).__name__})")
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own = module.state_dict()
    left_random: list[str] = []
    reason = ""
    if core_prefixes:
        outside = sorted(k for k in {*own, *state} if not k.startswith(core_prefixes))
        misfit = [k for k in outside if k not in own or k not in state or own[k].shape != state[k].shape]
        if misfit:
            first = misfit[0]
            if first in own and first in state:
                reason = f"{first} is {tuple(state[first].shape)} in the file, {tuple(own[first].shape)} here"
            else:
                reason = f"{first} is {'only in the file' if first in state else 'not in the file'}"
            state = {k: v for k, v in state.items() if k.startswith(core_prefixes)}
            left_random = sorted(k for k in own if not k.startswith(core_prefixes))
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        problem = " ".join(str(exc).split())
        raise InputFileError(path, f"weights do not fit the {what}: {problem[:300]}") from None
    missing = [k for k in result.missing_keys if k not in left_random]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if result.unexpected_keys:
            parts.append(f"unexpected {_names(result.unexpected_keys)}")
        raise InputFileError(path, f"weights do not fit the {what}: {'; '.join(parts)}")
    if left_random:
        layers = sorted({k.rsplit(".", 1)[0] for k in left_random})
        log.warning(
            "%s: %s from %s; left random, the file was made for another input (%s): %s",
            what,
            " ".join(f"{p}*" for p in core_prefixes),
            path,
            reason,
            ", ".join(layers),
        )
    else:
        info_once(log, "%s: weights from %s", what, path)
    return left_random
