"""Count the collectives and host syncs a block of training code issues (tests and bench/train.py).

``with count_step_events() as counts: ...`` wraps, for the duration of the block,

* collectives: the ``torch.distributed`` functions the code calls from Python (``all_gather``,
  ``all_gather_single``, ``all_reduce``, ``all_gather_object``, ``broadcast``, ...) and
  the functional collective ``all_gather_single`` of :mod:`mercl.distributed`'s differentiable
  gather (counted as ``functional all_gather_single``). DDP's gradient
  all-reduce runs in its C++ reducer and is not counted.
* host syncs: the tensor methods that make the host wait for the device's result
  (``item``, ``tolist``, ``numpy``, ``__float__``, ``__int__``, ``__bool__``) and indexing with
  a boolean mask (its output size depends on the data). On a CPU nothing waits; the count
  says how often a CUDA run would.

Counts are per name: ``counts.collectives["all_gather_single"]``; ``counts.total_collectives``.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

COLLECTIVES = ("all_gather", "all_gather_single", "all_gather_into_tensor", "all_reduce", "all_gather_object",
               "broadcast", "broadcast_object_list", "reduce_scatter_tensor", "all_to_all_single", "barrier")
SYNC_METHODS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__")


@dataclass
class StepEvents:
    collectives: Counter = field(default_factory=Counter)
    host_syncs: Counter = field(default_factory=Counter)

    @property
    def total_collectives(self) -> int:
        return sum(self.collectives.values())

    @property
    def total_host_syncs(self) -> int:
        return sum(self.host_syncs.values())


def _counting(fn, counter: Counter, name: str, active: list[bool]):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if active[0]:  # nested calls (tolist -> __float__ ...) count once
            counter[name] += 1
            active[0] = False
            try:
                return fn(*args, **kwargs)
            finally:
                active[0] = True
        return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def count_step_events() -> Iterator[StepEvents]:
    """Count collectives and host syncs issued inside the block (see the module docstring)."""
    import mercl.distributed as mdist

    events = StepEvents()
    sync_on = [True]
    coll_on = [True]
    saved: list[tuple[object, str, object]] = []

    def patch(owner, name, replacement):
        saved.append((owner, name, owner.__dict__.get(name, getattr(owner, name))))
        setattr(owner, name, replacement)

    try:
        for name in COLLECTIVES:
            if hasattr(dist, name):
                patch(dist, name, _counting(getattr(dist, name), events.collectives, name, coll_on))
        patch(mdist, "all_gather_single",
              _counting(mdist.all_gather_single, events.collectives, "functional all_gather_single", coll_on))
        for name in SYNC_METHODS:
            patch(torch.Tensor, name, _counting(getattr(torch.Tensor, name), events.host_syncs, name, sync_on))
        getitem = torch.Tensor.__getitem__

        def masked_getitem(self, index):
            if isinstance(index, torch.Tensor) and index.dtype == torch.bool and sync_on[0]:
                events.host_syncs["boolean mask indexing"] += 1
            return getitem(self, index)

        patch(torch.Tensor, "__getitem__", masked_getitem)
        yield events
    finally:
        for owner, name, original in reversed(saved):
            if owner is torch.Tensor and name not in torch.Tensor.__dict__:
                continue
            if owner is torch.Tensor and original is getattr(torch._C.TensorBase, name, None):
                delattr(torch.Tensor, name)
            else:
                setattr(owner, name, original)
