"""All-gather across the DDP group so contrastive sets span the global batch.

:func:`all_gather_with_grad` uses the functional collective ``all_gather_single`` (what torch
2.14 names in place of the deprecated ``torch.distributed.nn.functional.all_gather``), whose
backward sends every rank the sum of the gradients all ranks' losses put on its slice.
Each rank computes the same loss on the same global batch, so that sum is
``world_size x dL/dz_local``; DDP then averages parameter gradients over the ranks,
which gives exactly the gradient of the single-process loss on the concatenated batch.
Ranks may hold different batch sizes (a short last batch): tensors are padded to the
largest size for the collective and trimmed afterwards, which needs every rank's size on
the host.

:func:`all_gather_batch` gathers what the contrastive loss needs in two collectives: the
embeddings side by side in one differentiable gather, the labels and validity masks as one
integer table in another (they were seven: three embeddings, the labels, three masks).

Inside ``with step_rows(n):`` (the training loop wraps each step's loss in it) the sizes are
exchanged once, and every gather of a tensor with ``n`` rows reuses them: one size
collective and one host sync per step instead of one of each per gather. Outside it each
gather exchanges sizes itself.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed._functional_collectives import all_gather_single, wait_tensor

_step_sizes: dict[int, list[int]] = {}  # local rows -> every rank's rows, inside step_rows()


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def exchange_sizes(rows: int, device: torch.device) -> list[int]:
    """``rows`` of every rank, in rank order: one collective and one host sync."""
    size = torch.tensor([rows], device=device, dtype=torch.long)
    sizes = torch.zeros(dist.get_world_size(), device=device, dtype=torch.long)
    dist.all_gather_single(sizes, size)
    return sizes.tolist()


@contextlib.contextmanager
def step_rows(rows: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Exchange this step's local batch size once; gathers of ``rows``-row tensors inside reuse it.

    Every rank must enter it (it is a collective); a no-op without torch.distributed.
    """
    if not is_distributed():
        yield
        return
    _step_sizes[rows] = exchange_sizes(rows, torch.device(device))
    try:
        yield
    finally:
        _step_sizes.pop(rows, None)


def _sizes(x: Tensor) -> list[int]:
    """First-axis size of ``x`` on every rank (this step's, when :func:`step_rows` knows them)."""
    known = _step_sizes.get(x.shape[0])
    return known if known is not None else exchange_sizes(x.shape[0], x.device)


def _pad_rows(x: Tensor, rows: int) -> Tensor:
    if x.shape[0] == rows:
        return x
    return torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))])


def _trim(gathered: Tensor, rows: int, sizes: list[int]) -> Tensor:
    """(world * rows, ...) padded parts -> (sum(sizes), ...); no copy when no rank was short."""
    if all(n == rows for n in sizes):
        return gathered
    return torch.cat([part[:n] for part, n in zip(gathered.split(rows), sizes, strict=True)])


def all_gather_with_grad(x: Tensor) -> Tensor:
    """(B_local, ...) -> (sum of B over ranks, ...) in rank order, differentiable. Identity without DDP."""
    if not is_distributed():
        return x
    sizes = _sizes(x)
    rows = max(sizes)
    gathered = wait_tensor(all_gather_single(_pad_rows(x, rows), 0, dist.group.WORLD))  # (world * rows, ...)
    return _trim(gathered, rows, sizes)


def all_gather_no_grad(x: Tensor) -> Tensor:
    """Like :func:`all_gather_with_grad` for labels and masks (any dtype, bool included); no graph."""
    if not is_distributed():
        return x
    sizes = _sizes(x)
    rows = max(sizes)
    wire = x.to(torch.uint8) if x.dtype == torch.bool else x
    padded = _pad_rows(wire.detach(), rows).contiguous()
    gathered = padded.new_empty((len(sizes) * rows, *padded.shape[1:]))
    dist.all_gather_single(gathered, padded)
    out = _trim(gathered, rows, sizes)
    return out.bool() if x.dtype == torch.bool else out


def all_gather_batch(z: dict[str, Tensor], labels: Tensor,
                     valid: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
    """A step's contrastive inputs over the global batch, in two gathers. Identity without DDP.

    z {m: (B, D_m)} -> {m: (sum of B, D_m)}: one differentiable gather of the embeddings side
    by side, (B, sum of D_m); labels (B,) and valid {m: (B,) bool} -> (sum of B,) each: one
    gather of the (B, 1 + M) integer table they make.
    """
    if not is_distributed():
        return z, labels, valid
    names, masks = list(z), list(valid)
    dtype = functools.reduce(torch.promote_types, [v.dtype for v in z.values()])
    side_by_side = all_gather_with_grad(torch.cat([z[m].to(dtype) for m in names], dim=1))
    parts = side_by_side.split([z[m].shape[1] for m in names], dim=1)
    z_all = {m: part.to(z[m].dtype) for m, part in zip(names, parts, strict=True)}
    table = all_gather_no_grad(torch.stack([labels.long(), *(valid[m].long() for m in masks)], dim=1))
    valid_all = {m: table[:, i + 1].to(valid[m].dtype) for i, m in enumerate(masks)}
    return z_all, table[:, 0].to(labels.dtype), valid_all
