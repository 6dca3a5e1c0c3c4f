"""k-nearest-neighbour classification for the pre-training probe, in torch.

The probe runs after every pre-training epoch inside each training (and Ray Train) worker;
scikit-learn's ``KNeighborsClassifier`` would cost every such process ~0.7 s of imports for
a computation that is one distance matrix and a vote. The rule is the same as scikit-learn's
with uniform weights: Euclidean distance, the k nearest reference rows vote, a tied vote
goes to the smallest class index (tests compare the two on random data).
"""

from __future__ import annotations

import numpy as np
import torch


def knn_predict(train_x, train_y, query_x, k: int, chunk: int = 1024) -> np.ndarray:
    """Class of each query row by a vote of its ``k`` nearest training rows.

    train_x: (N, D) float; train_y: (N,) int class indices >= 0; query_x: (M, D) float.
    Returns (M,) int64. ``k`` is capped at N; queries are processed ``chunk`` rows at a time
    (memory: chunk x N distances).
    """
    ref = torch.as_tensor(np.asarray(train_x), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(train_y), dtype=torch.int64)
    queries = torch.as_tensor(np.asarray(query_x), dtype=torch.float64)
    if ref.ndim != 2 or queries.ndim != 2 or ref.shape[1] != queries.shape[1] or len(labels) != len(ref):
        raise ValueError(f"knn_predict: shapes {tuple(ref.shape)}, {tuple(labels.shape)}, {tuple(queries.shape)} "
                         "do not fit (N, D), (N,), (M, D)")
    if len(ref) == 0:
        raise ValueError("knn_predict: no training rows")
    k = max(1, min(int(k), len(ref)))
    n_classes = int(labels.max()) + 1
    out = []
    for start in range(0, len(queries), chunk):
        dist = torch.cdist(queries[start:start + chunk], ref)  # (m, N)
        nearest = dist.topk(k, dim=1, largest=False).indices  # (m, k)
        votes = torch.zeros(len(nearest), n_classes, dtype=torch.int64)
        votes.scatter_add_(1, labels[nearest], torch.ones_like(nearest))
        out.append(votes.argmax(dim=1))  # first maximum: the smallest tied class
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)
