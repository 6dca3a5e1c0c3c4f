"""MERCL losses against slow, loop-by-loop references; the audio-energy gate; empty cases."""

from __future__ import annotations

import math

import pytest
import torch

from mercl.config import from_dict
from mercl.errors import ConfigError
from mercl.losses import (
    LossConfig,
    amcl_loss,
    audio_valid,
    emcl_loss,
    mercl_loss,
    smcl_loss,
    valid_masks,
)

MODS = ("video", "audio", "eeg")


# ----- references: explicit loops over anchors and pairs ---------------------------------------
def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt((v * v).sum())


def _supcon_anchor(anchor, candidates, positives, t):
    """-1/|P| sum_p log(exp(a.p/t) / sum_{j in A} exp(a.j/t)), one anchor, plain loops."""
    denominator = sum(torch.exp(torch.dot(anchor, c) / t) for c in candidates)
    return -sum(torch.log(torch.exp(torch.dot(anchor, p) / t) / denominator) for p in positives) / len(
        positives
    )


def ref_amcl(z, labels, valid, t):
    per_modality = []
    for m in z:
        losses = []
        n = len(labels)
        for i in range(n):
            if not valid[m][i]:
                continue
            others = [j for j in range(n) if j != i and valid[m][j]]
            pos = [j for j in others if labels[j] == labels[i]]
            if pos:
                unit = [_unit(z[m][j]) for j in range(n)]
                losses.append(_supcon_anchor(unit[i], [unit[j] for j in others], [unit[j] for j in pos], t))
        if losses:
            per_modality.append(sum(losses) / len(losses))
    return sum(per_modality) / len(per_modality) if per_modality else torch.tensor(0.0, dtype=torch.float64)


def ref_emcl(z, labels, valid, t):
    per_modality = []
    n = len(labels)
    for m in z:
        losses = []
        for i in range(n):
            if not valid[m][i]:
                continue
            others = [(m2, j) for m2 in z if m2 != m for j in range(n) if valid[m2][j]]
            pos = [(m2, j) for m2, j in others if labels[j] == labels[i]]
            if pos:
                losses.append(
                    _supcon_anchor(
                        _unit(z[m][i]),
                        [_unit(z[m2][j]) for m2, j in others],
                        [_unit(z[m2][j]) for m2, j in pos],
                        t,
                    )
                )
        if losses:
            per_modality.append(sum(losses) / len(losses))
    return sum(per_modality) / len(per_modality) if per_modality else torch.tensor(0.0, dtype=torch.float64)


def ref_smcl(z, valid, alpha):
    """The paper's form: per sample and anchor modality, the mean over its other valid modalities."""
    terms = []
    for i in range(len(next(iter(z.values())))):
        for m in z:
            if not valid[m][i]:
                continue
            for m2 in z:
                if m2 != m and valid[m2][i]:
                    cos = torch.dot(_unit(z[m][i]), _unit(z[m2][i]))
                    terms.append((cos - alpha) ** 2)
    return sum(terms) / len(terms) if terms else torch.tensor(0.0, dtype=torch.float64)


def _inputs(seed, mods=MODS, n=9, dim=6, n_classes=3, p_valid=0.75):
    g = torch.Generator().manual_seed(seed)
    z = {m: torch.randn(n, dim, generator=g, dtype=torch.float64) for m in mods}
    labels = torch.randint(0, n_classes, (n,), generator=g)
    valid = {m: torch.rand(n, generator=g) < p_valid for m in mods}
    return z, labels, valid


SEEDS = [0, 1, 2, 3, 4]
SUBSETS = [MODS, ("video", "eeg"), ("audio",)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mods", SUBSETS)
def test_amcl_matches_reference(seed, mods):
    z, labels, valid = _inputs(seed, mods)
    got = amcl_loss(z, labels, valid, temperature=0.1)
    torch.testing.assert_close(got, ref_amcl(z, labels, valid, 0.1), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mods", SUBSETS)
def test_emcl_matches_reference(seed, mods):
    z, labels, valid = _inputs(seed, mods)
    got = emcl_loss(z, labels, valid, temperature=0.2)
    torch.testing.assert_close(got, ref_emcl(z, labels, valid, 0.2), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mods", SUBSETS)
def test_smcl_matches_reference(seed, mods):
    z, labels, valid = _inputs(seed, mods)
    got = smcl_loss(z, valid, alpha=0.8)
    torch.testing.assert_close(got, ref_smcl(z, valid, 0.8), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1])
def test_mercl_total_and_gradients_match_reference(seed):
    z, labels, valid = _inputs(seed)
    cfg = LossConfig(l1=0.5, l2=2.0, l3=1.5, alpha=0.6, temperature=0.3)
    z1 = {m: v.clone().requires_grad_(True) for m, v in z.items()}
    z2 = {m: v.clone().requires_grad_(True) for m, v in z.items()}
    out = mercl_loss(z1, labels, valid, cfg)
    ref = (
        cfg.l1 * ref_amcl(z2, labels, valid, cfg.temperature)
        + cfg.l2 * ref_emcl(z2, labels, valid, cfg.temperature)
        + cfg.l3 * ref_smcl(z2, valid, cfg.alpha)
    )
    torch.testing.assert_close(out.total, ref, rtol=1e-5, atol=1e-8)
    out.total.backward()
    ref.backward()
    for m in MODS:
        torch.testing.assert_close(z1[m].grad, z2[m].grad, rtol=1e-5, atol=1e-8)
    # anchors with >= 1 positive, counted by hand
    n_amcl = sum(
        1
        for m in MODS
        for i in range(len(labels))
        if valid[m][i] and any(j != i and valid[m][j] and labels[j] == labels[i] for j in range(len(labels)))
    )
    assert out.amcl_anchors == n_amcl
    assert out.smcl_pairs == sum(
        int(valid[a][i] and valid[b][i])
        for a, b in [("video", "audio"), ("video", "eeg"), ("audio", "eeg")]
        for i in range(len(labels))
    )
    scalars = out.scalars()
    assert set(scalars) >= {"loss", "amcl", "emcl", "smcl"} and math.isfinite(scalars["loss"])


def test_float32_agrees_with_float64():
    z, labels, valid = _inputs(7)
    cfg = LossConfig()
    exact = mercl_loss(z, labels, valid, cfg).total
    single = mercl_loss({m: v.float() for m, v in z.items()}, labels, valid, cfg).total
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), exact, rtol=1e-4, atol=1e-6)


def _batch(n=8):
    g = torch.Generator().manual_seed(3)
    present = torch.ones(n, 3, dtype=torch.bool)
    present[5, 1] = False  # audio missing
    energy = torch.full((n,), -20.0)
    energy[2] = -70.0  # quiet audio: gated
    return {"present": present, "audio_energy": energy, "label": torch.randint(0, 2, (n,), generator=g)}


def test_audio_valid_gate_and_presence():
    batch = _batch()
    gated = audio_valid(batch, LossConfig())
    assert gated.tolist() == [True, True, False, True, True, False, True, True]
    ungated = audio_valid(batch, LossConfig(energy_gate=False))
    assert ungated.tolist() == [True, True, True, True, True, False, True, True]
    masks = valid_masks(batch, ("video", "audio", "eeg"), LossConfig())
    assert masks["audio"].tolist() == gated.tolist() and bool(masks["video"].all())


@pytest.mark.parametrize("sample", [2, 5])  # gated for low energy, and audio absent
def test_gated_audio_leaves_every_term(sample):
    batch = _batch()
    g = torch.Generator().manual_seed(11)
    z = {m: torch.randn(8, 5, generator=g, dtype=torch.float64) for m in MODS}
    moved = {m: v.clone() for m, v in z.items()}
    moved["audio"][sample] = torch.randn(5, generator=g, dtype=torch.float64) * 3
    for cfg in (LossConfig(), LossConfig(energy_gate=False)):
        valid = valid_masks(batch, MODS, cfg)
        before = mercl_loss(z, batch["label"], valid, cfg)
        after = mercl_loss(moved, batch["label"], valid, cfg)
        same = [torch.equal(getattr(before, k), getattr(after, k)) for k in ("total", "amcl", "emcl", "smcl")]
        if valid["audio"][sample]:
            assert not any(same)  # the ungated, present audio does count (sample 2 without the gate)
        else:
            assert all(same)


def test_no_anchor_is_zero_with_gradient():
    z = {m: torch.randn(4, 3, requires_grad=True) for m in MODS}
    labels = torch.arange(4)
    nobody = {m: torch.zeros(4, dtype=torch.bool) for m in MODS}
    out = mercl_loss(z, labels, nobody, LossConfig())
    for value in (out.total, out.amcl, out.emcl, out.smcl):
        assert value.item() == 0.0
    out.total.backward()
    assert all(torch.equal(v.grad, torch.zeros_like(v)) for v in z.values())
    assert (out.amcl_anchors, out.emcl_anchors, out.smcl_pairs) == (0, 0, 0)

    # all labels distinct, one modality: no positives anywhere, still finite
    single = {"eeg": torch.randn(4, 3, requires_grad=True)}
    out = mercl_loss(single, labels, {"eeg": torch.ones(4, dtype=torch.bool)}, LossConfig())
    assert out.total.item() == 0.0
    out.total.backward()
    assert torch.isfinite(single["eeg"].grad).all()

    # a lone valid sample per modality, no same-class partner: only SMCL has terms
    one = {m: torch.zeros(4, dtype=torch.bool) for m in MODS}
    for m in MODS:
        one[m][0] = True
    out = mercl_loss(z, labels, one, LossConfig())
    assert out.amcl.item() == 0.0 and out.smcl_pairs == 3 and math.isfinite(out.total.item())


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"l1": -1.0}, "l1"),
        ({"l3": -0.1}, "l3"),
        ({"temperature": 0.0}, "temperature"),
        ({"alpha": 1.5}, "alpha"),
    ],
)
def test_bad_loss_config_names_field(data, field):
    with pytest.raises(ConfigError) as info:
        from_dict(LossConfig, data)
    assert info.value.field == field and field in str(info.value)
