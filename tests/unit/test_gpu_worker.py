"""A GPU trial's worker on a node where torch finds no CUDA device stops at once, in one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from mercl.errors import MerclError
from tuning.worker import cuda_unavailable_reason, require_cuda

ROOT = Path(__file__).resolve().parents[2]


def test_a_cpu_trial_never_checks_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("a CPU trial must not look for CUDA"))
    require_cuda(False)


def test_an_old_driver_stops_the_worker_naming_the_node_and_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")

    def too_old():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 12020).\n"
                           "Please update your GPU driver ...")

    monkeypatch.setattr(torch.cuda, "init", too_old)
    with pytest.raises(MerclError) as caught:
        require_cuda(True)
    message = str(caught.value)
    assert "\n" not in message
    assert f"node {socket.gethostname()}" in message
    assert "too old (found version 12020)" in message and "Please update" not in message
    assert "CUDA 13.0" in message and "driver >= 580" in message and "cluster/README.md" in message


def test_a_cpu_only_torch_build_is_named_as_the_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert cuda_unavailable_reason() == f"torch {torch.__version__} is a CPU-only build"


def test_a_visible_gpu_passes(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cuda_unavailable_reason() is None
    require_cuda(True)
