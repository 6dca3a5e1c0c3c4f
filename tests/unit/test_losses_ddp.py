"""mercl_loss(gather=True) in a real 2-process gloo group equals the loss of the whole batch,
with the number of collectives and host syncs per step that the training loop relies on."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mercl.distributed import step_rows
from mercl.losses import LossConfig, mercl_loss
from mercl.training.step_probe import count_step_events

MODS = ("video", "audio", "eeg")
WORLD = 2
SPLIT = (7, 4)  # unequal shards: a short last batch on rank 1
CFG = LossConfig(l1=1.0, l2=0.7, l3=1.3, alpha=0.5, temperature=0.2)


def _global_batch():
    g = torch.Generator().manual_seed(5)
    n = sum(SPLIT)
    z = {m: torch.randn(n, 8, generator=g, dtype=torch.float64) for m in MODS}
    labels = torch.randint(0, 3, (n,), generator=g)
    valid = {m: torch.rand(n, generator=g) < 0.8 for m in MODS}
    return z, labels, valid


def _shard(rank: int) -> slice:
    start = sum(SPLIT[:rank])
    return slice(start, start + SPLIT[rank])


def _worker(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    # a file rendezvous, not a TCP port: a free port picked here could be taken (e.g. by a Ray
    # process of an earlier test) before rank 0 binds it, and the ranks then abort
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out_dir, 'rendezvous')}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        z, labels, valid = _global_batch()
        part = _shard(rank)
        local = {m: v[part].clone().requires_grad_(True) for m, v in z.items()}
        local_valid = {m: v[part] for m, v in valid.items()}
        # as the training loop runs a step: the batch sizes exchanged once for the 2 gathers
        with count_step_events() as step, step_rows(len(labels[part])):
            out = mercl_loss(local, labels[part], local_valid, CFG, gather=True)
        # each gather exchanging sizes itself (mercl_loss outside the loop, and the loop before)
        with count_step_events() as unscoped:
            mercl_loss(local, labels[part], local_valid, CFG, gather=True)
        out.total.backward()
        result = {
            "total": out.total.detach(),
            "terms": [out.amcl.detach(), out.emcl.detach(), out.smcl.detach()],
            "counts": [out.amcl_anchors, out.emcl_anchors, out.smcl_pairs],
            "grad": {m: v.grad for m, v in local.items()},
            "step_events": [dict(step.collectives), dict(step.host_syncs)],
            "unscoped_events": [dict(unscoped.collectives), dict(unscoped.host_syncs)],
        }
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gathered_loss_and_gradients_equal_single_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)

    z, labels, valid = _global_batch()
    whole = {m: v.clone().requires_grad_(True) for m, v in z.items()}
    ref = mercl_loss(whole, labels, valid, CFG)
    ref.total.backward()

    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["total"], ref.total.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got["terms"], [ref.amcl.detach(), ref.emcl.detach(), ref.smcl.detach()])
        assert got["counts"] == [ref.amcl_anchors, ref.emcl_anchors, ref.smcl_pairs]
        # all_gather's backward sums every rank's (identical) loss gradient onto the local slice;
        # DDP's averaging over WORLD ranks then gives exactly the single-process gradient.
        for m in MODS:
            torch.testing.assert_close(got["grad"][m] / WORLD, whole[m].grad[_shard(rank)])
        # one size exchange (all_gather_single + one tolist), the 3 embeddings side by side (the
        # functional all_gather_single), the labels and 3 masks as one table (all_gather_single):
        # 3 collectives, 1 host sync
        collectives, syncs = got["step_events"]
        assert collectives == {"all_gather_single": 1 + 1, "functional all_gather_single": 1}, collectives
        assert syncs == {"tolist": 1}, syncs  # the sizes; the loss itself indexes nothing out
        # without step_rows each of the 2 gathers exchanges the sizes itself
        collectives, syncs = got["unscoped_events"]
        assert collectives == {"all_gather_single": 2 + 1, "functional all_gather_single": 1}, collectives
        assert syncs == {"tolist": 2}, syncs


def test_gather_is_identity_without_a_process_group():
    z, labels, valid = _global_batch()
    assert not dist.is_initialized()
    plain = mercl_loss(z, labels, valid, CFG)
    gathered = mercl_loss(z, labels, valid, CFG, gather=True)
    assert torch.equal(plain.total, gathered.total)
