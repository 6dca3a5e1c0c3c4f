"""Benchmark MERCL training steps: live backbones vs. the backbone feature cache, FLOPs vs. the hardware.

Prints, in one run, for a training config (default ``small``) on DEAP-shaped inputs (32 EEG
channels and the default ``mercl prepare`` shapes: 4 s segments, 224 px frames at 1 fps,
20-band log-Mel):

* samples/s (best of the timed steps) of a pre-training step (encode + project + MERCL loss + backward + AdamW) and of a
  fine-tuning step (frozen encoders, cross-modal attention + classifier, CE) with the frozen
  ViT / VGGish run live on the raw frames and log-Mel, and with their cached features;
* a fine-tuning step on the frozen encoders' outputs (``encoded``): stage 2 freezes the
  encoders, so the loop encodes each row once (:class:`FrozenEncodings`) and every epoch after
  the first runs only the cross-modal attentions and the classifier;
* the cached/live speed-up per fine-tuning epoch (target >= 20x);
* FLOPs per sample of each step (``torch.utils.flop_counter.FlopCounterMode``: forward +
  backward of the matmuls/convolutions/attention), the FLOP/s the step achieves, this
  machine's float32 matmul FLOP/s measured in the same run (a big ``torch.mm``) and the
  fraction of that limit a step reaches (target >= 25 % for the ``small`` cached step);
* on a CPU, the cached steps again on one torch thread against one thread's matmul peak: how
  mercl's search and experiment workers run there (one thread per worker process);
* peak memory (``resource.getrusage`` max RSS; on a GPU also ``torch.cuda.max_memory_allocated``);
* fp32 vs bf16 (autocast) time of the cached pre-training and fine-tuning steps on the device
  (``precision`` in the training config);
* collectives and host syncs per DDP pre-training step, before and after the step stopped
  waiting on the host: two gloo ranks on this machine's CPU run the ``tiny`` config's
  pre-training epoch twice, (a) with the pre-change step reproduced here (each contrastive
  gather exchanging the ranks' sizes itself and reading them with ``int()``, the four loss
  terms read with ``float()`` every step, the loss indexing anchors and pairs out with boolean
  masks) and (b) with ``mercl.training.loop``'s own epoch (sizes exchanged once per step, the
  loss weighting anchors and pairs in fixed shapes, the embeddings gathered side by side in
  one collective and the labels and masks as one table in another, where each was gathered
  on its own before, losses summed on the device and read once per epoch).
  Counted by :mod:`mercl.training.step_probe` (Python-level ``torch.distributed`` calls and
  tensor reads; DDP's own gradient all-reduce runs in C++ and is the same in both). Per step
  and per epoch are separated by running epochs of two lengths. On ``--device cuda`` the
  syncs a single-process step really makes are counted as well
  (``torch.cuda.set_sync_debug_mode``).

Usage: ``.venv/bin/python bench/train.py [--config small] [--batch 64] [--steps 10] [--device auto]``
(``--quick``: skip the live-backbone steps and the per-core table, for a smoke run)
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import socket
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mercl.data.prepare import load_prepare_config
from mercl.losses import mercl_loss
from mercl.models.config import DataShapes
from mercl.models.mercl_model import build_model
from mercl.training.config import load_train_config
from mercl.training.frozen_encodings import FrozenEncodings
from mercl.training.loop import autocast, make_optimizer, modality_valid, resolve_device
from mercl.training.step_probe import count_step_events


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(device: torch.device, n: int, reps: int) -> float:
    """float32 FLOP/s of an n x n @ n x n torch.mm (2 n^3 FLOPs each), best of ``reps``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def make_batch(shapes: DataShapes, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random inputs of the dataset's shapes, every modality present, audio loud enough for the gate."""
    g = torch.Generator().manual_seed(0)
    out = {
        "eeg": torch.randn(batch, *shapes.eeg, generator=g),
        "audio": torch.randn(batch, *shapes.audio, generator=g) * 2 - 8,
        "video": torch.randint(0, 256, (batch, *shapes.video), generator=g, dtype=torch.uint8),
        "present": torch.ones(batch, 3, dtype=torch.bool),
        "audio_energy": torch.full((batch,), -20.0),
        "label": torch.arange(batch) % shapes.n_classes,
    }
    return {k: v.to(device) for k, v in out.items()}


def cached_batch(model, live: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch with the frozen backbones' features in place of frames and log-Mel."""
    feats = model.backbone_features(live)
    batch = {k: v for k, v in live.items() if k not in ("video", "audio")}
    batch.update(feats)
    return batch


PRECISION = ["fp32"]  # the autocast of pretrain_step / finetune_step (set by fp32_vs_bf16)


def pretrain_step(model, batch, optimizer, loss_cfg) -> None:
    device = batch["label"].device
    with autocast(device, PRECISION[0]):
        z = model.project(model.encode(batch))
        out = mercl_loss(z, batch["label"], modality_valid(batch, z.keys(), loss_cfg), loss_cfg)
    optimizer.zero_grad(set_to_none=True)
    out.total.backward()
    optimizer.step()


def finetune_step(model, batch, optimizer, loss_cfg) -> None:
    with autocast(batch["label"].device, PRECISION[0]):
        logits = model(batch)
    loss = F.cross_entropy(logits.float(), batch["label"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def head_step(model, batch, optimizer, loss_cfg) -> None:
    """A fine-tuning step from the second epoch on: the frozen encoders' outputs come from
    :class:`FrozenEncodings` (filled in the first epoch), so only the head runs."""
    loss = F.cross_entropy(model.head(batch["encodings"](batch), model.present(batch)), batch["label"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure(step, model, batch, optimizer, loss_cfg, device, steps: int, warmup: int) -> tuple[float, float]:
    """(best seconds per step, FLOPs per step) after ``warmup`` untimed steps.

    Steps are timed one by one and the fastest counts, like the matmul peak (best of 5): on a
    shared machine another process can only ever make a step slower. The median is printed too.
    """
    model.train()
    for _ in range(warmup):
        step(model, batch, optimizer, loss_cfg)
    sync(device)
    with FlopCounterMode(display=False) as counter:
        step(model, batch, optimizer, loss_cfg)
    sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(model, batch, optimizer, loss_cfg)
        sync(device)
        times.append(time.perf_counter() - start)
    print(f"  {step.__name__}: median {statistics.median(times) * 1e3:,.1f} ms, best {min(times) * 1e3:,.1f} ms "
          f"over {len(times)} steps")
    return min(times), float(counter.get_total_flops())


def per_core(model, cached, encoded, cfg, device, n: int, steps: int) -> tuple[float, list[tuple]]:
    """The cached steps again on one torch thread against one thread's matmul peak.

    mercl's CPU workers run this way (one torch thread per search worker and per experiment
    worker process, as many processes as cores): these steps' small ops gain little from a
    second intra-op thread, so the machine is used by data parallelism, not by threads.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        peak = matmul_flops_per_s(device, n, reps=10)
        rows = []
        model.freeze_encoders(False)
        for stage, source, step, batch in (("pre-training", "cached", pretrain_step, cached),
                                           ("fine-tuning", "cached", finetune_step, cached),
                                           ("fine-tuning", "encoded", head_step, encoded)):
            if stage == "fine-tuning":
                model.freeze_encoders(True)
                params = [p for p in model.head_parameters() if p.requires_grad]
            else:
                params = [p for p in model.encoder_parameters() if p.requires_grad]
            optimizer = make_optimizer(params, 1e-4, cfg.pretrain.weight_decay, device)
            rows.append((stage, source, *measure(step, model, batch, optimizer, cfg.loss, device, steps, 5)))
        peak = max(peak, matmul_flops_per_s(device, n, reps=10))
    finally:
        torch.set_num_threads(threads)
    return peak, rows


def print_per_core(peak: float, rows: list[tuple], batch_size: int) -> None:
    print()
    print(f"per core (1 torch thread, as mercl's search and experiment workers run on CPUs; "
          f"matmul peak {peak / 1e9:,.1f} GFLOP/s on 1 thread):")
    for stage, source, seconds, flops in rows:
        print(f"{stage:<14}{source:<9}{batch_size / seconds:>12,.1f}{seconds * 1e3:>10.1f}"
              f"{flops / batch_size / 1e6:>14,.1f}{flops / seconds / 1e9:>10.1f}{flops / seconds / peak:>9.1%}")


def fp32_vs_bf16(model, cached, cfg, device, steps: int, batch_size: int) -> None:
    """Best step time of the cached pre-training and fine-tuning steps under fp32 and bf16 autocast."""
    rows = {}
    for precision in ("fp32", "bf16"):
        PRECISION[0] = precision
        for stage, step_fn in (("pre-training", pretrain_step), ("fine-tuning", finetune_step)):
            model.freeze_encoders(stage == "fine-tuning")
            source = model.head_parameters() if stage == "fine-tuning" else model.encoder_parameters()
            optimizer = make_optimizer([p for p in source if p.requires_grad], 1e-4, 0.0, device)
            rows[stage, precision] = measure(step_fn, model, cached, optimizer, cfg.loss, device, steps, 3)[0]
    PRECISION[0] = "fp32"
    print()
    print(f"precision on {device} (cached features, best step; bf16 = torch.autocast(bfloat16)):")
    print(f"{'step':<14}{'fp32 ms':>10}{'bf16 ms':>10}{'bf16 speed-up':>15}")
    for stage in ("pre-training", "fine-tuning"):
        a, b = rows[stage, "fp32"], rows[stage, "bf16"]
        print(f"{stage:<14}{a * 1e3:>10.1f}{b * 1e3:>10.1f}{a / b:>14.2f}x  ({batch_size / a:,.0f} vs "
              f"{batch_size / b:,.0f} samples/s)")


# ----------------------------------------------------------------------------- collectives and host syncs


def _old_sizes(x: torch.Tensor) -> list[int]:
    """mercl.distributed._sizes as it was before: a size all-gather per gathered tensor, read with int()."""
    import torch.distributed as dist

    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _old_gather_batch(z, labels, valid):
    """mercl.distributed.all_gather_batch as it was before: one gather per embedding, label and mask."""
    from mercl.distributed import all_gather_no_grad, all_gather_with_grad

    return ({m: all_gather_with_grad(v) for m, v in z.items()}, all_gather_no_grad(labels),
            {m: all_gather_no_grad(v) for m, v in valid.items()})


def _old_supcon_per_anchor(sim, candidate, positive):
    """mercl.losses.supcon_per_anchor as it was before: anchors without a positive indexed out."""
    rows = positive.any(dim=1)
    sim, candidate, positive = sim[rows], candidate[rows], positive[rows]
    logits = sim.masked_fill(~candidate, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    picked = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    losses = -picked / positive.sum(dim=1)
    return losses, torch.ones(len(losses), dtype=torch.bool)


def _old_mean_over_modalities(per_modality, z):
    import mercl.losses as losses

    means = [anchor_losses.mean() for anchor_losses, _ in per_modality if anchor_losses.numel()]
    count = sum(anchor_losses.numel() for anchor_losses, _ in per_modality)
    return (torch.stack(means).mean() if means else losses._zero(z)), count


def _old_smcl(z, valid, alpha):
    """mercl.losses._smcl as it was before: the valid pairs indexed out."""
    import itertools

    import mercl.losses as losses

    zn, valid = losses._normalised(z), losses._valid(z, valid)
    terms = [(((zn[a] * zn[b]).sum(dim=-1) - alpha) ** 2)[valid[a] & valid[b]]
             for a, b in itertools.combinations(list(zn), 2)]
    pairs = torch.cat(terms) if terms else torch.zeros(0)
    return (pairs.mean() if pairs.numel() else losses._zero(z)), pairs.numel()


def _old_pretrain_epoch(net, model, batches, optimizer, cfg, device, scaler) -> dict[str, float]:
    """The stage-1 epoch as it was before: one float() per loss term and step, _old_sizes, a
    gather per tensor (_old_gather_batch) and the loss's boolean-mask indexing
    (_old_supcon_per_anchor, _old_smcl)."""
    import mercl.distributed as mdist
    import mercl.losses as losses
    from mercl.training.loop import to_device

    model.train()
    sums = {"loss": 0.0, "amcl": 0.0, "emcl": 0.0, "smcl": 0.0}
    old = {"supcon_per_anchor": _old_supcon_per_anchor, "_mean_over_modalities": _old_mean_over_modalities,
           "_smcl": _old_smcl, "all_gather_batch": _old_gather_batch}
    saved_loss = {name: getattr(losses, name) for name in old}
    saved, mdist._sizes = mdist._sizes, _old_sizes
    for name, function in old.items():
        setattr(losses, name, function)
    try:
        for batch in batches:
            batch = to_device(batch, device)
            z = net(batch)
            out = mercl_loss(z, batch["label"], modality_valid(batch, z.keys(), cfg.loss), cfg.loss, gather=True)
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            optimizer.step()
            sums["loss"] += float(out.total.detach())
            sums["amcl"] += float(out.amcl.detach())
            sums["emcl"] += float(out.emcl.detach())
            sums["smcl"] += float(out.smcl.detach())
    finally:
        mdist._sizes = saved
        for name, function in saved_loss.items():
            setattr(losses, name, function)
    return sums


def _count_rank(rank: int, port: int, out_dir: str, batch_size: int) -> None:
    """One gloo rank: pre-training epochs of 2 and 6 steps, old and new, counting events."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mercl.training.loop import _Embedder, _pretrain_epoch

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=120))
    try:
        cfg = load_train_config("tiny")
        dims = load_prepare_config(None, {"video.size": 32}).shapes(32)
        shapes = DataShapes(eeg=tuple(dims["eeg"]), audio=tuple(dims["audio"]), video=tuple(dims["video"]),
                            n_classes=4)
        torch.manual_seed(0)
        model = build_model(cfg.model, shapes)
        cpu = torch.device("cpu")
        batch = cached_batch(model, make_batch(shapes, batch_size, cpu))
        for p in model.head_parameters():  # stage 1 trains encoders and projections only, as the loop does
            p.requires_grad_(False)
        net = DistributedDataParallel(_Embedder(model), find_unused_parameters=False)
        optimizer = make_optimizer([p for p in model.encoder_parameters() if p.requires_grad], 1e-4, 0.0, cpu)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        counts = {}
        for mode, epoch in (("before", _old_pretrain_epoch), ("after", _pretrain_epoch)):
            for steps in (2, 6):
                with count_step_events() as events:
                    epoch(net, model, [batch] * steps, optimizer, cfg, cpu, scaler)
                counts[mode, steps] = (dict(events.collectives), dict(events.host_syncs))
        torch.save(counts, os.path.join(out_dir, f"counts{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _per_step(counts: dict, mode: str) -> tuple[dict, dict]:
    """{name: (per step, per epoch)} for collectives and host syncs, from epochs of 2 and 6 steps."""
    out = []
    for kind in (0, 1):
        short, long = counts[mode, 2][kind], counts[mode, 6][kind]
        names = sorted(set(short) | set(long))
        out.append({n: ((long.get(n, 0) - short.get(n, 0)) / 4,
                        short.get(n, 0) - 2 * (long.get(n, 0) - short.get(n, 0)) / 4) for n in names})
    return out[0], out[1]


def collectives_and_syncs(batch_size: int) -> None:
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_count_rank, args=(port, out_dir, batch_size), nprocs=2, join=True)
        counts = torch.load(os.path.join(out_dir, "counts0.pt"), weights_only=False)
    print()
    print(f"DDP pre-training step, 2 gloo ranks on the CPU, tiny config, {batch_size} rows per rank "
          "(counts per step | per epoch on top):")
    print("  before = the pre-change step reproduced in bench/train.py; after = mercl.training.loop")
    totals = {}
    for mode in ("before", "after"):
        collectives, syncs = _per_step(counts, mode)
        for label, table in (("collectives", collectives), ("host syncs", syncs)):
            per_step = sum(v[0] for v in table.values())
            per_epoch = sum(v[1] for v in table.values())
            totals[mode, label] = per_step
            detail = ", ".join(f"{n} {v[0]:g}" + (f" | {v[1]:g}" if v[1] else "") for n, v in table.items())
            print(f"  {mode:<7}{label:<12}{per_step:>5g} per step, {per_epoch:>3g} per epoch  ({detail})")
    print(f"  collectives per step {totals['before', 'collectives']:g} -> {totals['after', 'collectives']:g}; "
          f"host syncs per step {totals['before', 'host syncs']:g} -> {totals['after', 'host syncs']:g} "
          "(DDP's gradient all-reduce not counted)")


def cuda_syncs_per_step(model, cached, cfg, device) -> None:
    """Syncs a single-process pre-training step makes on CUDA, counted by torch's sync debug mode."""
    import warnings

    from mercl.training.loop import _Embedder, _pretrain_epoch

    model.freeze_encoders(False)
    optimizer = make_optimizer([p for p in model.encoder_parameters() if p.requires_grad], 1e-4, 0.0, device)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    net = _Embedder(model)
    found = {}
    for mode, epoch in (("before", _old_pretrain_epoch), ("after", _pretrain_epoch)):
        for steps in (2, 6):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    epoch(net, model, [cached] * steps, optimizer, cfg, device, scaler)
                    torch.cuda.synchronize(device)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            found[mode, steps] = sum("synchroniz" in str(w.message) for w in caught)
    print()
    print("CUDA syncs of a single-process pre-training step (torch.cuda.set_sync_debug_mode):")
    for mode in ("before", "after"):
        per_step = (found[mode, 6] - found[mode, 2]) / 4
        print(f"  {mode:<7}{per_step:g} per step, {found[mode, 2] - 2 * per_step:g} per epoch")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", help="training config: paper, small, tiny or a YAML file")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the config's fine-tune one)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps with cached features")
    parser.add_argument("--live-steps", type=int, default=2, help="timed steps with live backbones")
    parser.add_argument("--channels", type=int, default=32, help="EEG channels (DEAP: 32)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--mm", type=int, default=0, help="matmul size for the peak FLOP/s (0: 4096 GPU, 2048 CPU)")
    parser.add_argument("--quick", action="store_true", help="no live-backbone steps, no per-core table")
    parser.add_argument("--ddp-batch", type=int, default=16, help="rows per rank in the collective count")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = load_train_config(args.config)
    batch_size = args.batch or cfg.finetune.batch_size
    shapes_dict = load_prepare_config().shapes(args.channels)
    shapes = DataShapes(eeg=tuple(shapes_dict["eeg"]), audio=tuple(shapes_dict["audio"]),
                        video=tuple(shapes_dict["video"]), n_classes=4)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}")
    print(f"config: {args.config}: video {cfg.model.video.backbone}@{cfg.model.video.img_size} (frozen), "
          f"VGGish width {cfg.model.audio.width} (frozen), width {cfg.model.width}, "
          f"TCN dilations {cfg.model.tcn.dilations}, heads {cfg.model.heads}; batch {batch_size}")
    print(f"inputs per sample: eeg {shapes.eeg}, log-Mel {shapes.audio}, video {shapes.video}")

    n = args.mm or (4096 if device.type == "cuda" else 2048)
    peak = matmul_flops_per_s(device, n, reps=10)

    torch.manual_seed(0)
    model = build_model(cfg.model, shapes).to(device)
    live = make_batch(shapes, batch_size, device)
    cached = cached_batch(model, live)
    encoded = {**cached, "index": torch.arange(batch_size, device=device)}
    results = {}
    # Cached and encoded steps first: after a live step (the backbones' large buffers) the same
    # small steps ran ~30 % slower here (allocator state), and a run on cached features never
    # takes a live step.
    one_thread = None
    kinds = [("pre-training", "cached"), ("fine-tuning", "cached"), ("fine-tuning", "encoded")]
    if not args.quick:
        kinds += [("pre-training", "live"), ("fine-tuning", "live")]
    for stage, source in kinds:
        if source == "live" and one_thread is None and device.type == "cpu" and torch.get_num_threads() > 1:
            one_thread = per_core(model, cached, encoded, cfg, device, n, args.steps)
        model.freeze_encoders(stage == "fine-tuning")
        if stage == "fine-tuning":
            params = [p for p in model.head_parameters() if p.requires_grad]
        else:
            params = [p for p in model.encoder_parameters() if p.requires_grad]
        step_fn = {"pre-training": pretrain_step, "fine-tuning": finetune_step}[stage]
        batch, steps, warmup = {"live": (live, args.live_steps, 1), "cached": (cached, args.steps, 5)}.get(
            source, (encoded, args.steps, 5))
        if source == "encoded":
            step_fn = head_step
            encoded["encodings"] = FrozenEncodings(model)
        optimizer = make_optimizer(params, 1e-4, cfg.pretrain.weight_decay, device)
        seconds, flops = measure(step_fn, model, batch, optimizer, cfg.loss, device, steps, warmup)
        results[stage, source] = (seconds, flops)
    order = [("pre-training", "live"), ("pre-training", "cached"), ("fine-tuning", "live"),
             ("fine-tuning", "cached"), ("fine-tuning", "encoded")]
    results = {key: results[key] for key in order if key in results}

    # measured again at the end: on a shared machine the better of the two is the hardware's
    peak = max(peak, matmul_flops_per_s(device, n, reps=10))
    print(f"hardware: float32 torch.mm {n}x{n}: {peak / 1e9:,.1f} GFLOP/s (best of 10, before and after the steps)")
    print()
    print(f"{'step':<14}{'features':<9}{'samples/s':>12}{'ms/step':>10}{'MFLOP/sample':>14}{'GFLOP/s':>10}"
          f"{'of peak':>9}")
    for (stage, source), (seconds, flops) in results.items():
        rate = flops / seconds
        print(f"{stage:<14}{source:<9}{batch_size / seconds:>12,.1f}{seconds * 1e3:>10.1f}"
              f"{flops / batch_size / 1e6:>14,.1f}{rate / 1e9:>10.1f}{rate / peak:>9.1%}")
    print()
    for stage in ("pre-training", "fine-tuning") if not args.quick else ():
        speedup = results[stage, "live"][0] / results[stage, "cached"][0]
        target = "  (target >= 20x)" if stage == "fine-tuning" else ""
        print(f"{stage}: cached features {speedup:,.0f}x faster per epoch than live backbones{target}")
    for stage, source, what in (("pre-training", "cached", "with cached features"),
                                ("fine-tuning", "cached", "with cached features, encoders run (first epoch)"),
                                ("fine-tuning", "encoded", "on frozen encodings (every later epoch)")):
        seconds, flops = results[stage, source]
        print(f"{stage} step {what} reaches {flops / seconds / peak:.1%} of the measured matmul "
              f"peak (target >= 25 % for the small config)")
    if one_thread is not None:
        print_per_core(*one_thread, batch_size)
    fp32_vs_bf16(model, cached, cfg, device, args.steps, batch_size)
    if device.type == "cuda":
        cuda_syncs_per_step(model, cached, cfg, device)
    collectives_and_syncs(args.ddp_batch)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = f"peak memory: {rss:,.0f} MiB max RSS"
    if device.type == "cuda":
        line += f", {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB GPU (max allocated)"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
