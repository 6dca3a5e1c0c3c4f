"""Cross-modality attention (paper section 3.3) and the fusion of its pairwise outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mercl.modalities import MODALITIES

# (source, target) of CMA^{source -> target}, in the paper's order: a->v, v->a, e->v, v->e, e->a, a->e.
PAIRS = (
    ("audio", "video"),
    ("video", "audio"),
    ("eeg", "video"),
    ("video", "eeg"),
    ("eeg", "audio"),
    ("audio", "eeg"),
)


def masked_mean(h: Tensor, present: Tensor) -> Tensor:
    """Mean over time with absent samples set to zero. (B, T, W), (B,) bool -> (B, W)."""
    return h.mean(dim=1).masked_fill(~present[:, None], 0.0)


class CrossModalAttention(nn.Module):
    """CMA^{src->tgt} = MHA(query=h_tgt, key=value=h_src). (B, T_tgt, W), (B, T_src, W) -> (B, T_tgt, W).

    ``key_padding_mask`` (B, T_src) bool marks source steps to ignore (True = ignore). A
    sample whose source steps are all ignored (a missing modality) gets a zero output
    instead of the NaN a softmax over nothing would give.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)

    def forward(self, h_tgt: Tensor, h_src: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``nn.MultiheadAttention``'s forward (its parameters, scaling and attention dropout) as
        its essential ops: the projections, ``scaled_dot_product_attention`` with a boolean mask,
        the output projection. ``F.multi_head_attention_forward`` adds checks and turns the mask
        into a float one on every call: ~15 % more time per pair on these small shapes."""
        mha = self.attention
        width, heads = mha.embed_dim, mha.num_heads
        batch, t_tgt, t_src = h_tgt.shape[0], h_tgt.shape[1], h_src.shape[1]
        q = F.linear(h_tgt, mha.in_proj_weight[:width], mha.in_proj_bias[:width])
        k, v = F.linear(h_src, mha.in_proj_weight[width:], mha.in_proj_bias[width:]).chunk(2, dim=-1)
        attend = empty = None
        if key_padding_mask is not None:
            empty = key_padding_mask.all(dim=1)
            attend = ~(key_padding_mask & ~empty[:, None])[:, None, None, :]  # (B, 1, 1, T_src); no key: all
        out = F.scaled_dot_product_attention(
            q.view(batch, t_tgt, heads, -1).transpose(1, 2),
            k.reshape(batch, t_src, heads, -1).transpose(1, 2),
            v.reshape(batch, t_src, heads, -1).transpose(1, 2),
            attn_mask=attend, dropout_p=mha.dropout if self.training else 0.0,
        )  # (B, heads, T_tgt, W / heads)
        out = F.linear(out.transpose(1, 2).reshape(batch, t_tgt, width), mha.out_proj.weight, mha.out_proj.bias)
        if empty is not None:
            out = out.masked_fill(empty[:, None, None], 0.0)
        return out


class CrossModalFusion(nn.Module):
    """The directional CMAs among the configured modalities, each pooled over time, concatenated.

    h: {modality: (B, T_m, W)}, present: {modality: (B,) bool} -> (B, out_dim) with
    out_dim = W * number of pairs (6 for three modalities, 2 for two). A single modality
    has no pairs: its own time-pooled features are the output (out_dim = W). A pair with
    its source or target absent contributes zeros for that sample.
    """

    def __init__(self, modalities: list[str] | tuple[str, ...], width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.pairs = tuple((s, t) for s, t in PAIRS if s in self.modalities and t in self.modalities)
        self.attentions = nn.ModuleDict(
            {f"{s}_to_{t}": CrossModalAttention(width, heads, dropout) for s, t in self.pairs}
        )
        self.out_dim = width * max(1, len(self.pairs))

    def forward(self, h: dict[str, Tensor], present: dict[str, Tensor]) -> Tensor:
        if not self.pairs:
            (modality,) = self.modalities
            return masked_mean(h[modality], present[modality])
        pooled = []
        for src, tgt in self.pairs:
            ignore = (~present[src])[:, None].expand(-1, h[src].shape[1])
            out = self.attentions[f"{src}_to_{tgt}"](h[tgt], h[src], key_padding_mask=ignore)
            pooled.append(masked_mean(out, present[tgt]))
        return torch.cat(pooled, dim=-1)


class ConcatFusion(nn.Module):
    """Ablation without cross-modal attention: time-pooled features concatenated.

    h: {modality: (B, T_m, W)}, present: {modality: (B,) bool} -> (B, W * n_modalities).
    """

    def __init__(self, modalities: list[str] | tuple[str, ...], width: int):
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        self.out_dim = width * len(self.modalities)

    def forward(self, h: dict[str, Tensor], present: dict[str, Tensor]) -> Tensor:
        return torch.cat([masked_mean(h[m], present[m]) for m in self.modalities], dim=-1)
