"""The two-stage training loop of Algorithm 1, as a plain function of (model, data, config).

Stage 1 (``pretrain``) trains the encoders and projections with the MERCL loss; its
validation metric is a k-NN (or linear) probe on the shared embeddings of the inner
validation split. Stage 2 (``finetune``) freezes the encoders (Algorithm 1; see
``TrainConfig.unfreeze_encoders``) and trains the cross-modal attentions and the classifier
with cross-entropy; its validation metric is the inner-validation accuracy.

The loop knows nothing about where batches come from: ``train_batches(epoch)`` and
``val_batches()`` return iterables of batch dicts (docs/CONTRACTS.md), e.g. a torch
DataLoader or Ray Data's ``iter_torch_batches``. Every epoch of both stages ends with
``on_epoch_end(EpochReport)``; ``report.state()`` is a checkpoint dict that ``resume=`` takes
back to continue a killed run to the same result. Under torch.distributed the loop wraps the
model in DistributedDataParallel itself (pass the plain model) and the contrastive sets span
the global batch (``mercl_loss(..., gather=True)``); validation predictions are gathered so
every rank takes the same early-stopping decisions.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import inspect
import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mercl.config import to_dict
from mercl.distributed import step_rows
from mercl.losses import audio_valid, mercl_loss
from mercl.training.checkpoint import (
    backbones_digest,
    check_backbones,
    load_trained_state,
    rng_state,
    set_rng_state,
    snapshot,
    trained_state,
)
from mercl.training.config import StageConfig, TrainConfig
from mercl.training.frozen_encodings import FrozenEncodings
from mercl.training.knn import knn_predict
from mercl.training.metrics import classification_metrics

MODALITIES = ("video", "audio", "eeg")
STAGES = ("pretrain", "finetune")
STATE_FORMAT = "mercl-train-state/1"

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


@dataclass
class EpochReport:
    """What the loop tells its caller after every epoch of both stages.

    ``metrics`` holds the training losses (``loss``; stage 1 also ``amcl``, ``emcl``, ``smcl``;
    stage 2 ``ce``), ``lr``, ``val_metric`` (stage 1: probe accuracy on the shared embeddings,
    stage 2: accuracy), ``val_accuracy``, ``val_macro_f1`` and ``val_loss``. ``state()``
    returns a checkpoint dict (a deep copy: safe to keep) for ``train_two_stage(resume=...)``.
    """

    stage: str
    epoch: int  # 1-based, within the stage
    global_epoch: int  # 1-based, across both stages (pre-training counts its planned epochs)
    metrics: dict[str, float]
    state: Callable[[], dict[str, Any]]


@dataclass
class TrainResult:
    """The trained model (best inner-validation weights of stage 2 when ``restore_best``)."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    best_epoch: int | None = None  # stage-2 epoch (1-based) the final weights come from
    best_val_metric: float = float("nan")
    final_metrics: dict[str, float] = field(default_factory=dict)  # of the epoch the weights come from


# ----------------------------------------------------------------------------- helpers


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the current CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; ``deterministic`` also makes torch pick deterministic kernels."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _pinned(batch: Batch) -> Batch:
    return {k: v.pin_memory() if isinstance(v, torch.Tensor) and v.device.type == "cpu" else v
            for k, v in batch.items()}


_END = object()


def _in_background(batches: Iterable[Batch], prepare: Callable[[Batch], Batch], ahead: int = 2) -> Iterator[Batch]:
    """``prepare(batch)`` for each batch, produced by a thread up to ``ahead`` batches in advance."""
    out: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def produce():
        try:
            for batch in batches:
                item = prepare(batch)
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put(_END)
        except BaseException as exc:  # handed to the consumer
            out.put(exc)

    thread = threading.Thread(target=produce, name="mercl-batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def device_batches(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    """The batches on ``device``.

    On a CUDA device a background thread builds and pins (page-locks) the next batches while
    the current step runs, and each batch's host-to-device copy is issued (``non_blocking``,
    on a side stream) one batch ahead, so the step never waits for the host. Elsewhere each
    batch is moved as it comes (the CPU path does no copy at all).
    """
    if device.type != "cuda":
        for batch in batches:
            yield to_device(batch, device)
        return
    copy_stream = torch.cuda.Stream(device)

    def issue(batch: Batch):
        with torch.cuda.stream(copy_stream):
            moved = to_device(batch, device)
            done = torch.cuda.Event()
            done.record(copy_stream)
        return moved, done

    def ready(item) -> Batch:
        moved, done = item
        compute = torch.cuda.current_stream(device)
        compute.wait_event(done)
        for value in moved.values():
            if isinstance(value, torch.Tensor):
                value.record_stream(compute)  # its memory is not reused before the step is done
        return moved

    pending = None
    for batch in _in_background(batches, _pinned):
        nxt = issue(batch)
        if pending is not None:
            yield ready(pending)
        pending = nxt
    if pending is not None:
        yield ready(pending)


def autocast(device: torch.device, precision: str):
    """The mixed-precision context of ``precision`` (``fp32``: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def modality_valid(batch: Batch, modalities: Iterable[str], loss_cfg) -> dict[str, torch.Tensor]:
    """Which samples take part in each modality's loss terms: modality -> (B,) bool.

    A modality counts when ``batch["present"]`` says so; audio must also pass the energy gate
    (``mercl.losses.audio_valid``).
    """
    present = batch["present"].bool()
    valid = {}
    for m in modalities:
        v = present[:, MODALITIES.index(m)]
        if m == "audio":
            v = v & audio_valid(batch, loss_cfg).bool()
        valid[m] = v
    return valid


def make_optimizer(params: list[nn.Parameter], lr: float, weight_decay: float,
                   device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused on CPU and CUDA: one kernel for every parameter instead of a Python loop over
    them (5x faster per step on the small config's 66 tensors on a CPU; same update rule)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda"))


def stage_lr_lambda(scfg: StageConfig) -> Callable[[int], float]:
    """Per-epoch LR factor: linear warm-up over ``warmup_epochs`` then cosine to 0 (or constant)."""

    def factor(epoch: int) -> float:
        if epoch < scfg.warmup_epochs:
            return (epoch + 1) / (scfg.warmup_epochs + 1)
        if scfg.schedule == "constant":
            return 1.0
        span = max(scfg.epochs - scfg.warmup_epochs, 1)
        progress = (epoch - scfg.warmup_epochs) / span
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def call_train_batches(train_batches: Callable[..., Iterable[Batch]], epoch: int, stage: str) -> Iterable[Batch]:
    """``train_batches(epoch, stage=stage)`` when it takes a ``stage`` argument, else ``train_batches(epoch)``."""
    try:
        params = inspect.signature(train_batches).parameters
    except (TypeError, ValueError):
        params = {}
    takes_stage = "stage" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    return train_batches(epoch, stage=stage) if takes_stage else train_batches(epoch)


def gather_numpy(array: np.ndarray) -> np.ndarray:
    """Concatenate an array's rows over all ranks (identity without torch.distributed)."""
    if not is_distributed():
        return array
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks, in place.

    DDP keeps parameters equal; each rank's running statistics follow its own batches, so they
    are averaged after every epoch and every rank validates and saves the same model.
    """
    if not is_distributed():
        return
    world = dist.get_world_size()
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world)


class _Embedder(nn.Module):
    """Stage-1 network: batch -> shared embeddings {modality: (B, embed_dim)}."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.model.project(self.model.encode(batch))


class _EncodedClassifier(nn.Module):
    """Stage-2 network under frozen encoders: batch -> logits, the encodings from ``encodings``
    (each row encoded once per stage), so only the fusion and the classifier run."""

    def __init__(self, model: nn.Module, encodings: FrozenEncodings):
        super().__init__()
        self.model = model
        self.encodings = encodings

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model.head(self.encodings(batch), self.model.present(batch))


def stage_unused_parameters(model: nn.Module, stage: str) -> list[str]:
    """Names of trainable parameters that the stage's forward never reaches (so get no gradient).

    Stage 1 runs encoders and projections (``encode`` -> ``project``), stage 2 runs
    ``forward`` / ``head``, which never calls the projections. A parameter of a module the
    stage does not run is unused: the projections in stage 2 when the encoders train there
    (``contrastive: false`` or ``unfreeze_encoders``), fusion and classifier in stage 1 were
    they trainable. Within a stage every parameter of a module it runs is reached (the loss
    stays connected to every embedding even without anchors; tests/test_training.py checks
    this rule against autograd).
    """
    if stage == "pretrain":
        used = {id(p) for p in model.encoder_parameters()}
    else:
        projections = getattr(model, "projections", None)
        skipped = {id(p) for p in projections.parameters()} if projections is not None else set()
        used = {id(p) for p in model.parameters() if id(p) not in skipped}
    return [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in used]


def _wrap_ddp(module: nn.Module, device: torch.device, find_unused: bool) -> nn.Module:
    """DDP; ``find_unused`` (a graph traversal per step) only where some parameter goes without gradient."""
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def _set_trainable(model: nn.Module, trainable: set[int]) -> list[nn.Parameter]:
    params = []
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
        if id(p) in trainable:
            params.append(p)
    return params


# ----------------------------------------------------------------------------- epochs


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _update(loss: torch.Tensor, optimizer, scaler, cfg: TrainConfig) -> None:
    """Backward and optimizer step (through the fp16 GradScaler when there is one)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                       cfg.grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()


def _pretrain_epoch(net, model, batches, optimizer, cfg: TrainConfig, device, scaler) -> dict[str, float]:
    """One stage-1 epoch over ``batches``; returns mean loss terms.

    The loss terms add up on the device and are read once, at the end of the epoch: no step
    waits for the host (under DDP each step exchanges the ranks' batch sizes once).
    """
    model.train()
    sums = torch.zeros(4, device=device, dtype=_sum_dtype(device))  # loss, amcl, emcl, smcl
    n_batches = 0
    gather = is_distributed()
    for batch in device_batches(batches, device):
        with autocast(device, cfg.precision):
            z = net(batch)
            valid = modality_valid(batch, z.keys(), cfg.loss)
            with step_rows(len(batch["label"]), device) if gather else contextlib.nullcontext():
                out = mercl_loss(z, batch["label"], valid, cfg.loss, gather=gather)
        _update(out.total, optimizer, scaler, cfg)
        sums += torch.stack([out.total.detach(), out.amcl.detach(), out.emcl.detach(), out.smcl.detach()])
        n_batches += 1
    means = (sums / max(n_batches, 1)).tolist()
    return dict(zip(("loss", "amcl", "emcl", "smcl"), means, strict=True))


def _finetune_epoch(net, model, batches, optimizer, cfg: TrainConfig, device, scaler) -> dict[str, float]:
    """One stage-2 epoch: cross-entropy on the classifier's logits; returns the mean loss (read once)."""
    model.train()
    total = torch.zeros((), device=device, dtype=_sum_dtype(device))
    n_batches = 0
    for batch in device_batches(batches, device):
        with autocast(device, cfg.precision):
            logits = net(batch)
            loss = F.cross_entropy(logits.float(), batch["label"])
        _update(loss, optimizer, scaler, cfg)
        total += loss.detach()
        n_batches += 1
    mean = float(total) / max(n_batches, 1)
    return {"loss": mean, "ce": mean}


@torch.no_grad()
def embed_batches(model, batches: Iterable[Batch], cfg: TrainConfig, device, limit: int | None = None):
    """Shared embeddings in eval mode -> (features (N, M*D) numpy, labels (N,), z dict, valid dict).

    ``features`` concatenates the unit embeddings of the model's modalities, zeros where a
    modality is invalid (missing or gated audio); ``z``/``valid`` keep them per modality.
    """
    model.eval()
    zs: dict[str, list] = {}
    vs: dict[str, list] = {}
    labels = []
    n = 0
    for batch in batches:
        batch = to_device(batch, device)
        with autocast(device, cfg.precision):
            z = model.project(model.encode(batch))
        valid = modality_valid(batch, z.keys(), cfg.loss)
        for m in z:
            zs.setdefault(m, []).append(z[m].float().cpu())
            vs.setdefault(m, []).append(valid[m].cpu())
        labels.append(batch["label"].cpu())
        n += len(batch["label"])
        if limit is not None and n >= limit:
            break
    if not labels:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), {}, {}
    z_all = {m: torch.cat(v) for m, v in zs.items()}
    v_all = {m: torch.cat(v) for m, v in vs.items()}
    feats = torch.cat([z_all[m] * v_all[m][:, None] for m in MODALITIES if m in z_all], dim=1)
    return feats.numpy(), torch.cat(labels).numpy(), z_all, v_all


def probe_accuracy(train_x, train_y, val_x, val_y, kind: str, k: int, n_classes: int):
    """Fit a k-NN or logistic-regression probe on training embeddings, score it on validation ones."""
    if len(train_y) == 0 or len(val_y) == 0:
        return classification_metrics([], [], n_classes)
    if len(np.unique(train_y)) < 2:
        pred = np.full(len(val_y), train_y[0])
    elif kind == "knn":
        pred = knn_predict(train_x, train_y, val_x, k)
    else:
        from sklearn.linear_model import LogisticRegression

        pred = LogisticRegression(max_iter=1000).fit(train_x, train_y).predict(val_x)
    return classification_metrics(val_y, pred, n_classes)


@torch.no_grad()
def predict_batches(model, batches: Iterable[Batch], device, precision: str = "fp32") -> dict[str, np.ndarray]:
    """Eval-mode predictions -> {"index" (N,), "label" (N,), "pred" (N,), "prob" (N, n_classes)}."""
    model.eval()
    out: dict[str, list] = {"index": [], "label": [], "pred": [], "prob": []}
    for batch in batches:
        batch = to_device(batch, device)
        with autocast(device, precision):
            logits = model(batch)
        logits = logits.float()
        prob = torch.softmax(logits, dim=1)
        out["prob"].append(prob.cpu().numpy())
        out["pred"].append(prob.argmax(1).cpu().numpy())
        out["label"].append(batch["label"].cpu().numpy())
        idx = batch.get("index")
        out["index"].append(idx.cpu().numpy() if idx is not None else np.full(len(logits), -1))
    if not out["label"]:
        return {"index": np.zeros(0, np.int64), "label": np.zeros(0, np.int64),
                "pred": np.zeros(0, np.int64), "prob": np.zeros((0, 0), np.float32)}
    return {k: np.concatenate(v) for k, v in out.items()}


def _n_classes(model) -> int:
    shapes = getattr(model, "shapes", None)
    if shapes is not None and hasattr(shapes, "n_classes"):
        return int(shapes.n_classes)
    return int(model.n_classes)


def _pretrain_validation(model, train_batches, val_batches, epoch, cfg, device, n_classes):
    reference = call_train_batches(train_batches, epoch, "pretrain")
    ref_x, ref_y, _, _ = embed_batches(model, reference, cfg, device, limit=cfg.probe_reference_size)
    val_x, val_y, z, valid = embed_batches(model, val_batches(), cfg, device)
    val_loss = float("nan")
    if len(val_y) > 1:
        val_loss = float(mercl_loss(z, torch.as_tensor(val_y), valid, cfg.loss).total)
    ref_x, ref_y = gather_numpy(ref_x), gather_numpy(ref_y)
    val_x, val_y = gather_numpy(val_x), gather_numpy(val_y)
    scores = probe_accuracy(ref_x, ref_y, val_x, val_y, cfg.probe, cfg.knn_k, n_classes)
    metrics = {"val_metric": scores.accuracy, "val_accuracy": scores.accuracy,
               "val_macro_f1": scores.macro_f1, "val_loss": val_loss}
    return metrics, (z, valid, torch.as_tensor(val_y))


def _finetune_validation(model, val_batches, device, n_classes, precision="fp32"):
    pred = predict_batches(model, val_batches(), device, precision)
    labels, preds = gather_numpy(pred["label"]), gather_numpy(pred["pred"])
    probs = gather_numpy(pred["prob"])
    val_loss = float("nan")
    if len(labels):
        p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)
        val_loss = float(-np.log(p).mean())
    scores = classification_metrics(labels, preds, n_classes)
    metrics = {"val_metric": scores.accuracy, "val_accuracy": scores.accuracy,
               "val_macro_f1": scores.macro_f1, "val_loss": val_loss}
    return metrics, scores


# ----------------------------------------------------------------------------- the loop


def _restore_pretrain_best(model: nn.Module, pre_best: dict[str, Any], cfg: TrainConfig) -> None:
    """Start stage 2 from the encoders of stage 1's best probe epoch (``cfg.restore_best``)."""
    if cfg.restore_best and pre_best["state"] is not None:
        load_trained_state(model, pre_best["state"])


def train_two_stage(
    model: nn.Module,
    train_batches: Callable[..., Iterable[Batch]],
    val_batches: Callable[[], Iterable[Batch]],
    cfg: TrainConfig,
    *,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
    resume: dict[str, Any] | None = None,
    tb=None,
    class_names: list[str] | None = None,
) -> TrainResult:
    """Train ``model`` (a :class:`~mercl.models.MERCLModel`) with Algorithm 1.

    train_batches(epoch) -> iterable of training batches for that epoch (epoch is 0-based within
        the stage). When it takes a ``stage`` argument it is called ``train_batches(epoch,
        stage="pretrain"|"finetune")`` (e.g. to follow each stage's batch size). It is called a
        second time per pre-training epoch, in eval mode, for the probe's reference embeddings
        (stopping after ``cfg.probe_reference_size`` samples).
    val_batches() -> iterable of inner-validation batches.
    on_epoch_end(report) after every epoch of both stages (``report.state()`` -> checkpoint).
    resume: a checkpoint dict from ``report.state()`` (or :func:`~mercl.training.checkpoint.load_checkpoint`).
    tb: a :class:`~mercl.training.tensorboard.TensorBoardLogger` (rank 0 only under DDP) or None.
    """
    device = resolve_device(cfg.device)
    model.to(device)
    n_classes = _n_classes(model)
    class_names = class_names or [str(k) for k in range(n_classes)]
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    previous_matmul = torch.get_float32_matmul_precision()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 tensor cores for float32 matmuls
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    rank = dist.get_rank() if is_distributed() else 0
    world = dist.get_world_size() if is_distributed() else 1

    encoder_ids = {id(p) for p in model.encoder_parameters()}
    head_ids = {id(p) for p in model.head_parameters()}
    base_trainable = {id(p) for p in model.parameters() if p.requires_grad}

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"metric": -math.inf, "loss": math.inf, "epoch": None, "state": None}
    pre_best: dict[str, Any] = {"metric": -math.inf, "epoch": None, "state": None}  # stage 1's best probe
    start_stage, start_epoch, start_finished, start_bad = STAGES[0], 0, False, 0
    backbones = backbones_digest(model)
    if resume is not None:
        if resume.get("format") != STATE_FORMAT:
            raise ValueError(f"resume: not a {STATE_FORMAT} checkpoint dict")
        check_backbones(resume, backbones)
        load_trained_state(model, resume["model"])
        history = copy.deepcopy(resume["history"])
        best = copy.deepcopy(resume["best"])
        pre_best = copy.deepcopy(resume.get("pretrain_best", pre_best))
        start_stage, start_epoch = resume["stage"], resume["epoch"]
        start_finished, start_bad = resume["stage_finished"], resume["bad_epochs"]
        set_rng_state(resume["rng"], device, rank=rank, world_size=world, seed=cfg.seed, epoch=len(history))

    stages = [("pretrain", cfg.pretrain)] if cfg.contrastive else []
    stages.append(("finetune", cfg.finetune))
    offset = {"pretrain": 0, "finetune": cfg.pretrain.epochs if cfg.contrastive else 0}
    last_scores = None
    try:
        for stage, scfg in stages:
            if STAGES.index(stage) < STAGES.index(start_stage):
                continue
            resuming_here = resume is not None and stage == start_stage
            if resuming_here and start_finished:
                if stage == "pretrain":
                    _restore_pretrain_best(model, pre_best, cfg)
                continue
            if stage == "pretrain":
                trainable = encoder_ids & base_trainable
            elif cfg.contrastive and not cfg.unfreeze_encoders:
                model.freeze_encoders(True)
                trainable = head_ids & base_trainable
            else:
                trainable = (encoder_ids | head_ids) & base_trainable
            params = _set_trainable(model, trainable)  # before DDP: it registers trainable params only
            find_unused = bool(stage_unused_parameters(model, stage))
            if stage == "pretrain":
                classifier = None
                net = _wrap_ddp(_Embedder(model), device, find_unused)
            else:  # frozen encoders are in eval mode: encode each row once for the whole stage
                frozen = getattr(model, "encoders_frozen", False)
                classifier = _EncodedClassifier(model, FrozenEncodings(model)) if frozen else model
                net = _wrap_ddp(classifier, device, find_unused)
            optimizer = make_optimizer(params, scfg.lr, scfg.weight_decay, device)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, stage_lr_lambda(scfg))
            scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
            first_epoch, bad_epochs = 0, 0
            if resuming_here:
                optimizer.load_state_dict(resume["optimizer"])
                scheduler.load_state_dict(resume["scheduler"])
                if resume.get("scaler"):
                    scaler.load_state_dict(resume["scaler"])
                first_epoch, bad_epochs = start_epoch, start_bad
            stage_best = max((h["val_metric"] for h in history if h["stage"] == stage), default=-math.inf)

            for epoch in range(first_epoch, scfg.epochs):
                lr = optimizer.param_groups[0]["lr"]
                batches = call_train_batches(train_batches, epoch, stage)
                if stage == "pretrain":
                    train_metrics = _pretrain_epoch(net, model, batches, optimizer, cfg, device, scaler)
                else:
                    train_metrics = _finetune_epoch(net, model, batches, optimizer, cfg, device, scaler)
                scheduler.step()
                average_buffers(model)
                if stage == "pretrain":
                    val_metrics, embedded = _pretrain_validation(
                        model, train_batches, val_batches, epoch, cfg, device, n_classes)
                else:
                    val_metrics, last_scores = _finetune_validation(classifier, val_batches, device, n_classes,
                                                                     cfg.precision)
                metrics = {**train_metrics, **val_metrics, "lr": lr}
                global_epoch = offset[stage] + epoch + 1
                history.append({"stage": stage, "epoch": epoch + 1, "global_epoch": global_epoch, **metrics})

                improved = metrics["val_metric"] > stage_best
                if improved:
                    stage_best = metrics["val_metric"]
                bad_epochs = 0 if improved else bad_epochs + 1
                if stage == "pretrain" and improved and cfg.restore_best:
                    pre_best = {"metric": metrics["val_metric"], "epoch": epoch + 1,
                                "state": snapshot(trained_state(model))}
                if stage == "finetune":
                    better = metrics["val_metric"] > best["metric"] or (
                        metrics["val_metric"] == best["metric"] and metrics["val_loss"] < best["loss"])
                    if better:
                        best = {"metric": metrics["val_metric"], "loss": metrics["val_loss"],
                                "epoch": epoch + 1, "state": snapshot(trained_state(model))}
                stop = scfg.patience > 0 and bad_epochs >= scfg.patience
                finished = stop or epoch + 1 == scfg.epochs

                if tb is not None:
                    tb.scalars({k: v for k, v in metrics.items() if k != "lr"}, global_epoch, prefix=stage)
                    tb.scalars({stage: lr}, global_epoch, prefix="lr")
                    if stage == "pretrain" and finished:
                        z, valid, labels = embedded
                        tb.embeddings(z, valid, labels, class_names, global_epoch)
                    if stage == "finetune" and finished and last_scores is not None:
                        tb.confusion(last_scores.confusion, class_names, global_epoch, tag="confusion/val")

                def state(stage=stage, epoch=epoch, finished=finished, bad_epochs=bad_epochs,
                          optimizer=optimizer, scheduler=scheduler, scaler=scaler, best=best,
                          pre_best=pre_best, rng=rng_state(device)) -> dict[str, Any]:
                    """The checkpoint after this epoch; call it inside ``on_epoch_end`` (it reads live weights)."""
                    return snapshot({
                        "format": STATE_FORMAT,
                        "stage": stage,
                        "epoch": epoch + 1,
                        "stage_finished": finished,
                        "bad_epochs": bad_epochs,
                        "model": trained_state(model),
                        "backbones": backbones,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                        "rng": rng,
                        "history": history,
                        "best": best,
                        "pretrain_best": pre_best,
                        "config": to_dict(cfg),
                    })

                if on_epoch_end is not None:
                    on_epoch_end(EpochReport(stage, epoch + 1, global_epoch, dict(metrics), state))
                if stop:
                    break
            if stage == "pretrain":
                _restore_pretrain_best(model, pre_best, cfg)
                pre_best = {**pre_best, "state": None}  # in the model now: keep stage-2 checkpoints small
            # Drop this stage's DDP wrapper: its gradient hooks must not fire in the next stage.
            del net, classifier, optimizer, scheduler, scaler
            gc.collect()
    finally:
        if cfg.deterministic and not previous_deterministic:
            torch.use_deterministic_algorithms(False)
        torch.set_num_threads(previous_threads)
        torch.set_float32_matmul_precision(previous_matmul)

    if cfg.restore_best and best["state"] is not None:
        load_trained_state(model, best["state"])
    finetune_rows = [h for h in history if h["stage"] == "finetune"]
    final = finetune_rows[-1] if finetune_rows else {}
    if cfg.restore_best and best["epoch"] is not None:
        final = next(h for h in finetune_rows if h["epoch"] == best["epoch"])
    return TrainResult(
        model=model,
        history=history,
        best_epoch=best["epoch"],
        best_val_metric=float(best["metric"]) if best["epoch"] is not None else float("nan"),
        final_metrics={k: v for k, v in final.items() if isinstance(v, (int, float))},
    )
