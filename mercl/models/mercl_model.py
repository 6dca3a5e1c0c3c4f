"""The MERCL model: spatial encoders -> Residual-TCN -> projections | cross-modal attention -> MLP.

Stage 1 (pre-training) uses :meth:`MERCLModel.encode` and :meth:`MERCLModel.project` with
the MERCL loss; stage 2 (fine-tuning) freezes the encoders (:meth:`MERCLModel.freeze_encoders`)
and trains the fusion and classifier through :meth:`MERCLModel.forward` (Algorithm 1).

A batch is the dict of docs/CONTRACTS.md: ``eeg`` (B, T_e, C, 5), ``audio`` (B, T_frames, 20),
``video`` (B, T_v, 3, H, W) or the cached ``video_feat`` / ``audio_feat``, ``present`` (B, 3)
bool in the order of :data:`MODALITIES`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from mercl.errors import ConfigError, MerclError
from mercl.modalities import MODALITIES
from mercl.models.audio_encoder import VggishSpatialEncoder
from mercl.models.cached_backbone import BACKBONES, CachedBackbone, backbone_rng
from mercl.models.config import DataShapes, ModelConfig, check_config
from mercl.models.cross_attention import ConcatFusion, CrossModalFusion
from mercl.models.dropout import Dropout
from mercl.models.eeg_encoder import EegSpatialEncoder
from mercl.models.projection import Projection
from mercl.models.tcn import ResidualTCN


def _mask_samples(x: Tensor, present: Tensor) -> Tensor:
    """Zero the samples (first axis) that are not present. (B, ...), (B,) bool -> (B, ...)."""
    return x.masked_fill(~present.view(-1, *([1] * (x.dim() - 1))), 0)


class MERCLModel(nn.Module):
    """MERCL for the configured modalities. ``forward(batch)`` -> logits (B, n_classes).

    Absent samples of a modality (``present`` False) are zeroed at the input and after the
    spatial encoder, and masked out of the cross-modal attention and the pooling, so they
    never produce NaN. (The TCN's BatchNorm statistics still count them as zeros.)

    ``cached`` replaces frozen video/audio backbones by :class:`CachedBackbone` stand-ins
    (the model then reads ``video_feat`` / ``audio_feat``); the rest is initialised the same.
    """

    def __init__(self, cfg: ModelConfig, shapes: DataShapes, cached: Mapping[str, CachedBackbone] | None = None):
        super().__init__()
        check_config(cfg, "model")
        check_config(shapes, "shapes")
        self.cfg, self.shapes = cfg, shapes
        self.modalities: tuple[str, ...] = cfg.active
        self.encoders_frozen = False
        cached = dict(cached or {})

        def video():
            from mercl.models.video_encoder import VideoSpatialEncoder  # timm: only when the ViT is built

            return VideoSpatialEncoder(cfg.video)

        builders = {
            "video": video,
            "audio": lambda: VggishSpatialEncoder(cfg.audio, n_mels=shapes.audio[1]),
            "eeg": lambda: EegSpatialEncoder(
                cfg.eeg, n_channels=shapes.eeg[1], n_bands=shapes.eeg[2], n_steps=shapes.eeg[0]
            ),
        }

        def spatial(m: str) -> nn.Module:
            if m not in BACKBONES:
                return builders[m]()
            if m in cached:
                stand_in = cached[m]
                if stand_in.cfg != getattr(cfg, m):
                    raise ConfigError(f"model.{m}", "differs from the backbone whose features are cached "
                                                    f"({stand_in.cfg})")
                return stand_in
            with backbone_rng(m):
                return builders[m]()

        unknown = sorted(set(cached) - set(BACKBONES))
        if unknown:
            raise MerclError(f"only the video and audio backbones can be cached, got {unknown}")
        self.spatial_encoders = nn.ModuleDict({m: spatial(m) for m in self.modalities})
        self.temporal_encoders = nn.ModuleDict(
            {m: ResidualTCN(enc.feature_dim, cfg.width, cfg.tcn) for m, enc in self.spatial_encoders.items()}
        )
        self.projections = nn.ModuleDict({m: Projection(cfg.width, cfg.embed_dim) for m in self.modalities})
        if cfg.cross_attention:
            self.fusion = CrossModalFusion(self.modalities, cfg.width, cfg.heads, cfg.dropout)
        else:
            self.fusion = ConcatFusion(self.modalities, cfg.width)
        self.classifier = nn.Sequential(
            nn.Linear(self.fusion.out_dim, cfg.classifier_hidden),
            nn.ReLU(),
            Dropout(cfg.dropout),
            nn.Linear(cfg.classifier_hidden, shapes.n_classes),
        )

    # ----- inputs -------------------------------------------------------------------------
    def present(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """{modality: (B,) bool} from ``batch["present"]`` (B, 3); all True when it is absent."""
        if "present" in batch:
            flags = batch["present"].bool()
            return {m: flags[:, MODALITIES.index(m)] for m in self.modalities}
        any_input = next(
            batch[k] for k in ("eeg", "audio", "video", "video_feat", "audio_feat") if k in batch
        )
        ones = torch.ones(any_input.shape[0], dtype=torch.bool, device=any_input.device)
        return {m: ones for m in self.modalities}

    def _input(self, batch: dict[str, Tensor], modality: str) -> Tensor:
        if modality not in batch:
            cached = f" (nor '{modality}_feat')" if modality in BACKBONES else ""
            raise MerclError(f"batch has no '{modality}'{cached} input, but the model uses {modality}")
        return batch[modality]

    # ----- stages -------------------------------------------------------------------------
    def spatial(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """s_m (B, T_m, D_m) per modality; ``video_feat`` / ``audio_feat`` replace the backbones.

        Pass cached features only when :attr:`uses_backbone_cache` (frozen backbones): a
        trainable backbone gets no gradient through a cache.
        """
        present = self.present(batch)
        out = {}
        for m in self.modalities:
            cached = batch.get(f"{m}_feat") if m in BACKBONES else None
            if cached is not None:
                s = cached.float()
            else:
                s = self.spatial_encoders[m](_mask_samples(self._input(batch, m), present[m]))
            out[m] = _mask_samples(s, present[m])
        return out

    def encode(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """h_m (B, T_m, width) per modality: spatial encoder -> Residual-TCN."""
        return {m: self.temporal_encoders[m](s) for m, s in self.spatial(batch).items()}

    def project(self, h: dict[str, Tensor]) -> dict[str, Tensor]:
        """z_m (B, embed_dim), L2-normalised, for each modality in ``h``."""
        return {m: self.projections[m](h_m) for m, h_m in h.items()}

    def head(self, h: dict[str, Tensor], present: dict[str, Tensor]) -> Tensor:
        """Logits (B, n_classes) from the encodings h_m (B, T_m, width): fusion -> MLP."""
        return self.classifier(self.fusion(h, present))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits (B, n_classes): encode -> cross-modal fusion (or concatenation) -> MLP."""
        return self.head(self.encode(batch), self.present(batch))

    @torch.no_grad()
    def backbone_features(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``video_feat`` (B, T_v, D_v) and ``audio_feat`` (B, T_a, D_a): what the feature cache stores."""
        present = self.present(batch)
        return {
            f"{m}_feat": self.spatial_encoders[m](_mask_samples(self._input(batch, m), present[m]))
            for m in BACKBONES
            if m in self.spatial_encoders
        }

    @property
    def uses_backbone_cache(self) -> bool:
        """True when the model has a video/audio backbone and every such backbone is frozen."""
        backbones = [self.spatial_encoders[m] for m in BACKBONES if m in self.spatial_encoders]
        return bool(backbones) and all(b.frozen for b in backbones)

    # ----- parameters and freezing ---------------------------------------------------------
    def _encoder_modules(self) -> tuple[nn.Module, ...]:
        return (self.spatial_encoders, self.temporal_encoders, self.projections)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """theta_encoder: spatial encoders, TCNs and projections (frozen backbones included)."""
        return itertools.chain.from_iterable(m.parameters() for m in self._encoder_modules())

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """theta_CMA and theta_classifier: the fusion and the MLP classifier."""
        return itertools.chain(self.fusion.parameters(), self.classifier.parameters())

    def freeze_encoders(self, frozen: bool = True) -> None:
        """Stage 2 of Algorithm 1: freeze (or unfreeze) spatial encoders, TCNs and projections.

        Frozen encoders stay in eval mode (BatchNorm statistics fixed, no dropout) even under
        ``model.train()``. Unfreezing leaves backbones whose config says ``freeze`` frozen.
        """
        self.encoders_frozen = frozen
        for encoder in self.spatial_encoders.values():
            encoder.requires_grad_(not frozen and not getattr(encoder, "frozen", False))
        self.temporal_encoders.requires_grad_(not frozen)
        self.projections.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> MERCLModel:
        super().train(mode)
        if self.encoders_frozen:
            for module in self._encoder_modules():
                module.eval()
        return self


def build_model(cfg: ModelConfig, shapes: DataShapes,
                cached: Mapping[str, CachedBackbone] | None = None) -> MERCLModel:
    """The MERCL model for ``cfg`` and the dataset's ``shapes`` (both validated); ``cached``:
    stand-ins for frozen backbones whose features the batches carry (see :class:`MERCLModel`)."""
    return MERCLModel(cfg, shapes, cached)
