"""Outer scores from the fold tasks' predictions: the results table, baselines and files of mercl's own CV.

:func:`tuning.remote.run_outer_folds` trains and predicts each outer fold as a Ray task;
:func:`crossval_result` turns what they return into a
:class:`mercl.training.crossval.CrossValResult` with ``majority`` and ``clip-majority`` beside
MERCL on every fold (``mercl.training.crossval.fold_baselines``), and writes
``crossval/results.csv``, ``predictions.parquet``, ``summary.md`` and ``config.json`` the way
``mercl evaluate`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mercl.atomic import write_atomic


def search_folds_cv(data, seed: int):
    """The outer folds of the search's protocol from its row table (the folds the trials were cut from)."""
    from mercl.data.protocols import make_folds

    rows = data.rows
    return make_folds(data.protocol, rows["subject"].to_numpy(str), rows["trial"].to_numpy(np.int64),
                      rows["label"].to_numpy(np.int64), data.n_folds, seed=seed,
                      stimuli=rows["stimulus"].to_numpy(str))


def _frame(data, fold: int, method: str, variant: str, rows: np.ndarray, pred: np.ndarray,
           prob: np.ndarray | None, protocol: str) -> pd.DataFrame:
    meta = data.rows.iloc[rows]
    frame = pd.DataFrame({
        "method": method, "variant": variant, "fold": fold, "row": rows.astype(np.int64),
        "subject": meta["subject"].to_numpy(str), "trial": meta["trial"].to_numpy(np.int64),
        "segment": meta["segment"].to_numpy(np.int64), "stimulus": meta["stimulus"].to_numpy(str),
        "label": meta["label"].to_numpy(np.int64), "prediction": pred.astype(np.int64), "protocol": protocol,
    })
    if prob is not None:
        for k in range(prob.shape[1]):
            frame[f"prob_{k}"] = prob[:, k].astype(np.float32)
    return frame


def crossval_result(data, outputs: dict[int, dict], cfg, out_dir: Path | None, config_name: str = ""):
    """CrossValResult of the fold tasks' ``outputs`` ({fold: outer_fold_task's dict}); writes ``out_dir``.

    cfg: the (base or best) TrainConfig, for its seed and model variant.
    """
    from mercl.config import to_dict
    from mercl.data.protocols import protocol_label
    from mercl.training.crossval import (
        CrossValResult,
        fold_baselines,
        summary_markdown,
        variant_name,
    )
    from mercl.training.metrics import classification_metrics

    cv = search_folds_cv(data, cfg.seed)
    plabel = protocol_label(data.protocol, cv.clip_shared)
    variant = variant_name(cfg)
    labels = data.rows["label"].to_numpy(np.int64)
    stimuli = data.rows["stimulus"].to_numpy(str)
    n_classes = len(data.class_names)
    results, frames, histories = [], [], []
    for k, out in sorted(outputs.items()):
        fold = cv.folds[k]
        if not np.array_equal(out["rows"], fold.test):
            raise RuntimeError(f"fold {k}'s predictions do not cover its test rows")  # a bug
        scores = classification_metrics(out["label"], out["pred"], n_classes)
        baselines = fold_baselines(labels, stimuli, fold.train, fold.test, n_classes)
        for method, sc in (("mercl", scores), *((m, b[1]) for m, b in baselines.items())):
            results.append({"method": method, "fold": k, "accuracy": sc.accuracy, "macro_f1": sc.macro_f1,
                            "n_test": sc.n, "protocol": plabel, "label": data.label, "variant": variant,
                            "held_out_subject": fold.held_out_subject or "", "n_dropped": fold.dropped})
        frames.append(_frame(data, k, "mercl", variant, fold.test, out["pred"], out["prob"], plabel))
        for method, (pred, _) in baselines.items():
            frames.append(_frame(data, k, method, variant, fold.test, pred, None, plabel))
        histories.append(out["history"])
    table = pd.DataFrame(results)
    predictions = pd.concat(frames, ignore_index=True)
    result = CrossValResult(table, predictions, plabel, cv.leaky, out_dir, histories)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = summary_markdown(result, dataset_id=data.dataset_id, label_scheme=data.label, cfg=cfg,
                                   protocol=data.protocol, n_folds=len(cv), warning=cv.warning,
                                   config_name=config_name)
        write_atomic(out_dir / "results.csv", lambda p: table.to_csv(p, index=False))
        write_atomic(out_dir / "predictions.parquet", lambda p: predictions.to_parquet(p, index=False))
        write_atomic(out_dir / "summary.md", lambda p: p.write_text(summary))
        write_atomic(out_dir / "config.json", lambda p: p.write_text(json.dumps(to_dict(cfg), indent=2)))
    return result
