"""Honest cross-validation of MERCL on a prepared dataset (DESIGN.md "Evaluation: honest by default").

For every outer fold: the fold's training rows are split again into inner-train and
inner-validation TRIALS (:meth:`~mercl.data.protocols.CrossValidation.inner_split`); the
normalisation statistics come from the inner-train rows only; early stopping and the choice
of the final epoch use the inner-validation split only; the outer test fold is touched once,
for the final predictions. Beside every MERCL score stands the majority-class baseline (the
most frequent class of the fold's training rows).

Protocols: ``trial`` (default; trial-grouped k-fold), ``subject`` (leave-one-subject-out)
and ``segment`` (the paper's segment-level k-fold, flagged LEAKY everywhere: overlapping
windows of one trial land on both sides of the split).

Outputs in RUN_DIR: ``results.csv`` (method, fold, accuracy, macro_f1, n_test, protocol,
label, variant), ``summary.md``, ``predictions.parquet`` (per fold and row: subject, trial,
segment, stimulus, label, prediction, class probabilities), ``tb/fold<k>/`` (TensorBoard).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from mercl.atomic import write_atomic
from mercl.config import to_dict
from mercl.data.labels import class_names as scheme_class_names
from mercl.data.protocols import (
    PROTOCOL_TEXT,
    CrossValidation,
    protocol_folds,
    protocol_label,
    resolve_protocol,
)
from mercl.data.reader import PreparedDataset, SegmentDataset, collate, load_dataset
from mercl.errors import MerclError
from mercl.markdown import md_cell
from mercl.modalities import modality_letters
from mercl.models.config import DataShapes
from mercl.models.mercl_model import build_model
from mercl.training.config import TrainConfig
from mercl.training.feature_cache import ensure_feature_cache
from mercl.training.loop import (
    EpochReport,
    TrainResult,
    predict_batches,
    resolve_device,
    seed_everything,
    train_two_stage,
)
from mercl.training.metrics import (
    TRIVIAL_BASELINES,
    classification_metrics,
    clip_majority_baseline,
    majority_baseline,
)
from mercl.training.normalize import NormStats, fit_normalization
from mercl.training.tb_logger import TensorBoardLogger

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- configuration helpers


def apply_ablations(
    cfg: TrainConfig,
    *,
    modalities: Sequence[str] | None = None,
    contrastive: bool = True,
    cross_attention: bool = True,
    energy_gate: bool = True,
) -> TrainConfig:
    """A copy of ``cfg`` with the CLI's ablation switches applied (each only ever switches off)."""
    cfg = copy.deepcopy(cfg)
    if modalities is not None:
        cfg.model.modalities = list(modalities)
        cfg.model.validate()
    cfg.contrastive = cfg.contrastive and contrastive
    cfg.model.cross_attention = cfg.model.cross_attention and cross_attention
    cfg.loss.energy_gate = cfg.loss.energy_gate and energy_gate
    return cfg


def modalities_for_dataset(cfg: TrainConfig, prepared: PreparedDataset,
                           wanted: Sequence[str] | None = None) -> tuple[TrainConfig, str | None]:
    """``cfg`` on the streams the dataset has: its modalities are ``wanted`` (asked for explicitly:
    one the dataset lacks in every row is an error) or the config's, less any the dataset lacks in
    every row (EEG-only recordings: a release prepared without ``--stimuli``). Returns the config
    and one line saying what changed (None when nothing did)."""
    have = prepared.present_modalities()
    if wanted:
        absent = [m for m in wanted if m not in have]
        if absent:
            raise MerclError(f"--modalities: {prepared.path} has no {' and no '.join(absent)} in any segment")
    chosen = [m for m in (wanted or cfg.model.modalities) if m in have]
    if chosen == list(cfg.model.modalities):
        return cfg, None
    lacking = [m for m in ("video", "audio") if m not in have]
    note = f"MERCL runs on {', '.join(chosen)}"
    if lacking:
        note += (f" (the dataset has no {' and no '.join(lacking)}: no clips were given at prepare time; "
                 "the baselines use the streams it has)")
    return apply_ablations(cfg, modalities=chosen), note


def variant_name(cfg: TrainConfig) -> str:
    """Short description of the model variant: modality letters plus any ablation, e.g. ``ae,no-contrastive``."""
    tags = [modality_letters(cfg.model.modalities)]
    if not cfg.contrastive:
        tags.append("no-contrastive")
    if not cfg.model.cross_attention:
        tags.append("no-cross-attention")
    if not cfg.loss.energy_gate:
        tags.append("no-energy-gate")
    return ",".join(tags)


def data_shapes(prepared: PreparedDataset, n_classes: int) -> DataShapes:
    """The model's input shapes from the dataset manifest."""
    shapes = prepared.manifest["shapes"]
    return DataShapes(
        eeg=tuple(shapes["eeg"]), audio=tuple(shapes["audio"]), video=tuple(shapes["video"]), n_classes=n_classes
    )


# ----------------------------------------------------------------------------- data for one split


def make_batches(
    dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    transform: Callable[[dict], dict] | None = None,
    num_workers: int = 0,
) -> Callable[..., object]:
    """``batches(epoch=0)`` -> an iterable of collated (and transformed) batches.

    The shuffling order is a function of (seed, epoch) only (a seeded DataLoader generator),
    so a resumed run sees the same batches as an uninterrupted one. Training batches drop a
    last incomplete batch (contrastive sets and BatchNorm need more than one sample).
    """

    def batches(epoch: int = 0):
        generator = torch.Generator()
        generator.manual_seed(seed * 100_003 + epoch)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > batch_size,
            generator=generator,
            collate_fn=collate,
            num_workers=num_workers,
        )
        for batch in loader:
            yield transform(batch) if transform is not None else batch

    return batches


def fit_split_normalization(prepared: PreparedDataset, train_rows: np.ndarray, normalize_audio: bool) -> NormStats:
    """Normalisation statistics from the training rows only (EEG rows; their stimuli's log-Mel)."""
    audio = None
    if normalize_audio:
        stim_rows = np.unique(prepared.stimulus_index[train_rows])
        stim_rows = stim_rows[stim_rows >= 0]
        stim_rows = stim_rows[prepared.stimuli.audio_present[stim_rows]]
        audio = prepared.stimuli.audio[stim_rows]
    return fit_normalization(prepared.eeg[train_rows], audio)


@dataclass
class SplitRun:
    """What :func:`train_split` returns: the trained model and what is needed to use it."""

    result: TrainResult
    model: torch.nn.Module
    norm: NormStats
    feature_table: Path | None
    shapes: DataShapes
    device: torch.device
    seconds: float

    def batches(self, prepared: PreparedDataset, rows, scheme: str, cfg: TrainConfig):
        """Eval batches (no shuffling) of ``rows``, normalised and with cached features like training."""
        dataset = SegmentDataset(prepared, rows, scheme, cfg.model.modalities, self.extra_tables)
        return make_batches(dataset, cfg.finetune.batch_size, shuffle=False, seed=cfg.seed, transform=self.norm.apply,
                            num_workers=cfg.num_workers)()

    @property
    def extra_tables(self) -> tuple:
        return (self.feature_table,) if self.feature_table is not None else ()


def train_split(
    prepared: PreparedDataset,
    label_scheme: str,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    cfg: TrainConfig,
    *,
    tb: TensorBoardLogger | None = None,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
    resume: dict | None = None,
    show_progress: bool = False,
) -> SplitRun:
    """Build, (cache backbones,) normalise and train MERCL on one inner train/validation split."""
    start = time.perf_counter()
    n_classes = len(scheme_class_names(label_scheme))
    shapes = data_shapes(prepared, n_classes)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)  # same seed -> same (frozen) backbones in every fold
    model = build_model(cfg.model, shapes)

    feature_table = None
    if cfg.cache_backbone_features:
        feature_table = ensure_feature_cache(
            model, prepared, batch_size=64, device=device, show_progress=show_progress
        )
    audio_trainable = "audio" in model.spatial_encoders and not model.spatial_encoders["audio"].frozen
    norm = fit_split_normalization(prepared, train_rows, normalize_audio=audio_trainable)

    extra = (feature_table,) if feature_table is not None else ()
    modalities = cfg.model.modalities
    train_ds = SegmentDataset(prepared, train_rows, label_scheme, modalities, extra)
    val_ds = SegmentDataset(prepared, val_rows, label_scheme, modalities, extra)

    def train_batches(epoch: int, stage: str = "finetune"):
        stage_cfg = cfg.pretrain if stage == "pretrain" else cfg.finetune
        return make_batches(train_ds, stage_cfg.batch_size, shuffle=True, seed=cfg.seed, transform=norm.apply,
                            num_workers=cfg.num_workers)(epoch)

    val_batches = make_batches(val_ds, cfg.finetune.batch_size, shuffle=False, seed=cfg.seed, transform=norm.apply,
                               num_workers=cfg.num_workers)
    result = train_two_stage(
        model,
        train_batches,
        val_batches,
        cfg,
        on_epoch_end=on_epoch_end,
        resume=resume,
        tb=tb,
        class_names=list(scheme_class_names(label_scheme)),
    )
    return SplitRun(result, result.model, norm, feature_table, shapes, device, time.perf_counter() - start)


# ----------------------------------------------------------------------------- outer cross-validation


@dataclass
class CrossValResult:
    """Per-fold scores (``results``: one row per method and fold) and per-row predictions."""

    results: pd.DataFrame
    predictions: pd.DataFrame
    protocol: str  # as written in every output, e.g. "trial" or "segment (LEAKY)"
    leaky: bool
    out_dir: Path | None = None
    histories: list[list[dict]] = field(default_factory=list)

    def mean(self, method: str = "mercl", metric: str = "accuracy") -> float:
        return float(self.results.loc[self.results["method"] == method, metric].mean())


def _prediction_frame(prepared: PreparedDataset, rows: np.ndarray, fold: int, method: str, variant: str,
                      labels: np.ndarray, preds: np.ndarray, probs: np.ndarray | None, protocol: str) -> pd.DataFrame:
    meta = prepared.rows.iloc[rows]
    frame = pd.DataFrame({
        "method": method,
        "variant": variant,
        "fold": fold,
        "row": rows.astype(np.int64),
        "subject": meta["subject"].astype(str).to_numpy(),
        "trial": meta["trial"].to_numpy(np.int64),
        "segment": meta["segment"].to_numpy(np.int64),
        "stimulus": meta["stimulus"].astype(str).to_numpy(),
        "label": labels.astype(np.int64),
        "prediction": preds.astype(np.int64),
        "protocol": protocol,
    })
    if probs is not None:
        for k in range(probs.shape[1]):
            frame[f"prob_{k}"] = probs[:, k].astype(np.float32)
    return frame


def epoch_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False, disable=not enabled)


def cross_validate(
    dataset: str | Path | PreparedDataset,
    label_scheme: str,
    cfg: TrainConfig,
    *,
    protocol: str | None = None,
    folds: int = 4,
    out_dir: str | Path | None = None,
    show_progress: bool = True,
    console: Callable[[str], None] | None = print,
    config_name: str = "",
) -> CrossValResult:
    """Outer k-fold CV (or LOSO) of MERCL beside the majority and clip-majority baselines.

    dataset: a prepared dataset dir (or an already loaded :class:`PreparedDataset`).
    protocol: ``stimulus`` | ``subject-stimulus`` | ``trial`` | ``subject`` | ``segment`` (LEAKY);
    None or ``auto``: the data's default (``stimulus`` when its clips are shared across subjects).
    ``folds`` is ignored by ``subject``.
    out_dir: where results.csv, summary.md, predictions.parquet and tb/ go (None: nothing written).
    """
    say = console or (lambda _msg: None)
    prepared = dataset if isinstance(dataset, PreparedDataset) else load_dataset(dataset)
    labels = prepared.labels(label_scheme)
    protocol, note = resolve_protocol(protocol, prepared, labels, folds, cfg.seed)
    if note:
        say(note)
    cv = protocol_folds(protocol, prepared, labels, folds, cfg.seed)
    run = _OuterCV(prepared, label_scheme, labels, cfg, cv, protocol_label(protocol, cv.clip_shared),
                   Path(out_dir) if out_dir is not None else None, show_progress, say)
    if cv.leaky:
        say(f"LEAKY: {cv.warning}")
    if run.out is not None:
        run.out.mkdir(parents=True, exist_ok=True)
    dataset_id = prepared.manifest.get("dataset_id", prepared.path.name)
    say(f"cross-validation: {dataset_id}, label {label_scheme}, protocol {run.plabel}, "
        f"{len(cv)} folds, variant {run.variant}")
    if sum(f.dropped for f in cv):
        say(f"{protocol}: training sides leave out {', '.join(str(f.dropped) for f in cv)} rows per fold "
            "(they share a subject or a clip with the test side)")

    for fold in cv:
        run.fold(fold)
    result = CrossValResult(pd.DataFrame(run.rows), pd.concat(run.frames, ignore_index=True), run.plabel,
                            cv.leaky, run.out, run.histories)
    summary = summary_markdown(result, dataset_id=dataset_id, label_scheme=label_scheme, cfg=cfg,
                               protocol=protocol, n_folds=len(cv), warning=cv.warning, config_name=config_name)
    if run.out is not None:
        run.write(result, summary)
    for method in ("mercl", *TRIVIAL_BASELINES):
        acc = result.results.loc[result.results["method"] == method, "accuracy"]
        say(f"{method}: accuracy {acc.mean():.3f} +- {acc.std(ddof=0):.3f} [{run.plabel}]")
    if cv.warning:
        say(f"{'LEAKY' if cv.leaky else 'NOTE'}: {cv.warning}")
    if run.out is not None:
        say(f"wrote {run.out / 'results.csv'}, {run.out / 'summary.md'}, {run.out / 'predictions.parquet'}; "
            f"tensorboard --logdir {run.out / 'tb'}")
    return result


@dataclass
class _OuterCV:
    """One cross-validation while it runs: what every fold shares, and the folds' results so far
    (score rows, prediction frames, training histories)."""

    prepared: PreparedDataset
    label_scheme: str
    labels: np.ndarray  # (N,) class ids of every row
    cfg: TrainConfig
    cv: CrossValidation  # the protocol's folds (protocol_folds)
    plabel: str  # the protocol as printed beside every score
    out: Path | None
    show_progress: bool
    say: Callable[[str], None]
    rows: list[dict[str, Any]] = field(default_factory=list)
    frames: list[pd.DataFrame] = field(default_factory=list)
    histories: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def variant(self) -> str:
        return variant_name(self.cfg)

    @property
    def names(self) -> list[str]:
        return list(scheme_class_names(self.label_scheme))

    def fold(self, fold) -> None:
        """Train on the fold's training side (its own inner validation split), score its test side."""
        cfg, prepared, labels = self.cfg, self.prepared, self.labels
        inner_train, inner_val = self.cv.inner_split(fold.train, labels, cfg.val_fraction)
        tb = TensorBoardLogger(self.out / "tb" / f"fold{fold.index}") if self.out is not None else None
        total_epochs = (cfg.pretrain.epochs if cfg.contrastive else 0) + cfg.finetune.epochs
        bar = epoch_bar(total_epochs, f"fold {fold.index + 1}/{len(self.cv)}", self.show_progress)

        def on_epoch_end(report: EpochReport) -> None:
            bar.update(1)
            bar.set_postfix(stage=report.stage, val=f"{report.metrics['val_metric']:.3f}",
                            loss=f"{report.metrics['loss']:.3f}")

        try:
            run = train_split(prepared, self.label_scheme, inner_train, inner_val, cfg, tb=tb,
                              on_epoch_end=on_epoch_end, show_progress=self.show_progress)
        finally:
            bar.close()
        pred = predict_batches(run.model, run.batches(prepared, fold.test, self.label_scheme, cfg), run.device)
        order = np.argsort(pred["index"], kind="stable")
        test_rows = pred["index"][order]
        if not np.array_equal(test_rows, fold.test):
            raise RuntimeError("predictions do not cover the test fold")  # a bug, not a user error
        scores = classification_metrics(pred["label"][order], pred["pred"][order], len(self.names))
        baselines = fold_baselines(labels, prepared.stimulus_ids, fold.train, fold.test, len(self.names))
        self.histories.append(run.result.history)
        for method, sc in (("mercl", scores), *((m, b[1]) for m, b in baselines.items())):
            self.rows.append({"method": method, "fold": fold.index, "accuracy": sc.accuracy,
                              "macro_f1": sc.macro_f1, "n_test": sc.n, "protocol": self.plabel,
                              "label": self.label_scheme, "variant": self.variant,
                              "held_out_subject": fold.held_out_subject or "", "n_dropped": fold.dropped})
        self.frames.append(_prediction_frame(prepared, test_rows, fold.index, "mercl", self.variant,
                                             pred["label"][order], pred["pred"][order], pred["prob"][order],
                                             self.plabel))
        for method, (base_pred, _) in baselines.items():
            self.frames.append(_prediction_frame(prepared, fold.test, fold.index, method, self.variant,
                                                 labels[fold.test], base_pred, None, self.plabel))
        if tb is not None:
            self._log_test(tb, run.result.history, scores, baselines)
        base_text = ", ".join(f"{m} {b[1].accuracy:.3f}" for m, b in baselines.items())
        self.say(f"fold {fold.index + 1}/{len(self.cv)} [{self.plabel}]: mercl accuracy {scores.accuracy:.3f} "
                 f"(macro-F1 {scores.macro_f1:.3f}), {base_text}, n_test {scores.n}, "
                 f"best inner-val epoch {run.result.best_epoch}, {run.seconds:.0f} s")

    def _log_test(self, tb: TensorBoardLogger, history, scores, baselines) -> None:
        """The fold's test scores (MERCL's and the baselines'), confusion matrix and protocol in TensorBoard."""
        step = int(history[-1]["global_epoch"]) if history else 0
        tb.scalars(scores.scalars(), step, prefix="test")
        for method, (_, sc) in baselines.items():
            tb.scalars(sc.scalars(), step, prefix=f"test_{method.replace('-', '_')}")
        tb.confusion(scores.confusion, self.names, step, tag="confusion/test")
        tb.text("protocol", f"{self.plabel}; {self.cv.warning or ''}")
        tb.close()

    def write(self, result: CrossValResult, summary: str) -> None:
        out = self.out
        write_atomic(out / "results.csv", lambda p: result.results.to_csv(p, index=False))
        write_atomic(out / "predictions.parquet", lambda p: result.predictions.to_parquet(p, index=False))
        write_atomic(out / "summary.md", lambda p: p.write_text(summary))
        write_atomic(out / "config.json", lambda p: p.write_text(json.dumps(to_dict(self.cfg), indent=2)))


def fold_baselines(labels: np.ndarray, stimuli: np.ndarray, train: np.ndarray, test: np.ndarray,
                   n_classes: int) -> dict[str, tuple[np.ndarray, object]]:
    """The trivial baselines of one fold: ``{name: (test predictions, ClassificationMetrics)}``.

    ``majority``: the training rows' most frequent class. ``clip-majority``: the test row's clip's
    usual label among the training rows (other viewers), how far clip memory alone gets.
    """
    return {
        "majority": majority_baseline(labels[train], labels[test], n_classes),
        "clip-majority": clip_majority_baseline(labels[train], stimuli[train], stimuli[test], labels[test],
                                                 n_classes),
    }


def _fmt(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def summary_markdown(result: CrossValResult, *, dataset_id: str, label_scheme: str, cfg: TrainConfig,
                     protocol: str, n_folds: int, warning: str | None, config_name: str = "") -> str:
    """summary.md: mean ± std per method, per-fold and per-subject accuracy, protocol beside each score."""
    plabel = result.protocol
    res = result.results
    methods = [m for m in ("mercl", *TRIVIAL_BASELINES) if m in set(res["method"])]
    lines = [f"# MERCL cross-validation: {dataset_id}", ""]
    lines.append(f"- label scheme: `{label_scheme}`")
    lines.append(f"- protocol: **{plabel}**: {PROTOCOL_TEXT[protocol].format(k=n_folds)}, {n_folds} folds; "
                 "hyperparameters and the final epoch chosen on an inner validation split of the training "
                 "side held out the same way; normalisation from training rows only")
    if "n_dropped" in res and res["n_dropped"].sum():
        lines.append(f"- rows left out of training (sharing a subject or a clip with the test side): "
                     f"{', '.join(str(int(d)) for d in res.groupby('fold')['n_dropped'].first())} per fold")
    lines.append(f"- model variant: `{variant_name(cfg)}`" + (f", config `{config_name}`" if config_name else ""))
    lines.append("- baselines: `majority` (the training side's most frequent class), `clip-majority` (the test "
                 "clip's usual label among other viewers in training: clip memory with no signal)")
    if warning:
        lines += ["", f"> **{'LEAKY PROTOCOL' if result.leaky else 'CLIPS SHARED WITH TRAINING'}.** {warning}"]
    lines += ["", "## Accuracy (mean ± std over folds)", "",
              "| method | protocol | accuracy | macro-F1 | folds |", "|---|---|---|---|---|"]
    for method in methods:
        part = res[res["method"] == method]
        lines.append(f"| {method} | {plabel} | {_fmt(part['accuracy'])} | {_fmt(part['macro_f1'])} | {len(part)} |")
    lines += ["", "## Per fold", "", "| fold | n_test | " + " | ".join(f"{m} accuracy" for m in methods)
              + " | protocol |", "|---|---|" + "---|" * len(methods) + "---|"]
    for fold, part in res.groupby("fold"):
        acc = dict(zip(part["method"], part["accuracy"], strict=True))
        n_test = int(part["n_test"].iloc[0])
        lines.append(f"| {fold} | {n_test} | " + " | ".join(f"{acc[m]:.3f}" for m in methods) + f" | {plabel} |")
    pred = result.predictions
    pred = pred.assign(correct=pred["label"] == pred["prediction"])
    per_subject = pred.pivot_table(index="subject", columns="method", values="correct", aggfunc="mean")
    counts = pred[pred["method"] == "mercl"].groupby("subject").size()
    lines += ["", "## Per subject accuracy (test rows over all folds)", "",
              "| subject | n | " + " | ".join(f"{m} accuracy" for m in methods) + " | protocol |",
              "|---|---|" + "---|" * len(methods) + "---|"]
    for subject, row in per_subject.iterrows():
        cells = " | ".join(f"{row.get(m, float('nan')):.3f}" for m in methods)
        lines.append(f"| {md_cell(subject)} | {int(counts.get(subject, 0))} | {cells} | {plabel} |")
    lines.append("")
    return "\n".join(lines)
