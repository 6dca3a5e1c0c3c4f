"""A frozen backbone replaced by its cached features, and where backbones draw their init.

Training from the backbone feature cache never runs the frozen ViT / VGGish: the batches
carry ``video_feat`` / ``audio_feat``. :class:`CachedBackbone` stands in for such an encoder
so a training process (e.g. every Ray Train worker of every search trial) builds the model
without building the backbones or importing timm (~0.5-1.6 s per process). It has no
parameters and keeps what the rest of the model and the checkpoints need of the real
encoder: ``cfg``, ``feature_dim``, ``frozen`` and the encoder's digest.

Backbones are initialised from their own generator (:func:`backbone_rng`), seeded by the
global seed and the modality, so a model with stand-ins initialises everything else exactly
as the model with the real backbones does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from mercl.config import to_dict
from mercl.errors import MerclError

BACKBONES = ("video", "audio")  # modalities whose spatial encoder can be frozen and cached
BACKBONE_SEED_OFFSETS = {"video": 1_000_003, "audio": 2_000_003}


@contextlib.contextmanager
def backbone_rng(modality: str) -> Iterator[None]:
    """Run the block (a backbone's construction) on torch's CPU generator seeded by
    ``torch.initial_seed()`` and the modality; the global generator's state is untouched."""
    seed = (torch.initial_seed() + BACKBONE_SEED_OFFSETS[modality]) % (2**63)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def encoder_digest(modality: str, encoder: nn.Module) -> str:
    """sha256 (hex) of a frozen encoder's config and every weight/buffer value."""
    if isinstance(encoder, CachedBackbone):
        return encoder.digest
    h = hashlib.sha256()
    h.update(json.dumps({modality: to_dict(encoder.cfg)}, sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{modality}.{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def frozen_backbones(model: nn.Module) -> dict[str, nn.Module]:
    """{modality: encoder} of the model's frozen video/audio spatial encoders (stand-ins included)."""
    encoders = model.spatial_encoders
    return {m: encoders[m] for m in BACKBONES if m in encoders and getattr(encoders[m], "frozen", False)}


def backbone_digest(model: nn.Module) -> str:
    """sha256 (hex) over the frozen backbones' configs and weights (a stand-in gives the digest
    of the encoder it stands for, so it equals the real model's)."""
    h = hashlib.sha256()
    for modality, encoder in frozen_backbones(model).items():
        h.update(f"{modality}:{encoder_digest(modality, encoder)};".encode())
    return h.hexdigest()


class CachedBackbone(nn.Module):
    """Stand-in for the frozen ``modality`` encoder; its features come as ``<modality>_feat``.

    Calling it (raw frames or audio reached a model without that backbone) raises
    :class:`MerclError`.
    """

    frozen = True

    def __init__(self, modality: str, cfg: Any, feature_dim: int, digest: str):
        super().__init__()
        self.modality, self.cfg, self.feature_dim, self.digest = modality, cfg, int(feature_dim), digest

    @classmethod
    def of(cls, modality: str, encoder: nn.Module) -> CachedBackbone:
        """The stand-in for a built, frozen encoder (its digest computed now)."""
        if not getattr(encoder, "frozen", False):
            raise MerclError(f"the {modality} encoder is trainable: only a frozen backbone can be cached")
        return cls(modality, encoder.cfg, encoder.feature_dim, encoder_digest(modality, encoder))

    def forward(self, x: Tensor) -> Tensor:
        raise MerclError(f"the model was built without its {self.modality} backbone (cached features): "
                         f"batches must carry '{self.modality}_feat', not raw '{self.modality}'")

    def extra_repr(self) -> str:
        return f"{self.modality}, feature_dim={self.feature_dim}, digest={self.digest[:12]}"
