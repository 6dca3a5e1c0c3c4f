"""The MERCL pre-training loss (paper section 3.2): l1 AMCL + l2 EMCL + l3 SMCL.

Inputs are the projected embeddings ``z = {modality: (B, D)}`` (L2-normalised here as well,
a no-op for the model's output), the class labels (B,) and ``valid = {modality: (B,) bool}``:
a sample whose modality is missing, or whose audio is gated out for low energy, leaves every
term of that modality (as anchor, positive and negative).

* AMCL (intra-modal): for an anchor i of modality m, the positives are the other valid
  samples of m with the same label and the candidates (denominator) all other valid
  samples of m. Averaged over anchors with at least one positive, then over modalities.
* EMCL (inter-modal): the same, but the positives and candidates of an anchor of
  modality m are the valid embeddings of the *other* modalities only (the anchor's own
  sample in another modality is a positive). Averaged over anchors, then modalities.
* SMCL (sample-wise alignment): per sample, each pair of its valid modalities contributes
  ``(cos(z_m, z_m') - alpha)^2``; no negatives. Averaged over all such pairs (every
  unordered pair once, which equals the paper's per-anchor average over ordered pairs).

Deviation from the paper: equations (3) and (4) are written with raw dot products
``sum_p a.p / (sum_p a.p + sum_n a.n)``, which is undefined for negative similarities. We
use the supervised contrastive (SupCon) loss of Khosla et al. 2020 in its ``L_out`` form,
``-1/|P(i)| sum_{p in P(i)} log(exp(a.p/t) / sum_{j in A(i)} exp(a.j/t))``, with a
temperature t (``LossConfig.temperature``).

A term with no anchor (or, for SMCL, no pair) is 0 with a gradient path, never NaN. Every
tensor keeps a fixed shape (anchors without positives and invalid pairs are weighted 0, not
indexed out), so computing the loss never waits for the device; the anchor and pair counts
are 0-dim tensors, read only when logged. With
``gather=True`` the embeddings, labels and masks are all-gathered across the DDP group first
(:mod:`mercl.distributed`), so every rank computes the loss of the global batch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mercl.config import FieldProblem
from mercl.distributed import all_gather_batch

MODALITY_INDEX = {"video": 0, "audio": 1, "eeg": 2}  # columns of batch["present"]


@dataclass
class LossConfig:
    """Weights l1-l3 of AMCL/EMCL/SMCL, SMCL's margin alpha, SupCon's temperature, the audio gate."""

    l1: float = 1.0
    l2: float = 1.0
    l3: float = 1.0
    alpha: float = 0.8
    temperature: float = 0.1
    energy_gate: bool = True
    energy_threshold_db: float = -50.0

    def validate(self) -> None:
        for name in ("l1", "l2", "l3"):
            if getattr(self, name) < 0:
                raise FieldProblem(name, f"must be >= 0, got {getattr(self, name)!r}")
        if not -1.0 <= self.alpha <= 1.0:
            raise FieldProblem("alpha", f"is a cosine-similarity margin in [-1, 1], got {self.alpha!r}")
        if self.temperature <= 0:
            raise FieldProblem("temperature", f"must be > 0, got {self.temperature!r}")


@dataclass
class LossOutput:
    """The weighted total, its three terms, and how many anchors/pairs each term used.

    The counts are 0-dim integer tensors on the loss's device (``int(out.amcl_anchors)`` reads
    one, and waits for the device to get there).
    """

    total: Tensor
    amcl: Tensor
    emcl: Tensor
    smcl: Tensor
    amcl_anchors: Tensor | int = 0
    emcl_anchors: Tensor | int = 0
    smcl_pairs: Tensor | int = 0

    def scalars(self) -> dict[str, float]:
        """Plain numbers for logging: ``loss``, ``amcl``, ``emcl``, ``smcl`` and the counts."""
        return {
            "loss": float(self.total.detach()),
            "amcl": float(self.amcl.detach()),
            "emcl": float(self.emcl.detach()),
            "smcl": float(self.smcl.detach()),
            "amcl_anchors": int(self.amcl_anchors),
            "emcl_anchors": int(self.emcl_anchors),
            "smcl_pairs": int(self.smcl_pairs),
        }


# ----- validity masks ----------------------------------------------------------------------
def audio_valid(batch: dict[str, Tensor], cfg: LossConfig) -> Tensor:
    """(B,) bool: audio present and, with the energy gate, ``audio_energy`` >= the threshold (dBFS)."""
    valid = batch["present"][:, MODALITY_INDEX["audio"]].bool()
    if cfg.energy_gate:
        valid = valid & (batch["audio_energy"] >= cfg.energy_threshold_db)
    return valid


def valid_masks(
    batch: dict[str, Tensor], modalities: tuple[str, ...] | list[str], cfg: LossConfig
) -> dict[str, Tensor]:
    """{modality: (B,) bool}: ``present``, and for audio also the energy gate (:func:`audio_valid`)."""
    present = batch["present"].bool()
    return {m: audio_valid(batch, cfg) if m == "audio" else present[:, MODALITY_INDEX[m]] for m in modalities}


# ----- building blocks ------------------------------------------------------------------------
def _zero(z: dict[str, Tensor]) -> Tensor:
    """A 0 that is still connected to every embedding (so ``backward`` works with no anchors)."""
    return sum(v.sum() for v in z.values()) * 0.0


def _normalised(z: dict[str, Tensor]) -> dict[str, Tensor]:
    """Unit-norm embeddings, in float32 at least (half/bfloat16 from autocast are promoted)."""
    return {m: F.normalize(v.to(torch.promote_types(v.dtype, torch.float32)), dim=-1) for m, v in z.items()}


def _valid(z: dict[str, Tensor], valid: dict[str, Tensor]) -> dict[str, Tensor]:
    """Masks for every modality of ``z``; one missing from ``valid`` counts as all valid."""
    return {
        m: valid[m].bool() if m in valid else torch.ones(len(v), dtype=torch.bool, device=v.device)
        for m, v in z.items()
    }


def supcon_per_anchor(sim: Tensor, candidate: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    """SupCon (L_out) loss of every anchor, and which anchors count.

    sim (N, K) scaled similarities, candidate (N, K) bool (the denominator set A(i)),
    positive (N, K) bool (P(i), a subset of A(i)) -> (losses (N,), anchors (N,) bool): for an
    anchor with |P(i)| >= 1, ``-mean_{p in P(i)} [sim_ip - logsumexp_{j in A(i)} sim_ij]``;
    0 (with no gradient) for the others, which ``anchors`` marks False.
    """
    anchors = positive.any(dim=1)
    logits = sim.masked_fill(~candidate, float("-inf"))
    # a row without a positive may have no candidate either: all -inf, whose logsumexp is NaN
    logits = torch.where(anchors[:, None], logits, torch.zeros_like(logits))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    picked = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -picked / positive.sum(dim=1).clamp(min=1), anchors


def _mean_over_modalities(per_modality: list[tuple[Tensor, Tensor]], z: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Mean of each modality's anchor losses, then over the modalities that have anchors;
    (the term, the number of anchors)."""
    if not per_modality:
        return _zero(z), torch.zeros((), dtype=torch.long)
    counts = torch.stack([anchors.sum() for _, anchors in per_modality])  # (M,)
    sums = torch.stack([losses.sum() for losses, _ in per_modality])  # non-anchors add 0
    means = sums / counts.clamp(min=1)
    has_anchors = (counts > 0).to(means.dtype)
    return (means * has_anchors).sum() / has_anchors.sum().clamp(min=1), counts.sum()


def _amcl(z: dict[str, Tensor], labels: Tensor, valid: dict[str, Tensor], temperature: float):
    zn, valid = _normalised(z), _valid(z, valid)
    same = labels[:, None] == labels[None, :]
    per_modality = []
    for m, zm in zn.items():
        others = ~torch.eye(len(zm), dtype=torch.bool, device=zm.device)
        candidate = valid[m][:, None] & valid[m][None, :] & others
        per_modality.append(supcon_per_anchor(zm @ zm.T / temperature, candidate, candidate & same))
    return _mean_over_modalities(per_modality, z)


def _emcl(z: dict[str, Tensor], labels: Tensor, valid: dict[str, Tensor], temperature: float):
    zn, valid = _normalised(z), _valid(z, valid)
    names = list(zn)
    all_z = torch.cat([zn[m] for m in names])  # (M*B, D), modality-major
    all_valid = torch.cat([valid[m] for m in names])
    all_labels = labels.repeat(len(names))
    owner = torch.arange(len(names), device=labels.device).repeat_interleave(len(labels))
    same = labels[:, None] == all_labels[None, :]
    per_modality = []
    for i, m in enumerate(names):
        candidate = valid[m][:, None] & all_valid[None, :] & (owner != i)[None, :]
        per_modality.append(supcon_per_anchor(zn[m] @ all_z.T / temperature, candidate, candidate & same))
    return _mean_over_modalities(per_modality, z)


def _smcl(z: dict[str, Tensor], valid: dict[str, Tensor], alpha: float):
    zn, valid = _normalised(z), _valid(z, valid)
    terms, both_valid = [], []
    for a, b in itertools.combinations(list(zn), 2):
        terms.append(((zn[a] * zn[b]).sum(dim=-1) - alpha) ** 2)
        both_valid.append(valid[a] & valid[b])
    if not terms:  # a single modality: no pair
        return _zero(z), torch.zeros((), dtype=torch.long)
    weight = torch.cat(both_valid)
    pairs = weight.sum()
    squares = torch.cat(terms)
    return torch.where(weight, squares, torch.zeros_like(squares)).sum() / pairs.clamp(min=1), pairs


# ----- the losses -----------------------------------------------------------------------------
def amcl_loss(z: dict[str, Tensor], labels: Tensor, valid: dict[str, Tensor], temperature: float) -> Tensor:
    """Intra-modal SupCon. z {m: (B, D)}, labels (B,), valid {m: (B,) bool} -> scalar."""
    return _amcl(z, labels, valid, temperature)[0]


def emcl_loss(z: dict[str, Tensor], labels: Tensor, valid: dict[str, Tensor], temperature: float) -> Tensor:
    """Inter-modal SupCon (positives and negatives from the other modalities). -> scalar."""
    return _emcl(z, labels, valid, temperature)[0]


def smcl_loss(z: dict[str, Tensor], valid: dict[str, Tensor], alpha: float) -> Tensor:
    """Sample-wise alignment: mean over a sample's valid modality pairs of (cos - alpha)^2. -> scalar."""
    return _smcl(z, valid, alpha)[0]


def mercl_loss(
    z: dict[str, Tensor], labels: Tensor, valid: dict[str, Tensor], cfg: LossConfig, gather: bool = False
) -> LossOutput:
    """l1 AMCL + l2 EMCL + l3 SMCL; ``gather=True`` first all-gathers z, labels and valid over DDP."""
    if gather:
        z, labels, valid = all_gather_batch(z, labels, valid)
    amcl, n_amcl = _amcl(z, labels, valid, cfg.temperature)
    emcl, n_emcl = _emcl(z, labels, valid, cfg.temperature)
    smcl, n_smcl = _smcl(z, valid, cfg.alpha)
    total = cfg.l1 * amcl + cfg.l2 * emcl + cfg.l3 * smcl
    return LossOutput(total, amcl, emcl, smcl, n_amcl, n_emcl, n_smcl)
