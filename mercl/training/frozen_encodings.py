"""The frozen encoders' outputs, computed once per dataset row for stage 2 of Algorithm 1.

Fine-tuning freezes the spatial encoders and TCNs and keeps them in eval mode (no dropout,
fixed BatchNorm statistics: :meth:`~mercl.models.MERCLModel.freeze_encoders`), so the
encodings h_m of a row are the same in every epoch and in whatever batch the row comes.
:class:`FrozenEncodings` computes them the first time a row is seen (rows are keyed by the
batch's ``index``) and serves them afterwards: from the second epoch on, a fine-tuning step
runs only the cross-modal attentions and the classifier. This is the backbone feature cache's
idea one level up, kept in memory for the length of the stage.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FrozenEncodings:
    """``encodings(batch)`` -> {modality: h_m (B, T_m, width)}, each row encoded at most once.

    A batch without an ``index`` is encoded every time (nothing to key it by).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.slot: dict[int, int] = {}
        self.rows: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
        self.encoded_batches = 0

    @torch.no_grad()
    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if "index" not in batch:
            return self.model.encode(batch)
        index = batch["index"].tolist()
        if any(i not in self.slot for i in index):
            h = self.model.encode(batch)  # eval mode: a row's encoding does not depend on its batch
            self.encoded_batches += 1
            for k, i in enumerate(index):
                if i not in self.slot:
                    self.slot[i] = len(self.slot)
                    for m, h_m in h.items():
                        self.rows[m].append(h_m[k].clone())
        where = [self.slot[i] for i in index]
        return {m: torch.stack([rows[s] for s in where]) for m, rows in self.rows.items()}
