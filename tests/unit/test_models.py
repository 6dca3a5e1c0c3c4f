"""The MERCL model with tiny widths: every modality subset, masking, ablation, freezing, cache, weights."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from torch import nn

from mercl.config import from_dict
from mercl.errors import ConfigError, InputFileError, MerclError
from mercl.models import (
    AudioEncoderConfig,
    ConcatFusion,
    CrossModalFusion,
    DataShapes,
    EegEncoderConfig,
    ModelConfig,
    TcnConfig,
    VggishSpatialEncoder,
    VideoEncoderConfig,
    VideoSpatialEncoder,
    build_model,
)

B = 4
SHAPES = DataShapes(eeg=(5, 6, 5), audio=(150, 20), video=(3, 3, 40, 40), n_classes=3)
WIDTH = 16
BACKBONE = "test_vit"  # timm's 0.3 M-parameter ViT (patch 16, 64 features)
SUBSETS = ["v", "a", "e", "av", "ae", "ve", "ave"]
NAMES = {"v": "video", "a": "audio", "e": "eeg"}


def tiny_config(modalities="ave", **changes) -> ModelConfig:
    cfg = ModelConfig(
        video=VideoEncoderConfig(backbone=BACKBONE, img_size=32),
        audio=AudioEncoderConfig(width=2, embed_dim=12, patch_frames=32),
        eeg=EegEncoderConfig(channels_out=8, kernel=25),
        tcn=TcnConfig(dilations=[1, 2, 4]),
        width=WIDTH,
        embed_dim=8,
        heads=2,
        classifier_hidden=8,
        modalities=[NAMES[c] for c in modalities],
    )
    return dataclasses.replace(cfg, **changes)


def make_batch(seed=0, n=B) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "eeg": torch.randn(n, *SHAPES.eeg, generator=g) - 11.0,  # log10 band power in V^2
        "audio": torch.randn(n, *SHAPES.audio, generator=g),
        "video": torch.randint(0, 256, (n, *SHAPES.video), generator=g, dtype=torch.uint8),
        "present": torch.ones(n, 3, dtype=torch.bool),
        "audio_energy": torch.full((n,), -20.0),
        "label": torch.randint(0, SHAPES.n_classes, (n,), generator=g),
    }


def expected_steps(modality: str) -> int:
    return {"video": SHAPES.video[0], "audio": 5, "eeg": SHAPES.eeg[0]}[modality]  # audio: ceil(150 / 32)


@pytest.mark.parametrize("subset", SUBSETS)
def test_forward_and_backward_every_subset(subset):
    torch.manual_seed(0)
    trainable = tiny_config(
        subset,
        video=VideoEncoderConfig(BACKBONE, 32, freeze=False),
        audio=AudioEncoderConfig(width=2, embed_dim=12, patch_frames=32, freeze=False),
    )
    model = build_model(trainable, SHAPES)
    model.train()
    batch = make_batch()
    mods = model.modalities
    assert set(mods) == {NAMES[c] for c in subset}

    s = model.spatial(batch)
    h = model.encode(batch)
    z = model.project(h)
    feature_dims = {"video": 64, "audio": 12, "eeg": 8}
    for m in mods:
        assert s[m].shape == (B, expected_steps(m), feature_dims[m])
        assert h[m].shape == (B, expected_steps(m), WIDTH)
        assert z[m].shape == (B, 8)
        torch.testing.assert_close(z[m].norm(dim=-1), torch.ones(B))

    logits = model(batch)
    assert logits.shape == (B, SHAPES.n_classes) and torch.isfinite(logits).all()
    n_pairs = {1: 1, 2: 2, 3: 6}[len(mods)]
    assert model.fusion.out_dim == n_pairs * WIDTH

    # one backward through both stages' outputs reaches every parameter
    loss = torch.nn.functional.cross_entropy(logits, batch["label"]) + sum(v.sum() for v in z.values())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_missing_audio_is_masked_not_nan():
    torch.manual_seed(1)
    model = build_model(tiny_config(), SHAPES)
    batch = make_batch(1)
    batch["present"][1, 1] = False
    batch["audio"][1] = float("nan")  # whatever an absent sample holds must not leak

    model.train()
    logits = model(batch)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    # in eval mode the absent sample's audio content has no effect at all
    model.eval()
    with torch.no_grad():
        reference = model(batch)
        batch["audio"][1] = 1e3
        assert torch.equal(model(batch), reference)
        batch["present"][1, 1] = True
        assert not torch.allclose(model(batch)[1], reference[1])  # present again: it counts

    # a sample with every modality absent still gives finite logits
    batch["present"][2] = False
    with torch.no_grad():
        assert torch.isfinite(model(batch)).all()


def test_concatenation_ablation():
    model = build_model(tiny_config(cross_attention=False), SHAPES)
    assert isinstance(model.fusion, ConcatFusion)
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    assert model.fusion.out_dim == 3 * WIDTH
    logits = model(make_batch())
    assert logits.shape == (B, SHAPES.n_classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.classifier.parameters())

    with_cma = build_model(tiny_config(), SHAPES)
    assert isinstance(with_cma.fusion, CrossModalFusion)
    assert len(with_cma.fusion.attentions) == 6


def test_freeze_encoders_freezes_exactly_the_encoders():
    model = build_model(tiny_config(), SHAPES)
    encoder = {id(p) for p in model.encoder_parameters()}
    head = {id(p) for p in model.head_parameters()}
    every = {id(p) for p in model.parameters()}
    assert encoder and head and not encoder & head and encoder | head == every
    backbone = {id(p) for p in model.spatial_encoders["video"].parameters()}
    backbone |= {id(p) for p in model.spatial_encoders["audio"].parameters()}

    # config freeze=True: the backbones are frozen from the start, the rest trains
    assert all(p.requires_grad == (id(p) not in backbone) for p in model.parameters())

    model.freeze_encoders(True)
    model.train()
    assert all(p.requires_grad == (id(p) in head) for p in model.parameters())
    bn = model.temporal_encoders["eeg"].blocks[0].net[1]
    assert not bn.training and model.classifier.training
    stats = bn.running_mean.clone()
    model(make_batch()).sum().backward()
    assert torch.equal(bn.running_mean, stats)  # BatchNorm in eval: statistics untouched
    assert all((p.grad is not None) == (id(p) in head) for p in model.parameters())

    model.freeze_encoders(False)
    model.train()
    assert bn.training
    assert all(p.requires_grad == (id(p) not in backbone) for p in model.parameters())


def test_cached_backbone_features_equal_live_path():
    torch.manual_seed(2)
    model = build_model(tiny_config(), SHAPES)
    assert model.uses_backbone_cache
    batch = make_batch(2)
    batch["present"][3, 0] = False  # an absent video sample must match too
    model.eval()
    cache = model.backbone_features(batch)
    assert cache["video_feat"].shape == (B, 3, 64) and cache["audio_feat"].shape == (B, 5, 12)
    cached = {k: v for k, v in batch.items() if k not in ("video", "audio")} | cache
    live_s, cached_s = model.spatial(batch), model.spatial(cached)
    for m in model.modalities:
        torch.testing.assert_close(cached_s[m], live_s[m], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(cached), model(batch), rtol=0, atol=0)

    unfrozen = tiny_config(video=VideoEncoderConfig(BACKBONE, 32, freeze=False))
    assert not build_model(unfrozen, SHAPES).uses_backbone_cache
    assert not build_model(tiny_config("e"), SHAPES).uses_backbone_cache


def test_model_with_cached_backbone_stand_ins_trains_like_the_full_model():
    """Stand-ins (no ViT/VGGish built): same init of everything else, same outputs and
    gradients on cached features, the same backbone digest; raw frames are refused."""
    from mercl.errors import MerclError
    from mercl.models.cached_backbone import CachedBackbone
    from mercl.training.checkpoint import frozen_backbones_digest, trained_state

    torch.manual_seed(5)
    full = build_model(tiny_config(), SHAPES)
    stand_ins = {m: CachedBackbone.of(m, full.spatial_encoders[m]) for m in ("video", "audio")}
    torch.manual_seed(5)
    light = build_model(tiny_config(), SHAPES, cached=stand_ins)
    assert sum(p.numel() for p in light.spatial_encoders.parameters()) < 0.1 * sum(
        p.numel() for p in full.spatial_encoders.parameters())
    state, light_state = trained_state(full), trained_state(light)
    assert list(state) == list(light_state)
    for key in state:
        torch.testing.assert_close(light_state[key], state[key], rtol=0, atol=0)
    assert frozen_backbones_digest(light) == frozen_backbones_digest(full)

    batch = make_batch(3)
    full.eval()
    cached = {k: v for k, v in batch.items() if k not in ("video", "audio")} | full.backbone_features(batch)
    full.train(), light.train()
    torch.manual_seed(9)
    loss_full = torch.nn.functional.cross_entropy(full(cached), cached["label"])
    torch.manual_seed(9)
    loss_light = torch.nn.functional.cross_entropy(light(cached), cached["label"])
    torch.testing.assert_close(loss_light, loss_full, rtol=0, atol=0)
    loss_full.backward(), loss_light.backward()
    grads = dict(light.named_parameters())
    for name, p in full.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name].grad, p.grad, rtol=0, atol=0)

    with pytest.raises(MerclError, match="without its video backbone.*'video_feat'"):
        light(batch)
    other = tiny_config(video=VideoEncoderConfig(BACKBONE, img_size=48))
    with pytest.raises(ConfigError, match="model.video.*cached"):
        build_model(other, SHAPES, cached=stand_ins)


def test_search_worker_builds_its_model_without_importing_timm_or_sklearn():
    """Every trial worker is a new process: timm (+torchvision) and scikit-learn cost it ~2 s."""
    import pathlib
    import subprocess
    import sys

    code = """
import sys
import tuning.worker
from mercl.models.cached_backbone import CachedBackbone
from mercl.models.config import AudioEncoderConfig, DataShapes, ModelConfig, VideoEncoderConfig
from mercl.models.mercl_model import build_model
from mercl.training.checkpoint import frozen_backbones_digest
from mercl.training.loop import train_two_stage
cfg = ModelConfig(video=VideoEncoderConfig(backbone="test_vit", img_size=32), width=16, heads=2)
shapes = DataShapes(eeg=(5, 6, 5), audio=(150, 20), video=(3, 3, 40, 40), n_classes=3)
stand_ins = {"video": CachedBackbone("video", cfg.video, 64, "d1"),
             "audio": CachedBackbone("audio", cfg.audio, cfg.audio.embed_dim, "d2")}
model = build_model(cfg, shapes, cached=stand_ins)
frozen_backbones_digest(model)  # every run computes it
loaded = sorted(m for m in ("timm", "torchvision", "sklearn", "scipy") if m in sys.modules)
assert not loaded, loaded
"""
    root = pathlib.Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_video_input_uint8_and_float_agree():
    encoder = VideoSpatialEncoder(VideoEncoderConfig(BACKBONE, img_size=32)).eval()
    frames = torch.randint(0, 256, (2, 3, 3, 40, 40), dtype=torch.uint8)
    torch.testing.assert_close(encoder(frames), encoder(frames.float() / 255.0))
    assert encoder(frames).shape == (2, 3, 64)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"width": 30, "heads": 4}, "heads"),
        ({"modalities": ["video", "smell"]}, "modalities[1]"),
        ({"modalities": []}, "modalities"),
        ({"tcn": {"dilations": [1, 0]}}, "tcn.dilations[1]"),
        ({"eeg": {"dropout": 1.0}}, "eeg.dropout"),
    ],
)
def test_bad_model_config_names_field(changes, field):
    with pytest.raises(ConfigError) as info:
        from_dict(ModelConfig, changes)
    assert info.value.field == field


def test_build_model_validates_configs_built_in_python():
    with pytest.raises(ConfigError, match=r"'model\.heads'.*must divide width"):
        build_model(tiny_config(heads=3), SHAPES)
    with pytest.raises(ConfigError, match=r"'model\.modalities\[0\]'.*'smell'"):
        build_model(dataclasses.replace(tiny_config(), modalities=["smell"]), SHAPES)
    with pytest.raises(ConfigError, match=r"'model\.video\.backbone'.*no_such_net"):
        build_model(tiny_config(video=VideoEncoderConfig("no_such_net")), SHAPES)
    with pytest.raises(ConfigError, match=r"'model\.video\.feature_dim'"):
        build_model(tiny_config(video=VideoEncoderConfig(BACKBONE, 32, feature_dim=65)), SHAPES)
    with pytest.raises(ConfigError, match=r"'shapes\.n_classes'"):
        build_model(tiny_config(), dataclasses.replace(SHAPES, n_classes=1))


def test_wrong_batch_shape_is_a_one_line_error():
    model = build_model(tiny_config("e"), SHAPES)
    batch = make_batch()
    batch["eeg"] = batch["eeg"][:, :, :4]
    with pytest.raises(MerclError, match=r"batch 'eeg' must be \(B, T_e, 6, 5\)"):
        model(batch)
    with pytest.raises(MerclError, match="batch has no 'video'"):
        build_model(tiny_config("v"), SHAPES)({"eeg": batch["eeg"]})


def test_video_weights_round_trip(tmp_path):
    frames = torch.randint(0, 256, (2, 2, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(3)
    source = VideoSpatialEncoder(VideoEncoderConfig(BACKBONE, img_size=32)).eval()
    path = tmp_path / "vit.pth"
    torch.save(source.backbone.state_dict(), path)
    torch.manual_seed(4)
    fresh = VideoSpatialEncoder(VideoEncoderConfig(BACKBONE, img_size=32)).eval()
    assert not torch.allclose(fresh(frames), source(frames))
    loaded = VideoSpatialEncoder(VideoEncoderConfig(BACKBONE, img_size=32, weights=str(path))).eval()
    torch.testing.assert_close(loaded(frames), source(frames), rtol=0, atol=0)

    # a full classifier checkpoint (with its head, wrapped as {"state_dict": ...}) loads too
    classifier = timm.create_model(BACKBONE, pretrained=False, num_classes=7, img_size=32)
    torch.save({"state_dict": classifier.state_dict()}, tmp_path / "full.pth")
    cfg = VideoEncoderConfig(BACKBONE, img_size=32, weights=str(tmp_path / "full.pth"))
    trunk = VideoSpatialEncoder(cfg).backbone.state_dict()
    assert all(torch.equal(v, classifier.state_dict()[k]) for k, v in trunk.items())


def test_audio_weights_round_trip(tmp_path):
    cfg = AudioEncoderConfig(width=2, embed_dim=12, patch_frames=32)
    audio = torch.randn(2, 70, 20)
    source = VggishSpatialEncoder(cfg, n_mels=20)
    path = tmp_path / "vggish.pt"
    torch.save(source.state_dict(), path)
    loaded = VggishSpatialEncoder(dataclasses.replace(cfg, weights=str(path)), n_mels=20)
    torch.testing.assert_close(loaded(audio), source(audio), rtol=0, atol=0)
    assert loaded(audio).shape == (2, 3, 12)


def test_bad_weights_files_are_input_file_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(InputFileError, match=r"nope\.pth: no such weights file"):
        VideoSpatialEncoder(VideoEncoderConfig(BACKBONE, 32, weights=str(missing)))
    with pytest.raises(InputFileError, match=r"nope\.pth: no such weights file"):
        build_model(tiny_config("a", audio=AudioEncoderConfig(weights=str(missing))), SHAPES)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputFileError, match="garbage.pth: cannot read weights") as info:
        VideoSpatialEncoder(VideoEncoderConfig(BACKBONE, 32, weights=str(garbage)))
    assert "\n" not in str(info.value)

    other = tmp_path / "other.pth"  # weights of a different architecture
    torch.save(VggishSpatialEncoder(AudioEncoderConfig(width=2, embed_dim=12), n_mels=20).state_dict(), other)
    with pytest.raises(InputFileError, match="other.pth: weights do not fit") as info:
        VideoSpatialEncoder(VideoEncoderConfig(BACKBONE, 32, weights=str(other)))
    assert "\n" not in str(info.value)
    wider = tmp_path / "wider.pth"  # same names, other shapes
    torch.save(VggishSpatialEncoder(AudioEncoderConfig(width=4, embed_dim=12), n_mels=20).state_dict(), wider)
    with pytest.raises(InputFileError, match="wider.pth: weights do not fit") as info:
        VggishSpatialEncoder(AudioEncoderConfig(width=2, embed_dim=12, weights=str(wider)), n_mels=20)
    assert "\n" not in str(info.value)


def test_vggish_pools_time_only_when_mels_run_out():
    # 96-frame patches of 20 Mel bands: four time pools (96 -> 6), Mel 20 -> 10 -> 5 -> 3 -> 2
    encoder = VggishSpatialEncoder(AudioEncoderConfig(width=1, embed_dim=4), n_mels=20)
    assert encoder.embeddings[0].in_features == 8 * 6 * 2
    # 3 Mel bands: pooled to 2 then 1, after which only time is pooled
    encoder = VggishSpatialEncoder(AudioEncoderConfig(width=1, embed_dim=4), n_mels=3)
    assert encoder.embeddings[0].in_features == 8 * 6 * 1
    assert encoder(torch.randn(1, 200, 3)).shape == (1, 3, 4)
    # the defaults on 64 Mel bands are VGGish itself: torchvggish's names, shapes and 72,141,184 weights
    with torch.device("meta"):
        vggish = VggishSpatialEncoder(AudioEncoderConfig(), n_mels=64)
    shapes = {k: tuple(v.shape) for k, v in vggish.state_dict().items()}
    assert shapes["features.0.weight"] == (64, 1, 3, 3)
    assert shapes["features.13.weight"] == (512, 512, 3, 3)
    assert shapes["embeddings.0.weight"] == (4096, 512 * 6 * 4)
    assert shapes["embeddings.4.weight"] == (128, 4096)
    assert sum(p.numel() for p in vggish.parameters()) == 72_141_184


def test_data_shapes_from_a_manifest_like_dict():
    data = {"eeg": [5, 6, 5], "audio": [150, 20], "video": [3, 3, 40, 40], "n_classes": 3}
    assert from_dict(DataShapes, data) == SHAPES
    with pytest.raises(ConfigError) as info:
        from_dict(DataShapes, data | {"video": [3, 1, 40, 40]})
    assert info.value.field == "video"


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dilation", [1, 2, 4, 8])
@pytest.mark.parametrize("steps", [1, 4, 5, 7, 9, 20])
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_tcn_conv_as_a_matmul_equals_the_full_same_padded_conv(kernel, dilation, steps):
    """(B, T, D) in and out, live taps only: the output and every gradient of Conv1d(padding='same')."""
    import torch.nn.functional as F

    from mercl.models.tcn import SameDilatedConv1d

    torch.manual_seed(0)
    conv = SameDilatedConv1d(6, 8, kernel, dilation).double()
    x = torch.randn(2, steps, 6, dtype=torch.double, requires_grad=True)
    ours = conv(x)
    full = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, dilation=dilation, padding="same").transpose(1, 2)
    torch.testing.assert_close(ours, full)
    for a, b in zip(torch.autograd.grad(ours.square().sum(), [x, conv.weight, conv.bias]),
                    torch.autograd.grad(full.square().sum(), [x, conv.weight, conv.bias]), strict=True):
        torch.testing.assert_close(a, b)


def test_tcn_equals_the_conv_batchnorm_elu_network_in_the_channels_first_layout():
    """ResidualTCN in (B, T, D) = Conv1d -> BatchNorm1d -> ELU (+ 1x1 residual) on (B, D, T), with the
    same parameters: outputs, input and weight gradients, BatchNorm running statistics, eval mode."""
    import copy

    import torch.nn.functional as F

    from mercl.models.config import TcnConfig
    from mercl.models.tcn import ResidualTCN

    torch.manual_seed(0)
    tcn = ResidualTCN(5, 8, TcnConfig(dilations=[1, 2, 4, 8], kernel_size=3, dropout=0.0)).double()
    norms = [copy.deepcopy(block.net[1]) for block in tcn.blocks]

    def reference(x):  # (B, T, D)
        h = x.transpose(1, 2)
        for block, norm in zip(tcn.blocks, norms, strict=True):
            conv = block.net[0]
            out = F.elu(norm(F.conv1d(h, conv.weight, conv.bias, dilation=conv.dilation, padding="same")))
            res = h if isinstance(block.residual, nn.Identity) else F.conv1d(h, block.residual.weight,
                                                                            block.residual.bias)
            h = out + res
        return h.transpose(1, 2)

    x = torch.randn(3, 7, 5, dtype=torch.double)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = tcn(x1), reference(x2)
    assert y1.shape == (3, 7, 8)
    torch.testing.assert_close(y1, y2)
    g = torch.randn_like(y1)
    weights = [tcn.blocks[0].net[0].weight, tcn.blocks[0].residual.weight, tcn.blocks[3].net[0].weight]
    for a, b in zip(torch.autograd.grad(y1, [x1, *weights], g), torch.autograd.grad(y2, [x2, *weights], g),
                    strict=True):
        torch.testing.assert_close(a, b)
    for block, norm in zip(tcn.blocks, norms, strict=True):
        torch.testing.assert_close(block.net[1].running_mean, norm.running_mean)
        torch.testing.assert_close(block.net[1].running_var, norm.running_var)
    tcn.eval()
    for norm in norms:
        norm.eval()
    torch.testing.assert_close(tcn(x), reference(x))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_cross_modal_attention_equals_nn_multihead_attention(train):
    """Same output and gradients as nn.MultiheadAttention with its parameters; a sample whose
    source steps are all masked (a missing modality) gets zeros."""
    from mercl.models.cross_attention import CrossModalAttention

    torch.manual_seed(0)
    cma = CrossModalAttention(16, 4, dropout=0.0).double().train(train)
    h_tgt = torch.randn(5, 4, 16, dtype=torch.double, requires_grad=True)
    h_src = torch.randn(5, 7, 16, dtype=torch.double, requires_grad=True)
    ignore = torch.zeros(5, 7, dtype=torch.bool)
    ignore[1] = True  # source absent
    ignore[2, 3:] = True
    ours = cma(h_tgt, h_src, key_padding_mask=ignore)
    ref, _ = cma.attention(h_tgt, h_src, h_src, key_padding_mask=ignore & ~ignore.all(1, keepdim=True),
                           need_weights=False)
    ref = ref.masked_fill(ignore.all(1)[:, None, None], 0.0)
    torch.testing.assert_close(ours, ref)
    assert torch.equal(ours[1], torch.zeros_like(ours[1]))
    g = torch.randn_like(ours)
    params = [h_tgt, h_src, cma.attention.in_proj_weight, cma.attention.in_proj_bias, cma.attention.out_proj.weight]
    for a, b in zip(torch.autograd.grad(ours, params, g), torch.autograd.grad(ref, params, g), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(cma(h_tgt, h_src), cma.attention(h_tgt, h_src, h_src, need_weights=False)[0])


def test_elu_equals_nn_elu_with_its_gradient():
    from mercl.models.elu import ELU

    torch.manual_seed(0)
    x = torch.cat([torch.randn(10_000) * 4, torch.tensor([0.0, -0.0, 1e-30, -1e-30, -80.0, 80.0])])
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = ELU()(x1), nn.ELU()(x2)
    torch.testing.assert_close(y1, y2, rtol=0, atol=2e-7)  # exp(x) - 1 against expm1(x)
    g = torch.randn_like(y1)
    torch.testing.assert_close(torch.autograd.grad(y1, x1, g)[0], torch.autograd.grad(y2, x2, g)[0],
                               rtol=1e-6, atol=1e-6)


def test_frozen_encodings_are_computed_once_per_row_and_give_the_same_logits():
    from mercl.training.frozen_encodings import FrozenEncodings

    torch.manual_seed(0)
    model = build_model(tiny_config(), SHAPES)
    model.train()
    model(make_batch(seed=3, n=8))  # move the BatchNorm running statistics off their initial values
    model.freeze_encoders(True)
    model.train()  # the head trains (dropout on); the frozen encoders stay in eval mode
    encodings = FrozenEncodings(model)
    batch = {**make_batch(seed=1), "index": torch.tensor([7, 3, 9, 1])}
    for step in range(2):
        torch.manual_seed(step)
        full = model(batch)
        torch.manual_seed(step)
        assert torch.equal(model.head(encodings(batch), model.present(batch)), full)
    assert encodings.encoded_batches == 1
    # the same rows in another order (another epoch's shuffle) come from the cache, row for row
    order = torch.tensor([2, 0, 3, 1])
    shuffled = {k: v[order] for k, v in batch.items()}
    cached = encodings(shuffled)
    assert encodings.encoded_batches == 1
    with torch.no_grad():
        fresh = model.encode(shuffled)
    for m in fresh:
        torch.testing.assert_close(cached[m], fresh[m])
    # a batch with one unseen row is encoded; its seen rows keep their stored encodings
    mixed = {k: torch.cat([v[:1], make_batch(seed=2, n=1)[k]]) for k, v in batch.items() if k != "index"}
    mixed["index"] = torch.tensor([7, 42])
    encodings(mixed)
    assert encodings.encoded_batches == 2 and len(encodings.slot) == 5


@pytest.mark.parametrize("n_steps,kernel", [(7, 25), (9, 4)], ids=["capped-odd", "even"])
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_eeg_stem_as_matmuls_equals_the_conformer_convolutions(n_steps, kernel):
    """The stem's matmul forward = Conv2d(1 x k, 'same') -> Conv2d(C x 1) -> BatchNorm2d -> ELU -> 1x1 conv,
    with the same parameters: outputs, input and weight gradients, BatchNorm running statistics."""
    import torch.nn.functional as F

    from mercl.models.config import EegEncoderConfig
    from mercl.models.eeg_encoder import EegSpatialEncoder

    torch.manual_seed(0)
    enc = EegSpatialEncoder(EegEncoderConfig(channels_out=6, kernel=kernel, dropout=0.0), 9, 5, n_steps)
    temporal, spatial, norm, _, _ = enc.stem
    norm2d = nn.BatchNorm2d(6)
    norm2d.load_state_dict(norm.state_dict())

    def reference(eeg):
        x = eeg.permute(0, 3, 2, 1)  # (B, bands, C, T)
        x = F.conv2d(x, temporal.weight, temporal.bias, padding="same")
        x = F.elu(norm2d(F.conv2d(x, spatial.weight, spatial.bias)))  # (B, width, 1, T)
        x = F.conv2d(x, enc.projection.weight, enc.projection.bias)
        return x.squeeze(2).transpose(1, 2)

    eeg = torch.randn(4, n_steps, 9, 5)
    x1, x2 = eeg.clone().requires_grad_(True), eeg.clone().requires_grad_(True)
    y1, y2 = enc(x1), reference(x2)
    assert y1.shape == (4, n_steps, 6)
    torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(y1)
    grads1 = torch.autograd.grad(y1, [x1, temporal.weight, spatial.weight, enc.projection.weight], g)
    grads2 = torch.autograd.grad(y2, [x2, temporal.weight, spatial.weight, enc.projection.weight], g)
    for a, b in zip(grads1, grads2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.running_mean, norm2d.running_mean)
    torch.testing.assert_close(norm.running_var, norm2d.running_var)
    enc.eval()
    norm2d.eval()
    torch.testing.assert_close(enc(eeg), reference(eeg), rtol=1e-4, atol=1e-5)


def test_dropout_drops_p_and_rescales_like_nn_dropout():
    from mercl.models.dropout import Dropout

    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    drop = Dropout(0.3)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert torch.unique(y).tolist() == [0.0, pytest.approx(1 / 0.7)]
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # gradient passes where kept, scaled the same
    drop.eval()
    assert drop(x) is x
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))


# ---------------------------------------------------------------- pretrained backbones


def test_video_weights_from_a_timm_safetensors_checkpoint(tmp_path):
    """A timm classifier's own checkpoint in the hub's format (``model.safetensors``, head included)
    loads through ``model.video.weights``: every trunk tensor equal, the head left out."""
    from safetensors.torch import save_file

    torch.manual_seed(11)
    classifier = timm.create_model(BACKBONE, pretrained=False, num_classes=10, img_size=32)
    save_file(classifier.state_dict(), str(tmp_path / "model.safetensors"))
    encoder = VideoSpatialEncoder(VideoEncoderConfig(BACKBONE, img_size=32, weights=str(tmp_path / "model.safetensors")))
    trunk = encoder.backbone.state_dict()
    source = classifier.state_dict()
    assert set(source) - set(trunk) == {"head.weight", "head.bias"}
    assert all(torch.equal(value, source[name]) for name, value in trunk.items())
    frames = torch.randint(0, 256, (1, 2, 3, 32, 32), dtype=torch.uint8)
    classifier.reset_classifier(0)
    torch.testing.assert_close(encoder.eval()(frames)[0], classifier.eval()(encoder.preprocess(frames[0])))


def test_hub_weights_names():
    from mercl.models.weights import hub_model_name

    assert hub_model_name(None, BACKBONE) is None and hub_model_name("w/vit.pth", BACKBONE) is None
    assert hub_model_name("hub", BACKBONE) == BACKBONE
    assert hub_model_name("hub:test_vit.r160_in1k", BACKBONE) == "test_vit.r160_in1k"
    with pytest.raises(ConfigError, match="'model.video.weights'.*is a vit_small_patch16_224, the backbone is test_vit"):
        hub_model_name("hub:vit_small_patch16_224.augreg_in21k", BACKBONE)
    with pytest.raises(ConfigError, match="names no model"):
        hub_model_name("hub:", BACKBONE)
    with pytest.raises(ConfigError, match="no pretrained 'test_vit.nosuchtag' \\(it has test_vit.r160_in1k\\)"):
        VideoSpatialEncoder(VideoEncoderConfig(BACKBONE, 32, weights="hub:test_vit.nosuchtag"))


HUB_SCRIPT = """
from mercl.errors import MerclError
from mercl.models import VideoEncoderConfig, VideoSpatialEncoder
try:
    VideoSpatialEncoder(VideoEncoderConfig("test_vit", img_size=32, weights="hub"))
except MerclError as exc:
    print("MERCL-ERROR", exc)
"""


@pytest.mark.parametrize(
    "env",
    [
        {"HF_HUB_OFFLINE": "1"},  # the user says offline
        {"HF_ENDPOINT": "http://127.0.0.1:9"},  # a hub nothing listens for: unreachable, found out at once
    ],
    ids=["HF_HUB_OFFLINE", "unreachable-endpoint"],
)
def test_hub_weights_offline_is_one_line_naming_the_model_and_the_local_file_way(tmp_path, env):
    """``weights: hub`` without network: one line naming the model and how to use a local file;
    never a download (an empty HF cache in tmp_path, the endpoint on a closed local port)."""
    import os
    import subprocess
    import sys
    import time

    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    clean.update(env, HF_HOME=str(tmp_path / "hf"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", HUB_SCRIPT], env=clean, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("MERCL-ERROR")]
    assert "video backbone test_vit: no pretrained weights for test_vit from the Hugging Face hub" in line
    assert "offline and not in the local Hugging Face cache" in line
    assert "set model.video.weights to the local file" in line
    assert "create_model('test_vit', pretrained=True, pretrained_cfg_overlay=dict(file=PATH))" in line
    assert time.perf_counter() - start < 60  # no minute of retries against an unreachable hub
    assert not list((tmp_path / "hf").rglob("*.safetensors"))


def vggish_reference() -> nn.Module:
    """torchvggish's VGG built here from torch.nn, layer by layer as its vggish.py does:
    conv3x3(pad 1)+ReLU blocks 64 M 128 M 256 256 M 512 512 M (M = 2x2 max-pool), the
    (N, C, frames, mels) map transposed to (N, frames, mels, C) and flattened, then
    Linear(512*4*6, 4096)+ReLU, Linear(4096, 4096)+ReLU, Linear(4096, 128)+ReLU."""

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels = [], 1
            for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
                if v == "M":
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                else:
                    layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                    channels = v
            self.features = nn.Sequential(*layers)
            self.embeddings = nn.Sequential(
                nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096), nn.ReLU(True),
                nn.Linear(4096, 128), nn.ReLU(True),
            )  # fmt: skip

        def forward(self, x):  # x: (N, 1, 96 frames, 64 mels)
            x = self.features(x)
            x = torch.transpose(x, 1, 3)
            x = torch.transpose(x, 1, 2)
            return self.embeddings(x.contiguous().view(x.size(0), -1))

    return Reference()


@pytest.fixture(scope="module")
def vggish_file(tmp_path_factory):
    """A state dict with the release file's names and shapes (``vggish-10086976.pth``), random values
    (small biases so the ReLUs pass signal), and the reference network that holds them."""
    torch.manual_seed(5)
    reference = vggish_reference().eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.bias.uniform_(0.0, 0.05)
    path = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(reference.state_dict(), path)
    return path, reference


def test_vggish_release_layout_loads_whole_and_computes_torchvggish_vgg(vggish_file, caplog):
    path, reference = vggish_file
    encoder = VggishSpatialEncoder(AudioEncoderConfig(weights=str(path)), n_mels=64).eval()
    assert encoder.random_layers == []
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in encoder.state_dict().items())
    audio = torch.randn(2, 192, 64) * 2.0  # two 0.96 s patches per row
    with torch.no_grad():
        ours = encoder(audio)
        expected = reference(audio.reshape(4, 1, 96, 64)).reshape(2, 2, 128)
    assert ours.shape == (2, 2, 128) and expected.abs().sum() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_vggish_weights_on_other_input_load_the_conv_stack_and_log_the_random_layers(vggish_file, caplog):
    path, reference = vggish_file
    with caplog.at_level("WARNING", logger="mercl.models.weights"):
        encoder = VggishSpatialEncoder(AudioEncoderConfig(weights=str(path)), n_mels=20)
    features = {k: v for k, v in encoder.state_dict().items() if k.startswith("features.")}
    assert len(features) == 12 and all(torch.equal(v, reference.state_dict()[k]) for k, v in features.items())
    assert encoder.random_layers == [f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("bias", "weight")]
    (message,) = [r.getMessage() for r in caplog.records]
    assert str(path) in message and "embeddings.0, embeddings.2, embeddings.4" in message
    assert "embeddings.0.weight is (4096, 12288) in the file, (4096, 6144) here" in message
    # a conv stack of another width still does not fit: an error, not a silent partial load
    with pytest.raises(InputFileError, match="weights do not fit the VGGish audio encoder"):
        VggishSpatialEncoder(AudioEncoderConfig(width=32, weights=str(path)), n_mels=64)


def test_vggish_missing_file_says_where_the_release_is(tmp_path):
    with pytest.raises(InputFileError, match=r"vggish-10086976\.pth: no such weights file .*torchvggish's release: https://"):
        VggishSpatialEncoder(AudioEncoderConfig(weights=str(tmp_path / "vggish-10086976.pth")), n_mels=64)


def test_a_per_unit_fact_is_said_once_per_process(caplog):
    """Building a model per experiment unit: "random init" reaches the console (INFO) once, the
    repeats go to DEBUG; another backbone is its own line."""
    import logging

    from mercl.models.weights import load_local_weights

    caplog.set_level(logging.DEBUG, logger="mercl.models.weights")
    for what in ("once-test backbone", "once-test backbone", "once-test other backbone"):
        load_local_weights(nn.Linear(2, 2), None, what)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "once-test" in r.getMessage()]
    assert said == [("INFO", "once-test backbone: random init"), ("DEBUG", "once-test backbone: random init"),
                    ("INFO", "once-test other backbone: random init")]
