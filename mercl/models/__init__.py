"""The MERCL model (paper section 3): encoders, Residual-TCN, projections, cross-modal attention."""

from mercl.models.audio_encoder import VggishSpatialEncoder
from mercl.models.config import (
    AudioEncoderConfig,
    DataShapes,
    EegEncoderConfig,
    ModelConfig,
    TcnConfig,
    VideoEncoderConfig,
    check_config,
)
from mercl.models.cross_attention import ConcatFusion, CrossModalAttention, CrossModalFusion
from mercl.models.eeg_encoder import EegSpatialEncoder
from mercl.models.mercl_model import MODALITIES, MERCLModel, build_model
from mercl.models.projection import Projection
from mercl.models.tcn import ResidualTCN
from mercl.models.video_encoder import VideoSpatialEncoder

__all__ = [
    "MODALITIES",
    "AudioEncoderConfig",
    "ConcatFusion",
    "CrossModalAttention",
    "CrossModalFusion",
    "DataShapes",
    "EegEncoderConfig",
    "EegSpatialEncoder",
    "MERCLModel",
    "ModelConfig",
    "Projection",
    "ResidualTCN",
    "TcnConfig",
    "VggishSpatialEncoder",
    "VideoEncoderConfig",
    "VideoSpatialEncoder",
    "build_model",
    "check_config",
]
