"""The MERCL model (paper section 3): encoders, Residual-TCN, projections, cross-modal attention.

Names are re-exported lazily (PEP 562): importing ``mercl.models.config`` (e.g. when Ray's Train
controller or a Tune trial actor unpickles a config object) must not import every module of the
package (timm and torchvision alone take ~4 s there).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VggishSpatialEncoder": "audio_encoder",
    "AudioEncoderConfig": "config",
    "DataShapes": "config",
    "EegEncoderConfig": "config",
    "ModelConfig": "config",
    "TcnConfig": "config",
    "VideoEncoderConfig": "config",
    "check_config": "config",
    "ConcatFusion": "cross_attention",
    "CrossModalAttention": "cross_attention",
    "CrossModalFusion": "cross_attention",
    "EegSpatialEncoder": "eeg_encoder",
    "MODALITIES": "mercl_model",
    "MERCLModel": "mercl_model",
    "build_model": "mercl_model",
    "Projection": "projection",
    "ResidualTCN": "tcn",
    "VideoSpatialEncoder": "video_encoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return __all__
