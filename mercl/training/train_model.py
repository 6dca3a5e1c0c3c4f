"""``mercl train``: one model trained on all the data, its validation rows held out like the protocol.

:func:`train_once` is what ``mercl train`` and the search's final model run: one train/validation
split held out the way the protocol holds out its folds, the two-stage training with a checkpoint
after every epoch (resumable), and the self-describing ``model.pt``
(:mod:`mercl.training.model_export`) beside ``metrics.json``, ``history.csv``, ``config.json`` and
TensorBoard logs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mercl.atomic import write_atomic
from mercl.config import to_dict
from mercl.data.labels import class_names as scheme_class_names
from mercl.data.protocols import holdout_split, resolve_protocol
from mercl.data.reader import PreparedDataset, load_dataset
from mercl.training.checkpoint import load_checkpoint, save_checkpoint
from mercl.training.config import TrainConfig
from mercl.training.crossval import SplitRun, epoch_bar, fold_baselines, train_split, variant_name
from mercl.training.loop import EpochReport, predict_batches
from mercl.training.metrics import classification_metrics
from mercl.training.model_export import MODEL_FILE, model_file_state
from mercl.training.tb_logger import TensorBoardLogger

CHECKPOINT_FILE = "checkpoint.pt"


def train_once(
    dataset: str | Path | PreparedDataset,
    label_scheme: str,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    show_progress: bool = True,
    console: Callable[[str], None] | None = print,
    config_name: str = "",
    protocol: str | None = None,
    keep_ids: bool = False,
) -> SplitRun:
    """Train on one train/validation split of the dataset and save the model.

    The validation rows (early stopping, the reported score) are held out the way ``protocol``
    holds out its folds (None/``auto``: the data's default, whole clips when they are shared
    across subjects), so the final epoch is not chosen on clips the model trained on.

    Writes ``model.pt`` (the self-describing model file of :mod:`mercl.training.model_export`:
    weights, configs, preprocessing, normalisation, class names), ``checkpoint.pt`` after every
    epoch (``resume=True`` continues from it), ``history.csv``, ``metrics.json`` (inner-validation
    scores beside the majority baseline), ``config.json`` and ``tb/``. ``model.pt`` holds salted
    hashes of the subject and clip ids, not the ids, unless ``keep_ids``.
    """
    say = console or (lambda _msg: None)
    prepared = dataset if isinstance(dataset, PreparedDataset) else load_dataset(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = prepared.labels(label_scheme)
    names = list(scheme_class_names(label_scheme))
    protocol, note = resolve_protocol(protocol, prepared, labels, 4, cfg.seed)
    if note:
        say(note)
    train_rows, val_rows = holdout_split(protocol, prepared.subjects, prepared.trials, labels,
                                         cfg.val_fraction, cfg.seed, prepared.stimulus_ids)
    held_out = {"stimulus": "held-out clips", "subject-stimulus": "held-out subjects on held-out clips",
                "segment": "held-out segments (LEAKY)"}.get(protocol, "held-out trials")
    state = load_checkpoint(out / CHECKPOINT_FILE) if resume and (out / CHECKPOINT_FILE).is_file() else None
    if state is not None:
        say(f"resuming from {out / CHECKPOINT_FILE} ({state['stage']} epoch {state['epoch']})")
    dataset_id = prepared.manifest.get("dataset_id", prepared.path.name)
    say(f"training on {dataset_id}: {len(train_rows)} training rows, {len(val_rows)} validation rows "
        f"({held_out}), label {label_scheme}, variant {variant_name(cfg)}")
    total = (cfg.pretrain.epochs if cfg.contrastive else 0) + cfg.finetune.epochs
    bar = epoch_bar(total, "epochs", show_progress)
    if state is not None:
        bar.update(len(state["history"]))

    def on_epoch_end(report: EpochReport) -> None:
        save_checkpoint(report.state(), out / CHECKPOINT_FILE)
        bar.update(1)
        bar.set_postfix(stage=report.stage, val=f"{report.metrics['val_metric']:.3f}",
                        loss=f"{report.metrics['loss']:.3f}")

    tb = TensorBoardLogger(out / "tb")
    try:
        run = train_split(prepared, label_scheme, train_rows, val_rows, cfg, tb=tb, on_epoch_end=on_epoch_end,
                          resume=state, show_progress=show_progress)
    finally:
        bar.close()
    metrics = validation_metrics(run, prepared, label_scheme, cfg, train_rows, val_rows, tb)
    metrics.update({"dataset": dataset_id, "variant": variant_name(cfg), "protocol": protocol})
    training = {k: metrics[k] for k in ("dataset", "variant", "protocol", "val_accuracy", "val_macro_f1",
                                        "majority_val_accuracy", "clip_majority_val_accuracy", "n_train",
                                        "n_val", "best_epoch")}
    training["config_name"] = config_name
    save_checkpoint(model_file_state(run, cfg, label_scheme, names, prepared, train_rows, labels, training=training,
                                     keep_ids=keep_ids), out / MODEL_FILE)
    write_atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=2)))
    write_atomic(out / "history.csv", lambda p: pd.DataFrame(run.result.history).to_csv(p, index=False))
    write_atomic(out / "config.json", lambda p: p.write_text(json.dumps(to_dict(cfg), indent=2)))
    say(f"validation accuracy {metrics['val_accuracy']:.3f} (macro-F1 {metrics['val_macro_f1']:.3f}) [{held_out}], "
        f"majority {metrics['majority_val_accuracy']:.3f}, clip-majority {metrics['clip_majority_val_accuracy']:.3f}; "
        f"best epoch {run.result.best_epoch}")
    say(f"wrote {out / MODEL_FILE} (mercl info {out / MODEL_FILE}); tensorboard --logdir {out / 'tb'}")
    return run


def validation_metrics(run: SplitRun, prepared: PreparedDataset, label_scheme: str, cfg: TrainConfig,
                       train_rows: np.ndarray, val_rows: np.ndarray, tb: TensorBoardLogger) -> dict[str, Any]:
    """metrics.json of a trained split: the validation scores beside the majority and clip-majority
    baselines (fit on the training rows); the final confusion matrix goes to ``tb``, which closes."""
    names = list(scheme_class_names(label_scheme))
    labels = prepared.labels(label_scheme)
    pred = predict_batches(run.model, run.batches(prepared, val_rows, label_scheme, cfg), run.device)
    scores = classification_metrics(pred["label"], pred["pred"], len(names))
    baselines = fold_baselines(labels, prepared.stimulus_ids, train_rows, val_rows, len(names))
    step = int(run.result.history[-1]["global_epoch"]) if run.result.history else 0
    tb.confusion(scores.confusion, names, step, tag="confusion/val_final")
    tb.close()
    metrics = {
        "label": label_scheme, "val_accuracy": scores.accuracy, "val_macro_f1": scores.macro_f1,
        "val_per_class_f1": scores.per_class_f1, "val_confusion": scores.confusion.tolist(),
    }
    for method, (_, sc) in baselines.items():
        key = method.replace("-", "_")
        metrics.update({f"{key}_val_accuracy": sc.accuracy, f"{key}_val_macro_f1": sc.macro_f1})
    metrics.update({"n_train": int(len(train_rows)), "n_val": int(len(val_rows)),
                    "best_epoch": run.result.best_epoch, "seconds": run.seconds})
    return metrics
