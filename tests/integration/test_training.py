"""The two-stage training loop: configs, metrics, normalisation, resume after a kill, TensorBoard, DDP.

The data is a small synthetic study written by ``mercl synth`` (real mp4 + EDF files) and
prepared by ``mercl prepare`` with 32 px frames; :func:`build_demo_dataset` builds it once per
pytest session (tests/test_crossval.py and tests/test_feature_cache.py reuse it).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import tiny

from mercl.cli import main as mercl_main
from mercl.data.reader import load_dataset
from mercl.errors import ConfigError, MerclError
from mercl.training.checkpoint import load_checkpoint, save_checkpoint
from mercl.training.config import load_train_config
from mercl.training.crossval import fit_split_normalization, train_split
from mercl.training.metrics import classification_metrics, majority_baseline
from mercl.training.tb_logger import TensorBoardLogger

REPO = Path(__file__).resolve().parents[2]


def _split(prepared):
    rows = np.arange(len(prepared))
    groups = prepared.trial_groups()
    val = np.isin(groups, np.unique(groups)[::5])
    return rows[~val], rows[val]


# ----------------------------------------------------------------------------- configs


def test_named_configs_load_with_the_papers_sizes():
    paper = load_train_config("paper")
    assert paper.model.video.backbone == "vit_base_patch16_224" and paper.model.video.img_size == 224
    assert paper.model.tcn.dilations == [1, 2, 4, 8] and paper.model.tcn.dropout == 0.5
    assert paper.model.audio.embed_dim == 128 and paper.model.audio.patch_frames == 96
    assert paper.model.video.freeze and paper.model.audio.freeze and not paper.unfreeze_encoders
    small, t = load_train_config("small"), load_train_config("tiny")
    assert small.model.width >= t.model.width == 32 and t.model.video.img_size == 32
    assert load_train_config("tiny", {"finetune.epochs": 3, "model.width": 64}).finetune.epochs == 3


def test_bad_config_fields_are_named(tmp_path):
    with pytest.raises(ConfigError, match="'pretrain.lr'"):
        load_train_config("tiny", {"pretrain.lr": 0})
    with pytest.raises(ConfigError, match="'model.heads'"):
        load_train_config("tiny", {"model.heads": 5})
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: config field 'finetune.epoch': unknown field"):
        load_train_config(bad)
    with pytest.raises(MerclError, match="no such config file .*paper, small, tiny"):
        load_train_config("huge")


# ----------------------------------------------------------------------------- metrics


def test_metrics_and_majority_baseline_of_the_training_fold():
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], n_classes=3)
    assert m.accuracy == pytest.approx(3 / 5)
    # F1: class 0 = 2*1/(2+1+1) = 0.5, class 1 = 2*2/(4+1) = 0.8, class 2 = 0
    assert m.per_class_f1 == pytest.approx([0.5, 0.8, 0.0])
    assert m.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # the training fold's majority (class 2), not the test fold's (class 0)
    pred, base = majority_baseline(train_labels=[2, 2, 2, 0], test_labels=[0, 0, 0, 2], n_classes=3)
    assert pred.tolist() == [2, 2, 2, 2] and base.accuracy == pytest.approx(0.25)


@pytest.mark.parametrize("seed", range(6))
def test_metrics_equal_sklearns_definitions(seed):
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 6))
    n = int(rng.integers(1, 40))
    # some classes absent from one or both arrays
    y_true = rng.integers(0, max(1, n_classes - seed % 2), n)
    y_pred = rng.integers(seed % 3 == 0, n_classes, n)
    m = classification_metrics(y_true, y_pred, n_classes)
    labels = np.arange(n_classes)
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert m.macro_f1 == pytest.approx(f1_score(y_true, y_pred, labels=np.union1d(y_true, y_pred),
                                                average="macro", zero_division=0))
    assert m.per_class_f1 == pytest.approx(f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0))
    assert m.confusion.tolist() == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    with pytest.raises(ValueError, match="range"):
        classification_metrics([0, n_classes], [0, 0], n_classes)


@pytest.mark.parametrize("k", [1, 3, 10, 50])
def test_knn_probe_predicts_like_sklearn(k):
    from sklearn.neighbors import KNeighborsClassifier

    from mercl.training.knn import knn_predict

    rng = np.random.default_rng(k)
    centres = rng.normal(size=(4, 16)) * 2
    train_y = rng.integers(0, 4, 40)
    train_x = (centres[train_y] + rng.normal(size=(40, 16))).astype(np.float32)
    query = (centres[rng.integers(0, 4, 300)] + 1.5 * rng.normal(size=(300, 16))).astype(np.float32)
    expected = KNeighborsClassifier(n_neighbors=min(k, 40)).fit(train_x, train_y).predict(query)
    got = knn_predict(train_x, train_y, query, k, chunk=64)
    assert got.dtype == np.int64 and got.tolist() == expected.tolist()


# ----------------------------------------------------------------------------- normalisation


def test_normalisation_statistics_come_from_training_rows_only(demo_dataset):
    prepared = load_dataset(demo_dataset)
    train, val = _split(prepared)
    stats = fit_split_normalization(prepared, train, normalize_audio=True)
    eeg = prepared.eeg[train].astype(np.float64)
    np.testing.assert_allclose(stats.eeg_mean, eeg.mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.eeg_std, eeg.std(axis=(0, 1)), rtol=1e-5, atol=1e-6)
    assert stats.eeg_mean.shape == prepared.eeg.shape[2:]
    stim = np.unique(prepared.stimulus_index[train])
    stim = stim[(stim >= 0) & prepared.stimuli.audio_present[np.maximum(stim, 0)]]
    np.testing.assert_allclose(stats.audio_mean, prepared.stimuli.audio[stim].mean(axis=(0, 1)), rtol=1e-4, atol=1e-5)
    # validation rows do not move the statistics
    prepared.eeg[val] += 1000.0
    again = fit_split_normalization(prepared, train, normalize_audio=True)
    np.testing.assert_array_equal(again.eeg_mean, stats.eeg_mean)
    # applied to a batch: training rows end up standardised per (channel, band)
    batch = stats.apply({"eeg": torch.from_numpy(prepared.eeg[train])})
    np.testing.assert_allclose(batch["eeg"].mean(dim=(0, 1)).numpy(), 0.0, atol=1e-3)


# ----------------------------------------------------------------------------- resume


class _Killed(Exception):
    pass


def _state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("stop_at", [2, 3, 5], ids=["during-pretrain", "after-pretrain", "during-finetune"])
def test_killed_run_resumes_to_the_same_result(demo_dataset, tmp_path, stop_at):
    prepared = load_dataset(demo_dataset)
    train, val = _split(prepared)
    cfg = tiny(**{"pretrain.epochs": 3, "finetune.epochs": 4, "finetune.patience": 3})
    straight = train_split(prepared, "quadrant4", train, val, cfg)

    ckpt = tmp_path / "checkpoint.pt"

    def killed_after(report):
        save_checkpoint(report.state(), ckpt)
        if report.global_epoch == stop_at:
            raise _Killed

    with pytest.raises(_Killed):
        train_split(prepared, "quadrant4", train, val, cfg, on_epoch_end=killed_after)
    state = load_checkpoint(ckpt)
    assert state["stage"] == ("pretrain" if stop_at <= 3 else "finetune") and len(state["history"]) == stop_at
    seen = []
    resumed = train_split(prepared, "quadrant4", train, val, cfg, resume=state,
                          on_epoch_end=lambda r: seen.append(r.global_epoch))
    assert seen == list(range(stop_at + 1, 8))
    assert resumed.result.history == straight.result.history
    assert resumed.result.best_epoch == straight.result.best_epoch
    _state_equal(resumed.model.state_dict(), straight.model.state_dict())


def test_checkpoints_leave_out_frozen_backbones_and_refuse_other_ones(demo_dataset):
    """Frozen ViT/VGGish weights never change: states skip them (most of the bytes) but carry their digest."""
    prepared = load_dataset(demo_dataset)
    train, val = _split(prepared)
    cfg = tiny(**{"pretrain.epochs": 1, "finetune.epochs": 1})
    states = []
    run = train_split(prepared, "quadrant4", train, val, cfg, on_epoch_end=lambda r: states.append(r.state()))
    full = run.model.state_dict()
    backbone_keys = {k for k in full if k.startswith(("spatial_encoders.video.", "spatial_encoders.audio."))}
    assert backbone_keys and all(k not in states[-1]["model"] for k in backbone_keys)
    assert set(states[-1]["model"]) == set(full) - backbone_keys
    backbone_values = sum(full[k].numel() for k in backbone_keys)
    assert backbone_values > sum(v.numel() for v in states[-1]["model"].values())  # most of the weights
    assert isinstance(states[0]["backbones"], str)

    bad = {**states[0], "backbones": "0" * 64}
    with pytest.raises(ValueError, match="other frozen backbone weights"):
        train_split(prepared, "quadrant4", train, val, cfg, resume=bad)


def test_pretraining_stops_early_and_hands_its_best_probe_epoch_to_fine_tuning(demo_dataset):
    prepared = load_dataset(demo_dataset)
    train, val = _split(prepared)
    cfg = tiny(**{"pretrain.epochs": 8, "pretrain.patience": 2, "finetune.epochs": 1})
    encoders = {}

    def keep(report):
        if report.stage == "pretrain":
            encoders[report.epoch] = {k: v for k, v in report.state()["model"].items()
                                      if not k.startswith(("fusion.", "classifier."))}

    run = train_split(prepared, "quadrant4", train, val, cfg, on_epoch_end=keep)
    probe = [h["val_metric"] for h in run.result.history if h["stage"] == "pretrain"]
    best = int(np.argmax(probe)) + 1  # the first epoch with the best probe accuracy
    assert len(probe) == min(8, best + 2)  # stopped two epochs without improvement after it
    final = run.model.state_dict()
    _state_equal({k: final[k] for k in encoders[best]}, encoders[best])
    if best < len(probe):
        assert any(not torch.equal(final[k], v) for k, v in encoders[len(probe)].items())


@pytest.mark.slow  # two `mercl train` runs plus a subprocess (torch import): ~20 s CPU
def test_killed_cli_training_resumes_to_the_same_metrics(demo_dataset, tmp_path):
    """`mercl train` killed with SIGKILL mid-run, then `--resume`: same metrics and weights as a whole run."""
    args = ["train", str(demo_dataset), "--label", "quadrant4", "--config", "tiny", "--no-progress",
            "--set", "pretrain.epochs=3", "--set", "finetune.epochs=6"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert mercl_main([*args, "-o", str(whole)]) == 0

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "mercl.cli", *args, "-o", str(cut)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (cut / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (cut / "checkpoint.pt").exists() and not (cut / "model.pt").exists(), "the run was not cut short"
    done = len(load_checkpoint(cut / "checkpoint.pt")["history"])
    assert 1 <= done < 9
    assert mercl_main([*args, "-o", str(cut), "--resume"]) == 0

    a, b = (json.loads((d / "metrics.json").read_text()) for d in (whole, cut))
    for key in ("val_accuracy", "val_macro_f1", "val_confusion", "best_epoch", "majority_val_accuracy",
                "clip_majority_val_accuracy"):
        assert a[key] == b[key], key
    _state_equal(load_checkpoint(whole / "model.pt")["model"], load_checkpoint(cut / "model.pt")["model"])


def test_deterministic_mode_repeats_exactly_and_is_switched_off_afterwards(demo_dataset):
    prepared = load_dataset(demo_dataset, verify=False)
    train, val = _split(prepared)
    cfg = tiny(**{"pretrain.epochs": 1, "finetune.epochs": 2, "deterministic": True})
    assert not torch.are_deterministic_algorithms_enabled()
    seen = []
    first = train_split(prepared, "quadrant4", train, val, cfg,
                        on_epoch_end=lambda r: seen.append(torch.are_deterministic_algorithms_enabled()))
    second = train_split(prepared, "quadrant4", train, val, cfg)
    assert seen == [True, True, True] and not torch.are_deterministic_algorithms_enabled()
    assert first.result.history == second.result.history
    _state_equal(first.model.state_dict(), second.model.state_dict())


# ----------------------------------------------------------------------------- TensorBoard


def test_tensorboard_has_every_loss_term_metrics_confusion_and_embeddings(demo_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    prepared = load_dataset(demo_dataset)
    train, val = _split(prepared)
    tb = TensorBoardLogger(tmp_path / "tb")
    train_split(prepared, "quadrant4", train, val, tiny(**{"pretrain.epochs": 2, "finetune.epochs": 2}), tb=tb)
    tb.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("pretrain/amcl", "pretrain/emcl", "pretrain/smcl", "pretrain/loss", "pretrain/val_metric",
                "finetune/ce", "finetune/val_accuracy", "finetune/val_macro_f1", "lr/pretrain", "lr/finetune"):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("finetune/ce")] == [3, 4]  # global epochs after 2 pre-training ones
    assert "confusion/val" in events.Tags()["images"]
    projector = (tmp_path / "tb" / "projector_config.pbtxt").read_text()
    assert "metadata.tsv" in projector
    meta = next((tmp_path / "tb").glob("*/shared_embedding/metadata.tsv")).read_text().splitlines()
    assert meta[0] == "class\tmodality"
    assert {line.split("\t")[1] for line in meta[1:]} == {"video", "audio", "eeg"}
    assert {line.split("\t")[0] for line in meta[1:]} <= {"HVHA", "LVHA", "LVLA", "HVLA"}


# ----------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, dataset: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    # a file rendezvous: a free TCP port picked beforehand can be taken before rank 0 binds it
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out_dir, 'rendezvous')}", rank=rank,
                            world_size=2, timeout=datetime.timedelta(seconds=120))
    try:
        prepared = load_dataset(dataset, verify=False)
        train, val = _split(prepared)
        n = len(train) // 2 * 2
        mine = train[:n][rank::2]  # equal shards: the same number of batches on both ranks
        cfg = tiny(**{"pretrain.epochs": 1, "finetune.epochs": 2, "unfreeze_encoders": True,
                      "pretrain.batch_size": 16, "finetune.batch_size": 16})
        run = train_split(prepared, "quadrant4", mine, val[rank::2], cfg)
        torch.save({"state": run.model.state_dict(), "history": run.result.history},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two worker processes that each import torch and train: ~20 s CPU
def test_ddp_ranks_stay_in_sync(demo_dataset, tmp_path):
    """Two gloo ranks train on their halves: weights stay identical, validation is global."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(demo_dataset), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    _state_equal(r0["state"], r1["state"])
    assert [h["val_metric"] for h in r0["history"]] == [h["val_metric"] for h in r1["history"]]
    assert len(r0["history"]) == 3


# ----------------------------------------------------------------------------- GPU-ready steps


def test_bf16_autocast_trains_the_tiny_config_about_as_well_as_fp32(demo_dataset):
    """bf16 autocast (what an A10G/L4 runs fast) on the CPU: same losses to ~1 %, same accuracy to a few points."""
    from mercl.training.loop import predict_batches

    prepared = load_dataset(demo_dataset, verify=False)
    train, val = _split(prepared)
    runs, accuracy = {}, {}
    for precision in ("fp32", "bf16"):
        run = train_split(prepared, "quadrant4", train, val, tiny(precision=precision))
        pred = predict_batches(run.model, run.batches(prepared, train, "quadrant4", tiny()), run.device)  # fp32
        accuracy[precision] = float((pred["pred"] == pred["label"]).mean())
        runs[precision] = run.result
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert [h["stage"] for h in bf16.history] == [h["stage"] for h in fp32.history]
    for a, b in zip(fp32.history, bf16.history, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.05)  # bf16 keeps 8 bits of mantissa
    assert fp32.history[-1]["loss"] < fp32.history[6]["loss"] / 2  # fine-tuning learnt something
    # planted labels: both well above chance (0.25), and bf16 no more than a few points worse. (Not "within a
    # few points either way": the losses above agree to 5 % every epoch, yet training-row accuracy of a tiny
    # model moves by 0.2 with the suite's order, seen as fp32 0.656 vs bf16 0.864, bf16 the better.)
    assert min(accuracy.values()) > 0.6 and accuracy["bf16"] >= accuracy["fp32"] - 0.05, accuracy
    assert bf16.best_val_metric > 0.4 and abs(bf16.best_val_metric - fp32.best_val_metric) <= 0.1


@pytest.mark.parametrize("stage, unfreeze, unused", [
    ("pretrain", False, []),
    ("finetune", False, []),  # Algorithm 1: frozen encoders, fusion + classifier train
    ("finetune", True, ["projections."]),  # encoders train in stage 2, the projections are not run
])
def test_ddp_looks_for_unused_parameters_only_where_the_stage_leaves_some(demo_dataset, stage, unfreeze, unused):
    """The loop's rule (``stage_unused_parameters``) against autograd on a real batch."""
    import torch.nn.functional as F

    from mercl.losses import mercl_loss
    from mercl.training.loop import modality_valid, stage_unused_parameters

    prepared = load_dataset(demo_dataset, verify=False)
    train, val = _split(prepared)
    cfg = tiny(**{"pretrain.epochs": 1, "finetune.epochs": 1})
    run = train_split(prepared, "quadrant4", train, val, cfg)
    model = run.model.train()
    model.freeze_encoders(stage == "finetune" and not unfreeze)
    if stage == "pretrain":
        for p in model.head_parameters():
            p.requires_grad_(False)
    batch = next(iter(run.batches(prepared, train[:24], "quadrant4", cfg)))
    model.zero_grad(set_to_none=True)
    if stage == "pretrain":
        z = model.project(model.encode(batch))
        mercl_loss(z, batch["label"], modality_valid(batch, z, cfg.loss), cfg.loss).total.backward()
    else:
        F.cross_entropy(model(batch), batch["label"]).backward()
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    predicted = stage_unused_parameters(model, stage)
    assert predicted == without_grad
    assert sorted({n.split(".")[0] + "." for n in predicted}) == unused
    assert any(p.requires_grad for p in model.parameters())


def test_an_epoch_reads_its_losses_from_the_device_once(monkeypatch):
    """Host syncs of a fine-tuning epoch do not grow with its steps (they were one per loss per step)."""
    from torch import nn

    from mercl.training.loop import _finetune_epoch, make_optimizer
    from mercl.training.step_probe import count_step_events

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, batch):
            return self.linear(batch["x"])

    def batches(n):
        g = torch.Generator().manual_seed(n)
        return [{"x": torch.randn(8, 4, generator=g), "label": torch.randint(0, 3, (8,), generator=g)}
                for _ in range(n)]

    cfg, device, net = tiny(), torch.device("cpu"), Net()
    optimizer = make_optimizer(list(net.parameters()), 1e-2, 0.0, device)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    syncs = {}
    for steps in (2, 7):
        with count_step_events() as events:
            metrics = _finetune_epoch(net, net, batches(steps), optimizer, cfg, device, scaler)
        syncs[steps] = events.total_host_syncs
        assert metrics["loss"] == metrics["ce"] > 0
    assert syncs[2] == syncs[7] == 1, syncs  # float(total) after the last step


def test_a_pretraining_epoch_waits_on_the_host_once():
    """MERCL's own model and loss: a stage-1 epoch reads its loss terms once, and nothing in a
    step waits for the device (the loss weights anchors and pairs instead of indexing them out)."""
    from mercl.data.prepare import load_prepare_config
    from mercl.models import DataShapes, build_model
    from mercl.training.loop import _Embedder, _pretrain_epoch, make_optimizer
    from mercl.training.step_probe import count_step_events

    cfg, device = tiny(), torch.device("cpu")
    dims = load_prepare_config(None, {"video.size": 32}).shapes(32)
    shapes = DataShapes(eeg=tuple(dims["eeg"]), audio=tuple(dims["audio"]), video=tuple(dims["video"]),
                        n_classes=4)
    torch.manual_seed(0)
    model = build_model(cfg.model, shapes)
    g = torch.Generator().manual_seed(0)
    n = 8
    live = {"eeg": torch.randn(n, *shapes.eeg, generator=g), "audio": torch.randn(n, *shapes.audio, generator=g) - 8,
            "video": torch.randint(0, 256, (n, *shapes.video), generator=g, dtype=torch.uint8),
            "present": torch.tensor([[1, 1, 1], [1, 0, 1]] * 4, dtype=torch.bool),  # some audio missing
            "audio_energy": torch.tensor([-20.0, -80.0] * 4), "label": torch.arange(n) % 4}
    batch = {k: v for k, v in live.items() if k not in ("video", "audio")} | model.backbone_features(live)
    optimizer = make_optimizer(list(model.encoder_parameters()), 1e-3, 0.0, device)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    found = {}
    for steps in (2, 5):
        with count_step_events() as events:
            metrics = _pretrain_epoch(_Embedder(model), model, [batch] * steps, optimizer, cfg, device, scaler)
        found[steps] = dict(events.host_syncs)
        assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert found[2] == found[5] == {"tolist": 1}, found  # the four loss sums, read after the last step


def test_fp16_checkpoints_its_grad_scaler_and_resumes_to_the_same_result(demo_dataset):
    """fp16 scales the loss (GradScaler); the scaler's state travels in the checkpoint, which
    loads with torch.load(weights_only=True), and the resumed run ends as the straight one."""
    import io

    prepared = load_dataset(demo_dataset, verify=False)
    train, val = _split(prepared)
    cfg = tiny(**{"precision": "fp16", "pretrain.epochs": 2, "finetune.epochs": 2})
    states = []
    straight = train_split(prepared, "quadrant4", train, val, cfg, on_epoch_end=lambda r: states.append(r.state()))
    assert all(state["scaler"]["scale"] > 0 for state in states)  # each stage's own scaler, every epoch
    fp32_state = []
    train_split(prepared, "quadrant4", train, val, tiny(**{"pretrain.epochs": 1, "finetune.epochs": 1}),
                on_epoch_end=lambda r: fp32_state.append(r.state()))
    assert fp32_state[-1]["scaler"] is None  # fp32 and bf16 run without one
    buffer = io.BytesIO()
    torch.save(states[2], buffer)  # after the first fine-tuning epoch
    buffer.seek(0)
    resumed = train_split(prepared, "quadrant4", train, val, cfg, resume=torch.load(buffer, weights_only=True))
    assert resumed.result.history == straight.result.history
    _state_equal(resumed.model.state_dict(), straight.model.state_dict())


def test_background_batches_keep_order_pass_errors_and_stop_when_left():
    """The CUDA path's producer thread (``_in_background``), exercised on the CPU."""
    import threading

    from mercl.training.loop import _in_background

    assert list(_in_background(range(7), lambda b: b * 10)) == [0, 10, 20, 30, 40, 50, 60]

    def failing():
        yield 1
        raise OSError("shard unreadable")

    with pytest.raises(OSError, match="shard unreadable"):
        list(_in_background(failing(), lambda b: b))

    produced = []
    gen = _in_background(iter(range(1000)), lambda b: produced.append(b) or b, ahead=2)
    assert next(gen) == 0
    gen.close()  # the consumer leaves early (embed_batches' limit): the thread stops
    assert not any(t.name == "mercl-batch-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) <= 5
