"""Resuming on CUDA devices: each rank's own device RNG state, restored only where it fits.

No GPU is needed: torch.cuda's generator functions are replaced by fakes that keep one
16-byte Philox state per simulated device, and ``gather_objects`` (the all-gather that brings
every rank's state to rank 0, which writes the checkpoint) by one that returns the states of
simulated ranks.
"""

from __future__ import annotations

import io
import logging
import random

import numpy as np
import pytest
import torch

from mercl.training import checkpoint
from mercl.training.checkpoint import reseed_value, rng_state, set_rng_state

CUDA0 = torch.device("cuda", 0)


class FakeCuda:
    """The device generators of one simulated process: ``states[index]`` (uint8 (16,))."""

    def __init__(self, monkeypatch, n_devices: int, fill: int):
        self.states = {i: torch.full((16,), fill + i, dtype=torch.uint8) for i in range(n_devices)}
        self.restored: list[tuple[int, torch.Tensor]] = []
        self.seeded: list[int] = []
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get_rng_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(torch.cuda, "manual_seed", self.seeded.append)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.no_all)

    def get_rng_state(self, device=0):
        index = device if isinstance(device, int) else torch.device(device).index or 0
        return self.states[index].clone()

    def set_rng_state(self, state, device=0):
        if device not in self.states:  # what the real call does for a device that is not there
            raise IndexError(f"no cuda:{device}")
        self.restored.append((device, state.clone()))

    @staticmethod
    def no_all(states):
        raise AssertionError("set_rng_state_all restores rank 0's states of every device on every rank")


def saved_by_world(monkeypatch, world: int) -> dict:
    """The rng state rank 0 writes in a ``world``-rank run: rank r's generator is filled with 10*r."""
    ranks = [{"state": torch.full((16,), 10 * r, dtype=torch.uint8), "device_index": 0} for r in range(world)]
    monkeypatch.setattr(checkpoint, "gather_objects", lambda mine: [mine, *ranks[1:]])
    FakeCuda(monkeypatch, n_devices=1, fill=0)  # rank 0 on its own cuda:0
    return rng_state(CUDA0)


def test_checkpoint_holds_every_ranks_own_device_state_and_loads_weights_only(monkeypatch):
    state = saved_by_world(monkeypatch, world=3)
    assert [int(s["state"][0]) for s in state["cuda_per_rank"]] == [0, 10, 20]
    assert "cuda" not in state  # no get_rng_state_all() of rank 0's devices
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # plain values and tensors only
    assert torch.equal(loaded["cuda_per_rank"][2]["state"], state["cuda_per_rank"][2]["state"])


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_each_rank_gets_back_its_own_state_when_the_world_is_the_same(monkeypatch, caplog, rank):
    state = saved_by_world(monkeypatch, world=3)
    fake = FakeCuda(monkeypatch, n_devices=1, fill=99)  # the restarted rank, on a fresh node's cuda:0
    with caplog.at_level(logging.WARNING, logger="mercl.training.checkpoint"):
        assert set_rng_state(state, CUDA0, rank=rank, world_size=3, seed=7, epoch=4) is True
    assert [(i, int(s[0])) for i, s in fake.restored] == [(0, 10 * rank)]
    assert fake.seeded == [] and "bit-identical" not in caplog.text


@pytest.mark.parametrize("world_before, world_now", [(4, 1), (2, 3)])
def test_another_world_size_reseeds_from_seed_rank_epoch_and_says_so(monkeypatch, caplog, world_before, world_now):
    """A trial restarted on a node with fewer GPUs: no IndexError, a deterministic new seed, a log line."""
    state = saved_by_world(monkeypatch, world=world_before)
    fake = FakeCuda(monkeypatch, n_devices=1, fill=99)
    with caplog.at_level(logging.WARNING, logger="mercl.training.checkpoint"):
        assert set_rng_state(state, CUDA0, rank=world_now - 1, world_size=world_now, seed=7, epoch=4) is False
    assert fake.restored == [] and fake.seeded == [reseed_value(7, world_now - 1, 4)]
    assert "no longer bit-identical" in caplog.text and f"{world_before} rank(s)" in caplog.text


def test_a_checkpoint_of_rank_0s_get_rng_state_all_reseeds_instead_of_index_error(monkeypatch, caplog):
    """The old format: torch.cuda.get_rng_state_all() of a 4-GPU node, resumed on a 1-GPU node."""
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
           "cuda": [torch.zeros(16, dtype=torch.uint8) for _ in range(4)]}
    fake = FakeCuda(monkeypatch, n_devices=1, fill=0)
    with caplog.at_level(logging.WARNING, logger="mercl.training.checkpoint"):
        assert set_rng_state(old, CUDA0, rank=0, world_size=1, seed=3, epoch=2) is False
    assert fake.seeded == [reseed_value(3, 0, 2)] and "no longer bit-identical" in caplog.text


def test_a_device_generator_of_another_size_is_not_restored(monkeypatch, caplog):
    state = saved_by_world(monkeypatch, world=1)
    state["cuda_per_rank"][0]["state"] = torch.zeros(8, dtype=torch.uint8)  # another generator kind
    fake = FakeCuda(monkeypatch, n_devices=1, fill=0)
    assert set_rng_state(state, CUDA0, rank=0, world_size=1, seed=1, epoch=1) is False
    assert fake.restored == [] and fake.seeded == [reseed_value(1, 0, 1)]


def test_reseed_values_differ_by_seed_rank_and_epoch_and_repeat():
    values = {reseed_value(s, r, e) for s in range(3) for r in range(4) for e in range(5)}
    assert len(values) == 60 and all(0 <= v < 2**63 for v in values)
    assert reseed_value(5, 1, 9) == reseed_value(5, 1, 9)


def test_cpu_generators_come_back_exactly_after_a_weights_only_round_trip(caplog):
    state = rng_state(torch.device("cpu"))
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    with caplog.at_level(logging.WARNING):
        assert set_rng_state(torch.load(buffer, weights_only=True), torch.device("cpu")) is True
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])
    assert "bit-identical" not in caplog.text
