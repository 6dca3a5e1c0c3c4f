"""Training MERCL: the two-stage loop (Algorithm 1), the backbone feature cache, honest cross-validation.

* :func:`~mercl.training.loop.train_two_stage` - the loop, a plain function of (model, batches,
  config) that a Ray Train worker can call (per-epoch reports of both stages, checkpoint dicts,
  resume, DDP with global contrastive sets).
* :func:`~mercl.training.config.load_train_config` - named configs ``paper``/``small``/``tiny``
  or a YAML file, validated, the bad field named.
* :func:`~mercl.training.feature_cache.ensure_feature_cache` - frozen ViT/VGGish features once
  per stimulus segment, as a Parquet table under the dataset dir.
* :func:`~mercl.training.crossval.cross_validate` / :func:`~mercl.training.crossval.train_once` -
  what ``mercl evaluate`` and ``mercl train`` run.
"""

from mercl.training.checkpoint import load_checkpoint, save_checkpoint
from mercl.training.config import NAMED_CONFIGS, StageConfig, TrainConfig, load_train_config
from mercl.training.loop import EpochReport, TrainResult, predict_batches, train_two_stage
from mercl.training.metrics import ClassificationMetrics, classification_metrics, majority_baseline
from mercl.training.normalize import NormStats, fit_normalization

__all__ = [
    "NAMED_CONFIGS",
    "ClassificationMetrics",
    "EpochReport",
    "NormStats",
    "StageConfig",
    "TrainConfig",
    "TrainResult",
    "classification_metrics",
    "fit_normalization",
    "load_checkpoint",
    "load_train_config",
    "majority_baseline",
    "predict_batches",
    "save_checkpoint",
    "train_two_stage",
]
