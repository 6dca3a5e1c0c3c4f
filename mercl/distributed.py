"""All-gather across the DDP group so contrastive sets span the global batch.

:func:`all_gather_with_grad` uses the functional collective ``all_gather_single`` (what torch
2.14 names in place of the deprecated ``torch.distributed.nn.functional.all_gather``), whose
backward sends every rank the sum of the gradients all ranks' losses put on its slice.
Each rank computes the same loss on the same global batch, so that sum is
``world_size x dL/dz_local``; DDP then averages parameter gradients over the ranks,
which gives exactly the gradient of the single-process loss on the concatenated batch.
Ranks may hold different batch sizes (a short last batch): tensors are padded to the
largest size for the collective and trimmed afterwards.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed._functional_collectives import all_gather_single, wait_tensor


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sizes(x: Tensor) -> list[int]:
    """First-axis size of ``x`` on every rank."""
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _pad_rows(x: Tensor, rows: int) -> Tensor:
    if x.shape[0] == rows:
        return x
    return torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))])


def all_gather_with_grad(x: Tensor) -> Tensor:
    """(B_local, ...) -> (sum of B over ranks, ...) in rank order, differentiable. Identity without DDP."""
    if not is_distributed():
        return x
    sizes = _sizes(x)
    rows = max(sizes)
    gathered = wait_tensor(all_gather_single(_pad_rows(x, rows), 0, dist.group.WORLD))  # (world * rows, ...)
    return torch.cat([part[:n] for part, n in zip(gathered.split(rows), sizes, strict=True)])


def all_gather_no_grad(x: Tensor) -> Tensor:
    """Like :func:`all_gather_with_grad` for labels and masks (any dtype, bool included); no graph."""
    if not is_distributed():
        return x
    sizes = _sizes(x)
    wire = x.to(torch.uint8) if x.dtype == torch.bool else x
    padded = _pad_rows(wire.detach(), max(sizes))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    out = torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])
    return out.bool() if x.dtype == torch.bool else out
