"""``mercl experiment --ray`` on loopback: each unit runs where its resources are, never on the head.

A two-node cluster (``ray.cluster_utils.Cluster``) like cluster/*.yaml: a head that offers
units nothing (0 CPUs, 0 GPUs) and a worker node that advertises one GPU (Ray's ``GPU``
resource on a machine without one: it stands in for a GPU node; torch there finds no CUDA
and trains on the CPU). ``_run_on_ray`` writes where each unit ran into its record
(``placement``: Ray node id, the GPU ids Ray gave it). Started once for this module.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import ray
from ray_autoscaling import private_address_file
from test_training import build_demo_dataset

from mercl.cli import main as mercl_main


@pytest.fixture(scope="module")
def gpu_node_cluster():
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="ray-units-", dir="/tmp")
    with private_address_file():
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "num_gpus": 0, "include_dashboard": False, "temp_dir": temp_dir})
        cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    with private_address_file():
        cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.getbasetemp())


@pytest.mark.ray
@pytest.mark.slow  # two MERCL folds (tiny, 1+1 epochs) and the majority rows as Ray tasks: ~1 min on 2 cores
def test_experiment_units_run_on_the_gpu_node_networks_on_their_own_gpu(gpu_node_cluster, demo_dataset, tmp_path):
    head_id = gpu_node_cluster.head_node.node_id
    (gpu_node,) = gpu_node_cluster.worker_nodes
    out = tmp_path / "run"
    assert mercl_main(["experiment", "paper", str(demo_dataset), "--protocol", "trial", "-o", str(out),
                       "--config", "tiny", "--folds", "2", "--methods", "mercl", "--schemes", "quadrant4",
                       "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1",
                       "--ray", gpu_node_cluster.address, "--no-progress"]) == 0
    records = [json.loads(p.read_text()) for p in sorted((out / "cache").glob("*.json"))]
    methods = {r["method"] for r in records}
    assert {"mercl", "majority"} <= methods, methods
    for record in records:
        where = record["placement"]
        assert where["node_id"] != head_id, record["method"]
        assert where["node_id"] == gpu_node.node_id
        # a network's unit holds the node's GPU in Ray's accounting; the majority rows hold none
        assert where["gpu_ids"] == (["0"] if record["method"] == "mercl" else []), record["method"]
    assert {r["fold"] for r in records if r["method"] == "mercl"} == {0, 1}  # both folds ran
    # the shared caches (the frozen backbones over every clip) were built on the GPU node too
    caches = json.loads((out / "experiment.json").read_text())["shared_caches_placement"]
    assert caches["node_id"] == gpu_node.node_id and caches["gpu_ids"] == ["0"]


def test_units_ask_for_a_gpu_only_for_networks_and_only_on_a_cluster_with_gpus():
    from mercl.experiments.runner import unit_gpus

    assert [unit_gpus(m, None, 4) for m in ("mercl", "ve_bilstm", "ave_lstm")] == [1, 1, 1]
    assert [unit_gpus(m, None, 4) for m in ("ave_rt", "ave_kelm", "majority", "clip-majority")] == [0, 0, 0, 0]
    assert unit_gpus("mercl", None, 0) == 0  # a CPU cluster
    assert unit_gpus("mercl", 0.5, 4) == 0.5 and unit_gpus("ave_rt", 0.5, 4) == 0  # --gpus-per-unit
