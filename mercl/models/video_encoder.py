"""The visual spatial encoder f_v: a timm image model (a ViT by default) run on every frame."""

from __future__ import annotations

from pathlib import Path

import timm
import timm.data
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.v2.functional import to_dtype

from mercl.errors import ConfigError, InputFileError, MerclError
from mercl.models.config import VideoEncoderConfig
from mercl.models.weights import create_pretrained, hub_model_name, load_local_weights


def create_backbone(cfg: VideoEncoderConfig) -> nn.Module:
    """``timm.create_model(cfg.backbone, pretrained=False, num_classes=0, img_size=cfg.img_size)``,
    or with ``cfg.weights`` = ``hub`` / ``hub:<name>`` timm's ``pretrained=True`` model of that
    name through the Hugging Face hub (:func:`mercl.models.weights.create_pretrained`).

    Models without an ``img_size`` argument (CNNs) take any input size and are built without it.
    """
    if not timm.is_model(cfg.backbone):
        raise ConfigError("model.video.backbone", f"unknown timm model {cfg.backbone!r}")
    hub_name = hub_model_name(cfg.weights, cfg.backbone)
    if hub_name is not None:
        arch = hub_name.split(".")[0]
        tags = timm.list_pretrained(f"{arch}.*")
        if not tags:
            raise ConfigError("model.video.weights", f"timm has no pretrained weights for {arch}")
        if "." in hub_name and hub_name not in tags:
            shown = ", ".join(tags[:4]) + (", ..." if len(tags) > 4 else "")
            raise ConfigError("model.video.weights", f"timm has no pretrained {hub_name!r} (it has {shown})")

    def create(**kwargs) -> nn.Module:
        if hub_name is None:
            return timm.create_model(cfg.backbone, pretrained=False, num_classes=0, **kwargs)
        what = f"video backbone {cfg.backbone}"
        return create_pretrained(hub_name, what, "model.video.weights", num_classes=0, **kwargs)

    try:
        return create(img_size=cfg.img_size)
    except TypeError:
        return create()


class VideoSpatialEncoder(nn.Module):
    """f_v: per-frame pooled features of a timm backbone. (B, T_v, 3, H, W) -> (B, T_v, D_v).

    Frames are uint8 (0-255) or float (0-1, torchvision's convention); both are scaled and
    normalised with the backbone's mean/std (timm's ``pretrained_cfg``) and resized to
    ``img_size`` when their size differs. Weights come from the local file ``cfg.weights``,
    from the Hugging Face hub when it says ``hub`` / ``hub:<name>``, else random init. With
    ``cfg.freeze`` the backbone has no trainable parameters and always runs in eval mode,
    without building a graph.
    """

    def __init__(self, cfg: VideoEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg)
        self.feature_dim = int(getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features)
        if cfg.feature_dim is not None and cfg.feature_dim != self.feature_dim:
            raise ConfigError(
                "model.video.feature_dim",
                f"{cfg.feature_dim} does not match {cfg.backbone}'s {self.feature_dim} features",
            )
        data_cfg = timm.data.resolve_model_data_config(self.backbone)
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1), persistent=False)
        classifier = self.backbone.pretrained_cfg.get("classifier") or ()
        heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        if hub_model_name(cfg.weights, cfg.backbone) is None:
            if cfg.weights is not None and not Path(cfg.weights).expanduser().exists():
                raise InputFileError(
                    Path(cfg.weights).expanduser(),
                    f"no such weights file for the video backbone {cfg.backbone} "
                    "(or weights: hub to have timm fetch its pretrained weights from the Hugging Face hub)",
                )
            load_local_weights(
                self.backbone,
                cfg.weights,
                f"video backbone {cfg.backbone}",
                ignore_prefixes=tuple(f"{h}." for h in heads),
            )
        self.frozen = cfg.freeze
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> VideoSpatialEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def preprocess(self, frames: Tensor) -> Tensor:
        """(N, 3, H, W) uint8 or float -> (N, 3, img_size, img_size) normalised float32."""
        frames = to_dtype(frames, torch.float32, scale=True)
        frames = (frames - self.mean) / self.std
        size = self.cfg.img_size
        if frames.shape[-2:] != (size, size):
            frames = F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True)
        return frames

    def forward(self, video: Tensor) -> Tensor:
        """(B, T_v, 3, H, W) -> (B, T_v, D_v)."""
        if video.dim() != 5 or video.shape[2] != 3:
            raise MerclError(f"batch 'video' must be (B, T_v, 3, H, W), got shape {tuple(video.shape)}")
        batch, steps = video.shape[:2]
        frames = self.preprocess(video.flatten(0, 1))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            features = self.backbone(frames)
        return features.reshape(batch, steps, -1)
