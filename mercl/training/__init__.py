"""Training MERCL: the two-stage loop (Algorithm 1), the backbone feature cache, honest cross-validation.

* :func:`~mercl.training.loop.train_two_stage` - the loop, a function of (model, batches, config)
  that a Ray Train worker can call (per-epoch reports of both stages, checkpoint dicts, resume,
  DDP with global contrastive sets); :class:`~mercl.training.loop.TwoStageTrainer` is the object
  behind it, one :class:`~mercl.training.loop.StageRun` per stage.
* :func:`~mercl.training.config.load_train_config` - named configs ``paper``/``small``/``tiny``
  or a YAML file, validated, the bad field named.
* :func:`~mercl.training.feature_cache.ensure_feature_cache` - frozen ViT/VGGish features once
  per stimulus segment, as a Parquet table under the dataset dir.
* :func:`~mercl.training.crossval.cross_validate` / :func:`~mercl.training.train_model.train_once` -
  what ``mercl evaluate`` and ``mercl train`` run.

Names are re-exported lazily (:mod:`mercl.lazy`).
"""

from __future__ import annotations

from mercl.lazy import lazy_exports

_EXPORTS = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "NAMED_CONFIGS": "config",
    "StageConfig": "config",
    "TrainConfig": "config",
    "load_train_config": "config",
    "EpochReport": "loop",
    "TrainResult": "loop",
    "TwoStageTrainer": "loop",
    "predict_batches": "loop",
    "train_two_stage": "loop",
    "ClassificationMetrics": "metrics",
    "classification_metrics": "metrics",
    "majority_baseline": "metrics",
    "NormStats": "normalize",
    "fit_normalization": "normalize",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
