"""Typed configs of the MERCL model (paper section 3) and the data shapes it is built for.

Load them with :func:`mercl.config.from_dict` / :func:`mercl.config.load_config`, which run
every ``validate()``; :func:`check_model_config` does the same for a config built in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass

from mercl.config import FieldProblem, at_least
from mercl.errors import ConfigError
from mercl.modalities import MODALITIES


def _positive(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise FieldProblem(name, f"must be > 0, got {getattr(obj, name)!r}")


def _dropout(obj: object, name: str = "dropout") -> None:
    value = getattr(obj, name)
    if not 0.0 <= value < 1.0:
        raise FieldProblem(name, f"must be in [0, 1), got {value!r}")


@dataclass
class VideoEncoderConfig:
    """The ViT spatial encoder f_v, applied frame by frame.

    ``backbone`` is any timm model name. ``weights`` is where its weights come from: None
    (random init), a local state-dict file (``.pth``/``.bin``/``.safetensors``; give the
    backbone with the file's pretrained tag, e.g. ``vit_base_patch16_224.augreg_in21k``, so
    the frames get that tag's mean/std), or ``hub`` / ``hub:<timm name>``: timm's own
    ``create_model(name, pretrained=True)``, fetched through the Hugging Face hub (the only
    download mercl makes; offline it is a one-line error unless the hub cache holds it).
    ``feature_dim`` is D_v: leave it unset to take the backbone's width; when set it must
    match the backbone (a check for configs written by hand).
    """

    backbone: str = "vit_tiny_patch16_224"
    img_size: int = 224
    weights: str | None = None
    freeze: bool = True
    feature_dim: int | None = None

    def validate(self) -> None:
        if not self.backbone:
            raise FieldProblem("backbone", "must name a timm model")
        _positive(self, "img_size")
        if self.weights is not None and not self.weights.strip():
            raise FieldProblem("weights", "is empty (null for random init, a file, or hub)")
        if self.feature_dim is not None:
            _positive(self, "feature_dim")


@dataclass
class AudioEncoderConfig:
    """The VGGish-architecture spatial encoder f_a on log-Mel patches.

    ``width`` is the first conv block's channels (VGGish: 64, giving 64-128-256-512 and
    4096-wide FC layers); ``embed_dim`` is D_a (VGGish: 128); ``patch_frames`` the patch
    length in STFT frames (96 frames of 10 ms = VGGish's 0.96 s).
    """

    weights: str | None = None
    freeze: bool = True
    width: int = 64
    embed_dim: int = 128
    patch_frames: int = 96

    def validate(self) -> None:
        _positive(self, "width", "embed_dim", "patch_frames")


@dataclass
class EegEncoderConfig:
    """The Conformer-style convolutional stem f_e (no self-attention) on band-PSD sequences."""

    channels_out: int = 40
    kernel: int = 25
    dropout: float = 0.5

    def validate(self) -> None:
        _positive(self, "channels_out", "kernel")
        _dropout(self)


@dataclass
class TcnConfig:
    """The Residual-TCN temporal encoder: one block per dilation."""

    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    kernel_size: int = 3
    dropout: float = 0.5

    def validate(self) -> None:
        if not self.dilations:
            raise FieldProblem("dilations", "needs at least one block")
        for i, d in enumerate(self.dilations):
            if d < 1:
                raise FieldProblem(f"dilations[{i}]", f"must be >= 1, got {d!r}")
        _positive(self, "kernel_size")
        _dropout(self)


@dataclass
class ModelConfig:
    """The whole MERCL model: encoders, shared widths, fusion and classifier.

    ``width`` is D (TCN and attention width), ``embed_dim`` the shared contrastive space,
    ``cross_attention=False`` the ablation that concatenates time-pooled features instead.
    """

    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    eeg: EegEncoderConfig = field(default_factory=EegEncoderConfig)
    tcn: TcnConfig = field(default_factory=TcnConfig)
    width: int = 128
    embed_dim: int = 128
    heads: int = 4
    classifier_hidden: int = 128
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    cross_attention: bool = True
    dropout: float = 0.1

    def validate(self) -> None:
        _positive(self, "width", "embed_dim", "heads", "classifier_hidden")
        if self.width % self.heads:
            raise FieldProblem("heads", f"must divide width ({self.width}), got {self.heads}")
        if not self.modalities:
            raise FieldProblem("modalities", f"needs at least one of {', '.join(MODALITIES)}")
        for i, name in enumerate(self.modalities):
            if name not in MODALITIES:
                raise FieldProblem(
                    f"modalities[{i}]", f"unknown modality {name!r} (known: {', '.join(MODALITIES)})"
                )
        if len(set(self.modalities)) != len(self.modalities):
            raise FieldProblem("modalities", f"lists a modality twice: {self.modalities}")
        _dropout(self)

    @property
    def active(self) -> tuple[str, ...]:
        """The configured modalities in canonical order ("video", "audio", "eeg")."""
        return tuple(m for m in MODALITIES if m in self.modalities)


@dataclass
class DataShapes:
    """Per-sample input shapes (from the dataset manifest) and the number of classes.

    eeg: (T_e, C, n_bands); audio: (T_frames, n_mels); video: (T_v, 3, H, W).
    """

    eeg: tuple[int, int, int]
    audio: tuple[int, int]
    video: tuple[int, int, int, int]
    n_classes: int

    def validate(self) -> None:
        for name, rank in (("eeg", 3), ("audio", 2), ("video", 4)):
            shape = tuple(getattr(self, name))
            if len(shape) != rank or any(int(s) <= 0 for s in shape):
                raise FieldProblem(name, f"must be {rank} positive sizes, got {shape}")
        if self.video[1] != 3:
            raise FieldProblem("video", f"must have 3 colour channels, got shape {tuple(self.video)}")
        at_least(self, 2, "n_classes")


def check_config(cfg: object, prefix: str = "model") -> None:
    """Run ``validate()`` on ``cfg`` and every nested config, as :func:`mercl.config.from_dict` does.

    Raises :class:`ConfigError` naming the dotted field (``model.heads``, ``model.tcn.dilations[1]``).
    """
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            check_config(value, f"{prefix}.{f.name}" if prefix else f.name)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except FieldProblem as exc:
            raise ConfigError(f"{prefix}.{exc.field}" if prefix else exc.field, exc.problem) from None
