"""TensorBoard logging: loss terms, metrics, learning rate, confusion matrix, embeddings.

``tensorboard --logdir RUN_DIR/tb`` then shows, per run: ``pretrain/amcl``, ``pretrain/emcl``,
``pretrain/smcl``, ``pretrain/loss``, ``finetune/ce``, the validation metrics, ``lr/<stage>``,
the confusion matrix as an image and the shared embeddings in the Projector tab (one point
per sample and modality, coloured by class or by modality).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class TensorBoardLogger:
    """A thin wrapper over :class:`torch.utils.tensorboard.SummaryWriter`."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        """One scalar per key (``prefix/key``); non-finite and non-numeric values are skipped."""
        for key, value in values.items():
            if isinstance(value, (int, float, np.floating, np.integer)) and np.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}" if prefix else key, float(value), step)

    def confusion(self, matrix: np.ndarray, class_names: list[str], step: int, tag: str = "confusion") -> None:
        """The confusion matrix (n_classes, n_classes) as an image (rows: true, columns: predicted)."""
        self.writer.add_figure(tag, confusion_figure(matrix, class_names), step, close=True)

    def embeddings(
        self,
        z: dict[str, torch.Tensor],
        valid: dict[str, torch.Tensor],
        labels: torch.Tensor,
        class_names: list[str],
        step: int,
        tag: str = "shared_embedding",
    ) -> None:
        """Shared embeddings in the Projector: one point per (sample, valid modality).

        z: modality -> (B, D) unit vectors; valid: modality -> (B,) bool; labels: (B,).
        Metadata columns ``class`` and ``modality`` let the Projector colour by either.
        """
        points, meta = [], []
        for modality, emb in z.items():
            keep = valid[modality].bool().cpu()
            emb = emb.detach().float().cpu()[keep]
            points.append(emb)
            for label in labels.cpu()[keep].tolist():
                meta.append([class_names[int(label)], modality])
        if not meta:
            return
        self.writer.add_embedding(
            torch.cat(points), metadata=meta, metadata_header=["class", "modality"], global_step=step, tag=tag
        )

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def confusion_figure(matrix: np.ndarray, class_names: list[str]):
    """A matplotlib figure of a confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n, 1.0 + 0.9 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if top and matrix[i, j] > top / 2 else "black")
    fig.tight_layout()
    return fig
