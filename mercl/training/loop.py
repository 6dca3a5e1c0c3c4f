"""The two-stage training loop of Algorithm 1: a trainer object over (model, data, config).

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
import functools
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
from mercl.modalities import MODALITIES
from mercl.training.checkpoint import (
    check_backbones,
    frozen_backbones_digest,
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


@contextlib.contextmanager
def _torch_settings(cfg: TrainConfig, device: torch.device):
    """The run's thread count, TF32 matmuls on CUDA, seeds and determinism; the caller's come back after."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    matmul = torch.get_float32_matmul_precision()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 tensor cores for float32 matmuls
    try:
        seed_everything(cfg.seed, deterministic=cfg.deterministic)
        yield
    finally:
        if cfg.deterministic and not deterministic:
            torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(matmul)


@dataclass
class StageRun:
    """One stage while it trains: what steps, what is scored, and where it stands.

    ``net`` is what the optimizer steps through (DDP-wrapped under torch.distributed): the
    embedder in stage 1, the classifier in stage 2. ``evaluator`` is the classifier scored on
    the validation rows (stage 2; ``None`` in stage 1, whose probe reads the model's embeddings).
    """

    name: str  # "pretrain" | "finetune"
    cfg: StageConfig
    offset: int  # global epochs before this stage
    net: nn.Module
    evaluator: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    first_epoch: int = 0  # 0-based; > 0 when resumed mid-stage
    bad_epochs: int = 0  # epochs since the stage's validation metric last improved
    best_metric: float = -math.inf  # the stage's best validation metric so far


@dataclass
class _ResumePoint:
    stage: str
    epoch: int  # epochs of ``stage`` done
    finished: bool
    checkpoint: dict[str, Any]


class TwoStageTrainer:
    """Algorithm 1 over a :class:`~mercl.models.MERCLModel`: stage 1 (contrastive, when
    ``cfg.contrastive``), then stage 2 (cross-entropy), each a :class:`StageRun`.

    It keeps what crosses stages and checkpoints: the per-epoch ``history``, stage 2's best
    epoch (``best``, its weights when ``cfg.restore_best``) and stage 1's best probe epoch
    (``pre_best``, whose encoders stage 2 starts from). See :func:`train_two_stage` for the
    arguments.
    """

    def __init__(self, model: nn.Module, train_batches: Callable[..., Iterable[Batch]],
                 val_batches: Callable[[], Iterable[Batch]], cfg: TrainConfig, *,
                 on_epoch_end: Callable[[EpochReport], None] | None = None, tb=None,
                 class_names: list[str] | None = None):
        self.model, self.cfg, self.tb, self.on_epoch_end = model, cfg, tb, on_epoch_end
        self.train_batches, self.val_batches = train_batches, val_batches
        self.device = resolve_device(cfg.device)
        model.to(self.device)
        self.n_classes = _n_classes(model)
        self.class_names = class_names or [str(k) for k in range(self.n_classes)]
        self.stages = (["pretrain"] if cfg.contrastive else []) + ["finetune"]
        self.offsets = {"pretrain": 0, "finetune": cfg.pretrain.epochs if cfg.contrastive else 0}
        self.encoder_ids = {id(p) for p in model.encoder_parameters()}
        self.head_ids = {id(p) for p in model.head_parameters()}
        self.base_trainable = {id(p) for p in model.parameters() if p.requires_grad}
        self.backbones = frozen_backbones_digest(model)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"metric": -math.inf, "loss": math.inf, "epoch": None, "state": None}
        self.pre_best: dict[str, Any] = {"metric": -math.inf, "epoch": None, "state": None}

    # -- the run

    def fit(self, resume: dict[str, Any] | None = None) -> TrainResult:
        """Train both stages (from ``resume``, a ``report.state()`` dict, when given)."""
        with _torch_settings(self.cfg, self.device):
            start = self._load(resume) if resume is not None else None
            for name in self.stages:
                if start is not None and STAGES.index(name) < STAGES.index(start.stage):
                    continue  # done before the checkpoint, and its weights are in it
                here = start if start is not None and start.stage == name else None
                if here is None or not here.finished:
                    self._train_stage(self._open_stage(name, here))
                if name == "pretrain":
                    self._restore_pretrain_best()
        return self._result()

    def _load(self, checkpoint: dict[str, Any]) -> _ResumePoint:
        if checkpoint.get("format") != STATE_FORMAT:
            raise ValueError(f"resume: not a {STATE_FORMAT} checkpoint dict")
        check_backbones(checkpoint, self.backbones)
        load_trained_state(self.model, checkpoint["model"])
        self.history = copy.deepcopy(checkpoint["history"])
        self.best = copy.deepcopy(checkpoint["best"])
        self.pre_best = copy.deepcopy(checkpoint.get("pretrain_best", self.pre_best))
        rank, world = (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)
        set_rng_state(checkpoint["rng"], self.device, rank=rank, world_size=world, seed=self.cfg.seed,
                      epoch=len(self.history))
        return _ResumePoint(checkpoint["stage"], checkpoint["epoch"], checkpoint["stage_finished"], checkpoint)

    def _open_stage(self, name: str, resume: _ResumePoint | None) -> StageRun:
        """Set the stage's trainable parameters, wrap its network, build its optimizer (restored on resume)."""
        cfg, model, device = self.cfg, self.model, self.device
        if name == "pretrain":
            trainable = self.encoder_ids
        elif cfg.contrastive and not cfg.unfreeze_encoders:
            model.freeze_encoders(True)
            trainable = self.head_ids
        else:
            trainable = self.encoder_ids | self.head_ids
        params = _set_trainable(model, trainable & self.base_trainable)  # before DDP: it registers these only
        find_unused = bool(stage_unused_parameters(model, name))
        if name == "pretrain":
            evaluator, net = None, _wrap_ddp(_Embedder(model), device, find_unused)
        else:  # frozen encoders are in eval mode: encode each row once for the whole stage
            frozen = getattr(model, "encoders_frozen", False)
            evaluator = _EncodedClassifier(model, FrozenEncodings(model)) if frozen else model
            net = _wrap_ddp(evaluator, device, find_unused)
        scfg = cfg.pretrain if name == "pretrain" else cfg.finetune
        optimizer = make_optimizer(params, scfg.lr, scfg.weight_decay, device)
        run = StageRun(name, scfg, self.offsets[name], net, evaluator, optimizer,
                       scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, stage_lr_lambda(scfg)),
                       scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"))
        if resume is not None:
            state = resume.checkpoint
            run.optimizer.load_state_dict(state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                run.scaler.load_state_dict(state["scaler"])
            run.first_epoch, run.bad_epochs = resume.epoch, state["bad_epochs"]
        run.best_metric = max((h["val_metric"] for h in self.history if h["stage"] == name), default=-math.inf)
        return run

    def _train_stage(self, run: StageRun) -> None:
        for epoch in range(run.first_epoch, run.cfg.epochs):
            if self._epoch(run, epoch):
                break
        # Drop the stage's DDP wrapper: its gradient hooks must not fire in the next stage.
        del run
        gc.collect()

    def _epoch(self, run: StageRun, epoch: int) -> bool:
        """Train and validate one epoch (0-based within the stage); True when the stage stops early."""
        cfg, model, device = self.cfg, self.model, self.device
        lr = run.optimizer.param_groups[0]["lr"]
        batches = call_train_batches(self.train_batches, epoch, run.name)
        train_epoch = _pretrain_epoch if run.name == "pretrain" else _finetune_epoch
        train_metrics = train_epoch(run.net, model, batches, run.optimizer, cfg, device, run.scaler)
        run.scheduler.step()
        average_buffers(model)
        embedded = scores = None
        if run.name == "pretrain":
            val_metrics, embedded = _pretrain_validation(model, self.train_batches, self.val_batches, epoch, cfg,
                                                         device, self.n_classes)
        else:
            val_metrics, scores = _finetune_validation(run.evaluator, self.val_batches, device, self.n_classes,
                                                       cfg.precision)
        metrics = {**train_metrics, **val_metrics, "lr": lr}
        global_epoch = run.offset + epoch + 1
        self.history.append({"stage": run.name, "epoch": epoch + 1, "global_epoch": global_epoch, **metrics})

        improved = metrics["val_metric"] > run.best_metric
        if improved:
            run.best_metric = metrics["val_metric"]
        run.bad_epochs = 0 if improved else run.bad_epochs + 1
        self._keep_best(run.name, epoch + 1, metrics, improved)
        stop = run.cfg.patience > 0 and run.bad_epochs >= run.cfg.patience
        finished = stop or epoch + 1 == run.cfg.epochs
        self._log_tensorboard(run.name, metrics, lr, global_epoch, finished, embedded, scores)
        if self.on_epoch_end is not None:  # the report's state() holds no reference to the DDP wrapper
            fixed = {"stage": run.name, "epoch": epoch + 1, "stage_finished": finished, "bad_epochs": run.bad_epochs,
                     "rng": rng_state(device), "best": self.best, "pretrain_best": self.pre_best}
            state = functools.partial(self._checkpoint, fixed, run.optimizer, run.scheduler, run.scaler)
            self.on_epoch_end(EpochReport(run.name, epoch + 1, global_epoch, dict(metrics), state))
        return stop

    def _keep_best(self, stage: str, epoch: int, metrics: dict[str, float], improved: bool) -> None:
        """Stage 1: its best probe epoch's weights. Stage 2: its best epoch (ties: the lower loss)."""
        if stage == "pretrain" and improved and self.cfg.restore_best:
            self.pre_best = {"metric": metrics["val_metric"], "epoch": epoch,
                             "state": snapshot(trained_state(self.model))}
        if stage == "finetune":
            best = self.best
            if metrics["val_metric"] > best["metric"] or (
                    metrics["val_metric"] == best["metric"] and metrics["val_loss"] < best["loss"]):
                self.best = {"metric": metrics["val_metric"], "loss": metrics["val_loss"], "epoch": epoch,
                             "state": snapshot(trained_state(self.model))}

    def _log_tensorboard(self, stage: str, metrics: dict[str, float], lr: float, global_epoch: int,
                         finished: bool, embedded, scores) -> None:
        tb = self.tb
        if tb is None:
            return
        tb.scalars({k: v for k, v in metrics.items() if k != "lr"}, global_epoch, prefix=stage)
        tb.scalars({stage: lr}, global_epoch, prefix="lr")
        if stage == "pretrain" and finished:
            z, valid, labels = embedded
            tb.embeddings(z, valid, labels, self.class_names, global_epoch)
        if stage == "finetune" and finished and scores is not None:
            tb.confusion(scores.confusion, self.class_names, global_epoch, tag="confusion/val")

    def _checkpoint(self, fixed: dict[str, Any], optimizer, scheduler, scaler) -> dict[str, Any]:
        """The checkpoint after an epoch (``report.state()``): ``fixed`` holds what that epoch ended
        with; the weights and the optimizer are read live (call it inside ``on_epoch_end``)."""
        return snapshot({
            "format": STATE_FORMAT,
            **fixed,
            "model": trained_state(self.model),
            "backbones": self.backbones,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "history": self.history,
            "config": to_dict(self.cfg),
        })

    def _restore_pretrain_best(self) -> None:
        """Start stage 2 from the encoders of stage 1's best probe epoch (``cfg.restore_best``); the
        weights are in the model then, and stage-2 checkpoints stay small without them."""
        if self.cfg.restore_best and self.pre_best["state"] is not None:
            load_trained_state(self.model, self.pre_best["state"])
        self.pre_best = {**self.pre_best, "state": None}

    def _result(self) -> TrainResult:
        best = self.best
        if self.cfg.restore_best and best["state"] is not None:
            load_trained_state(self.model, best["state"])
        finetune_rows = [h for h in self.history if h["stage"] == "finetune"]
        final = finetune_rows[-1] if finetune_rows else {}
        if self.cfg.restore_best and best["epoch"] is not None:
            final = next(h for h in finetune_rows if h["epoch"] == best["epoch"])
        return TrainResult(
            model=self.model,
            history=self.history,
            best_epoch=best["epoch"],
            best_val_metric=float(best["metric"]) if best["epoch"] is not None else float("nan"),
            final_metrics={k: v for k, v in final.items() if isinstance(v, (int, float))},
        )


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
    """Train ``model`` (a :class:`~mercl.models.MERCLModel`) with Algorithm 1 (:class:`TwoStageTrainer`).

    train_batches(epoch) -> iterable of training batches for that epoch (epoch is 0-based within
        the stage). When it takes a ``stage`` argument it is called ``train_batches(epoch,
        stage="pretrain"|"finetune")`` (e.g. to follow each stage's batch size). It is called a
        second time per pre-training epoch, in eval mode, for the probe's reference embeddings
        (stopping after ``cfg.probe_reference_size`` samples).
    val_batches() -> iterable of inner-validation batches.
    on_epoch_end(report) after every epoch of both stages (``report.state()`` -> checkpoint).
    resume: a checkpoint dict from ``report.state()`` (or :func:`~mercl.training.checkpoint.load_checkpoint`).
    tb: a :class:`~mercl.training.tb_logger.TensorBoardLogger` (rank 0 only under DDP) or None.
    """
    trainer = TwoStageTrainer(model, train_batches, val_batches, cfg, on_epoch_end=on_epoch_end, tb=tb,
                              class_names=class_names)
    return trainer.fit(resume)
