"""Heavy work on worker nodes, never the head, on a cluster like cluster/aws.yaml (loopback).

A three-node cluster, started once for this module: a head that offers nothing to trials,
tasks or units (0 CPUs, 0 GPUs, as ``resources: {CPU: 0}`` there) and two worker nodes that
advertise CPUs and one GPU each (Ray's ``GPU`` resource on a machine without one: torch there
finds no CUDA and trains on the CPU; ``fake_gpu`` beside it as the cluster tests elsewhere use).

The search (``tuning/search.py``, in this process, its driver on the head) runs one trial
under the ``stimulus`` protocol with its two DDP ranks placed ``STRICT_SPREAD``, each rank and
heavy task asking for one ``fake_gpu`` (``resources.custom_per_worker``), then the outer
cross-validation of the best configuration and the final model. Every heavy step (the
backbone feature cache, each outer fold, the final model) records the node it ran on in
``placement.json``; none may be the head. Ray Train's state actor records each rank's node
and process: one rank on each worker node, and those processes ran mercl's training loop
(the PID files ``tuning/worker.py`` writes).

``mercl experiment --ray``: each unit records where it ran (Ray node id, the GPU ids Ray gave
it): networks on a worker node's GPU, the majority rows on no GPU, the shared caches (frozen
backbones over every clip) on a GPU too.

Slow (~2-3 minutes on 2 cores: a trial, 2 outer folds in parallel, the final model, and an
experiment's two MERCL folds).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import ray
from builders import build_demo_dataset, make_tiny_dataset
from ray_autoscaling import private_address_file

from mercl.cli import main as mercl_main

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head_and_gpu_nodes():
    """A 0-CPU head and two worker nodes (2 CPUs, a GPU and ``fake_gpu`` each), on loopback, in a private temp dir."""
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="ray-place-", dir="/tmp")
    # The nodes' processes inherit these; Ray Train then keeps each worker's node id and pid in
    # its state actor (the reconciliation loop needs the dashboard: off).
    env = {"RAY_TRAIN_ENABLE_STATE_TRACKING": "1", "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with private_address_file():
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0,
                                                                    "include_dashboard": False, "temp_dir": temp_dir})
            workers = [cluster.add_node(num_cpus=2, num_gpus=1, resources={"fake_gpu": 1}) for _ in range(2)]
            cluster.wait_for_nodes()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield cluster, cluster.head_node.node_id, {w.node_id for w in workers}
    ray.shutdown()
    with private_address_file():
        cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A fresh study: its backbone feature cache does not exist yet, so the search computes it."""
    return make_tiny_dataset(tmp_path_factory.mktemp("placement-data"))


def test_ranks_feature_cache_outer_folds_and_final_model_run_on_worker_nodes(head_and_gpu_nodes, dataset,
                                                                             tmp_path):
    from ray.train.v2._internal.state.state_actor import get_state_actor

    from tuning.results import STATUS_COMPLETED
    from tuning.search import plan_search, run_search

    cluster, head, workers = head_and_gpu_nodes
    plan = plan_search(str(ROOT / "tuning" / "configs" / "test.yaml"), {
        "data.dataset": str(dataset), "storage": str(tmp_path / "results"), "name": "placement",
        "num_samples": 1, "data.protocol": "stimulus", "data.folds": 2, "crossval.enabled": True,
        "final_model": True, "train_overrides.pretrain.epochs": 1, "train_overrides.finetune.epochs": 2,
        "scheduler.asha": False, "resources.placement_strategy": "STRICT_SPREAD", "pid_dir": str(tmp_path / "pids"),
        "resources.custom_per_worker": {"fake_gpu": 1},  # ranks and heavy tasks ask for the GPU stand-in
    })
    messages: list[str] = []
    try:
        status = run_search(plan, address=cluster.address, say=messages.append)
        state = get_state_actor()
        runs = ray.get(state.get_train_runs.remote())
        attempts = ray.get(state.get_train_run_attempts.remote())
    finally:
        ray.shutdown()
    assert status == 0, messages
    exp = plan.exp_dir
    # the trial ran its planned epochs (both stages) in one attempt, reporting to Tune
    (trial,) = pd.read_csv(exp / "trials.csv").to_dict("records")
    assert trial["status"] == STATUS_COMPLETED and trial["restarts"] == 0
    assert trial["epochs_run"] == trial["epochs_planned"] == 3
    # its two ranks, one on each worker node, as Ray Train recorded them; tuning/worker.py named
    # its PID files after the Tune trial, tuning/trial_driver.py the Ray Train run after the trial's id
    pid_files = sorted((tmp_path / "pids").glob("*-rank*.pid"))
    (trial_name,) = {f.name.rsplit("-rank", 1)[0] for f in pid_files}
    (run_id,) = [run_id for run_id, run in runs.items() if trial_name.endswith(run.name)]
    (attempt,) = attempts[run_id].values()
    ranks = sorted(attempt.workers, key=lambda w: w.world_rank)
    assert [w.world_rank for w in ranks] == [0, 1]
    assert {w.node_id for w in ranks} == workers
    assert {int(f.read_text()) for f in pid_files} == {w.pid for w in ranks}  # they ran mercl's loop
    # the heavy steps around the trials
    placement = json.loads((exp / "placement.json").read_text())
    assert placement["driver"] == head
    assert placement["feature_cache"] in workers  # computed in a Ray task, not in the driver
    assert set(placement["outer_folds"]) == {"0", "1"} and set(placement["outer_folds"].values()) <= workers
    assert placement["final_model"] in workers
    # what those tasks made reached the results folder
    results = pd.read_csv(exp / "crossval" / "results.csv")
    assert sorted(results["method"].unique()) == ["clip-majority", "majority", "mercl"]
    assert set(results["fold"]) == {0, 1} and (results["protocol"] == "stimulus").all()
    assert (exp / "model.pt").is_file() and (exp / "final" / "metrics.json").is_file()
    summary = (exp / "summary.md").read_text()
    assert f"final model: `{exp / 'model.pt'}`" in summary
    assert any(m.startswith("HEADLINE") and "held-out test fold 0 of 2" in m for m in messages), messages
    assert any(m.startswith("backbone features:") and "Ray task" in m for m in messages), messages


def test_experiment_units_run_on_gpu_nodes_networks_on_their_own_gpu(head_and_gpu_nodes, demo_dataset, tmp_path):
    cluster, head, workers = head_and_gpu_nodes
    out = tmp_path / "run"
    assert mercl_main(["experiment", "paper", str(demo_dataset), "--protocol", "trial", "-o", str(out),
                       "--config", "tiny", "--folds", "2", "--methods", "mercl", "--schemes", "quadrant4",
                       "--set", "pretrain.epochs=1", "--set", "finetune.epochs=1",
                       "--ray", cluster.address, "--no-progress"]) == 0
    records = [json.loads(p.read_text()) for p in sorted((out / "cache").glob("*.json"))]
    methods = {r["method"] for r in records}
    assert {"mercl", "majority"} <= methods, methods
    for record in records:
        where = record["placement"]
        assert where["node_id"] != head and where["node_id"] in workers, record["method"]
        # a network's unit holds its node's GPU in Ray's accounting; the majority rows hold none
        assert where["gpu_ids"] == (["0"] if record["method"] == "mercl" else []), record["method"]
    assert {r["fold"] for r in records if r["method"] == "mercl"} == {0, 1}  # both folds ran
    # the shared caches (the frozen backbones over every clip) were built on a GPU node too
    caches = json.loads((out / "experiment.json").read_text())["shared_caches_placement"]
    assert caches["node_id"] in workers and caches["gpu_ids"] == ["0"]

