"""The common interface of the baselines, plus the small pieces they share.

A baseline is sklearn-like and fold-agnostic::

    features = build_features(prepared)                 # once per dataset (cached)
    model = get_baseline("ave_rt")(seed=0, classifier="random_tree")
    model.fit(features, fold.train, labels[fold.train])
    predicted = model.predict(features, fold.test)      # (n,) int labels

``rows`` index the dataset's EEG rows (the index space of :mod:`mercl.data.reader` and
:mod:`mercl.data.protocols`); ``labels`` are aligned with ``rows``. Everything fitted
(normalisation, feature selection, PCA, the classifier) is fitted inside ``fit`` on
those rows only. Options are a typed dataclass per baseline (``Baseline.Options``),
checked like any config: a bad one raises ConfigError naming ``<baseline>.<field>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mercl.baselines.features import BaselineFeatures, build_features
from mercl.config import FieldProblem, at_least, from_dict, to_dict
from mercl.errors import MerclError

__all__ = ["Baseline", "BaselineFeatures", "build_features", "TorchOptions", "Standardizer"]


class Baseline:
    """One baseline method. Subclasses set ``name``, ``modalities``, ``Options`` and
    implement ``_fit`` and ``_predict_proba``."""

    name: ClassVar[str] = "baseline"
    modalities: ClassVar[tuple[str, ...]] = ()

    @dataclasses.dataclass
    class Options:
        pass

    def __init__(self, seed: int = 0, **options: Any):
        self.seed = int(seed)
        self.options = from_dict(self.Options, options, prefix=self.name)
        self.classes_: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, {to_dict(self.options)})"

    def fit(self, features: BaselineFeatures, rows: np.ndarray, labels: np.ndarray) -> Baseline:
        """Fit on the EEG rows ``rows`` (n,) with their int labels (n,); returns self."""
        rows = check_rows(features, rows)
        labels = np.asarray(labels)
        if labels.shape != rows.shape:
            raise MerclError(f"{self.name}: {len(labels)} labels for {len(rows)} training rows")
        if len(rows) == 0:
            raise MerclError(f"{self.name}: no training rows")
        self.classes_, y = np.unique(labels.astype(np.int64), return_inverse=True)
        self._fit(features, rows, y.astype(np.int64))
        return self

    def predict_proba(self, features: BaselineFeatures, rows: np.ndarray) -> np.ndarray:
        """(n, len(classes_)) class scores summing to 1, columns in ``classes_`` order."""
        if self.classes_ is None:
            raise MerclError(f"{self.name}: predict before fit")
        rows = check_rows(features, rows)
        if len(rows) == 0:
            return np.zeros((0, len(self.classes_)), np.float64)
        return self._predict_proba(features, rows)

    def predict(self, features: BaselineFeatures, rows: np.ndarray) -> np.ndarray:
        """(n,) int64 predicted labels of ``rows``."""
        proba = self.predict_proba(features, rows)
        return self.classes_[np.argmax(proba, axis=1)].astype(np.int64)

    @property
    def n_classes(self) -> int:
        return 0 if self.classes_ is None else len(self.classes_)

    # subclasses
    def _fit(self, features: BaselineFeatures, rows: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_proba(self, features: BaselineFeatures, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def check_rows(features: BaselineFeatures, rows: np.ndarray | Sequence[int]) -> np.ndarray:
    """``rows`` as a 1-D int64 array of valid EEG row indices."""
    rows = np.asarray(rows)
    if rows.ndim != 1 or (len(rows) and not np.issubdtype(rows.dtype, np.integer)):
        raise MerclError(f"rows must be a 1-D array of integer row indices, got {rows.dtype} {rows.shape}")
    rows = rows.astype(np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(features)):
        raise MerclError(f"row indices out of range for a dataset of {len(features)} rows")
    return rows


class Standardizer:
    """Per-feature mean/std fitted on training values; features on the last axis.

    ``fit(x)`` with x (..., D) pools every leading axis; constant features get std 1.
    """

    def fit(self, x: np.ndarray) -> Standardizer:
        flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
        self.mean = flat.mean(axis=0)
        std = flat.std(axis=0)
        self.std = np.where(std > 1e-8, std, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) / self.std).astype(np.float32)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, K) scores."""
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- small torch training loop


@dataclasses.dataclass
class TorchOptions:
    """Training settings shared by the deep baselines (minibatch Adam, cross-entropy).

    epochs, batch_size, lr, weight_decay: Adam on cross-entropy for a fixed number of epochs
    (no early stopping: nothing outside the training rows is looked at).
    threads: torch CPU threads while fitting (None leaves torch's setting).
    device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    threads: int | None = None
    device: str = "auto"

    def validate(self) -> None:
        at_least(self, 1, "epochs")
        at_least(self, 1, "batch_size")
        if self.lr <= 0:
            raise FieldProblem("lr", f"must be > 0, got {self.lr}")
        at_least(self, 0, "weight_decay")
        if self.threads is not None and self.threads < 1:
            raise FieldProblem("threads", f"must be >= 1, got {self.threads}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise FieldProblem("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MerclError(f"device {name!r} asked for, but CUDA is not available")
    return torch.device(name)


def train_classifier(
    model: nn.Module, inputs: Sequence[np.ndarray], y: np.ndarray, opts: TorchOptions, seed: int
) -> nn.Module:
    """Fit ``model(*inputs) -> (B, K) logits`` to labels ``y`` (n,) with Adam + cross-entropy.

    inputs: arrays with n rows each (float32). Seeded: the same data and seed give the same model.
    """
    generator = torch.Generator().manual_seed(seed)
    device = resolve_device(opts.device)
    model.to(device)
    tensors = [torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device) for x in inputs]
    target = torch.from_numpy(np.asarray(y, np.int64)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))  # one kernel for all parameters
    loss_fn = nn.CrossEntropyLoss()
    with _threads(opts.threads):
        model.train()
        for _ in range(opts.epochs):
            order = torch.randperm(len(target), generator=generator)
            for start in range(0, len(order), opts.batch_size):
                batch = order[start : start + opts.batch_size].to(device)
                optimizer.zero_grad()
                loss = loss_fn(model(*(t[batch] for t in tensors)), target[batch])
                loss.backward()
                optimizer.step()
        model.eval()
    return model


def predict_logits(model: nn.Module, inputs: Sequence[np.ndarray], opts: TorchOptions) -> np.ndarray:
    """(n, K) float64 logits of ``model`` in eval mode, in batches."""
    device = next(model.parameters()).device
    tensors = [torch.from_numpy(np.ascontiguousarray(x, np.float32)) for x in inputs]
    n, step = len(tensors[0]), max(opts.batch_size, 256)
    out = []
    with _threads(opts.threads), torch.inference_mode():
        model.eval()
        for start in range(0, n, step):
            out.append(model(*(t[start : start + step].to(device) for t in tensors)).cpu())
    return torch.cat(out).double().numpy() if out else np.zeros((0, 0))


class _threads:
    """Temporarily set torch's intra-op thread count (None: leave it)."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.n is not None:
            torch.set_num_threads(self.before)


@contextlib.contextmanager
def seeded(seed: int):
    """Torch's global RNG (weight initialisation) starts from ``seed`` inside; restored afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield
