"""The MERCL model (paper section 3): encoders, Residual-TCN, projections, cross-modal attention.

Names are re-exported lazily (:mod:`mercl.lazy`).
"""

from __future__ import annotations

from mercl.lazy import lazy_exports

_EXPORTS = {
    "VggishSpatialEncoder": "audio_encoder",
    "CachedBackbone": "cached_backbone",
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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
