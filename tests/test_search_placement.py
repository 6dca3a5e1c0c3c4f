"""The search's heavy steps run on the trial workers' nodes, never on the head (loopback cluster).

A two-node cluster like ``cluster/aws.yaml``: a head that offers nothing to trials or tasks
(0 CPUs, as ``resources: {CPU: 0}`` there) and a worker node with CPUs and a custom
``fake_gpu`` resource standing in for its GPUs. The search (``tuning/search.py``, in this
process, its driver on the head) runs one trial under the ``stimulus`` protocol, then the
outer cross-validation of the best configuration and the final model. Every heavy step
(the backbone feature cache, each outer fold, the final model) records the node it ran on in
``placement.json``; none may be the head.

Slow (~2-3 minutes on 2 cores: a trial, 2 outer folds in parallel and the final model).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import ray
from ray_autoscaling import private_address_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tuning/ is a folder, not an installed package

from test_search import make_tiny_dataset  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def head_and_gpu_node():
    """A 0-CPU head and a worker node (2 CPUs, ``fake_gpu``), on loopback, in a private temp dir."""
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="ray-place-", dir="/tmp")
    with private_address_file():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                                "temp_dir": temp_dir})
        worker = cluster.add_node(num_cpus=2, resources={"fake_gpu": 1})
        cluster.wait_for_nodes()
    yield cluster, cluster.head_node.node_id, worker.node_id
    ray.shutdown()
    with private_address_file():
        cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A fresh study: its backbone feature cache does not exist yet, so the search computes it."""
    return make_tiny_dataset(tmp_path_factory.mktemp("placement-data"))


def test_feature_cache_outer_folds_and_final_model_run_on_the_worker_node(head_and_gpu_node, dataset, tmp_path):
    from tuning.search import plan_search, run_search

    cluster, head, worker = head_and_gpu_node
    plan = plan_search(str(ROOT / "tuning" / "configs" / "test.yaml"), {
        "data.dataset": str(dataset), "storage": str(tmp_path / "results"), "name": "placement",
        "num_samples": 1, "data.protocol": "stimulus", "data.folds": 2, "crossval.enabled": True,
        "final_model": True, "train_overrides.pretrain.epochs": 1, "train_overrides.finetune.epochs": 2,
        "scheduler.asha": False,
    })
    messages: list[str] = []
    try:
        status = run_search(plan, address=cluster.address, say=messages.append)
    finally:
        ray.shutdown()
    assert status == 0, messages
    exp = plan.exp_dir
    placement = json.loads((exp / "placement.json").read_text())
    assert placement["driver"] == head
    assert placement["feature_cache"] == worker  # computed in a Ray task, not in the driver
    assert placement["outer_folds"] == {"0": worker, "1": worker}
    assert placement["final_model"] == worker
    # what those tasks made reached the results folder
    results = pd.read_csv(exp / "crossval" / "results.csv")
    assert sorted(results["method"].unique()) == ["clip-majority", "majority", "mercl"]
    assert set(results["fold"]) == {0, 1} and (results["protocol"] == "stimulus").all()
    assert (exp / "model.pt").is_file() and (exp / "final" / "metrics.json").is_file()
    summary = (exp / "summary.md").read_text()
    assert f"final model: `{exp / 'model.pt'}`" in summary
    assert any(m.startswith("HEADLINE") and "held-out test fold 0 of 2" in m for m in messages), messages
    assert any(m.startswith("backbone features:") and "Ray task" in m for m in messages), messages
