"""Multi-node Ray on loopback: a DDP trial spread over two nodes, and the autoscaler.

* ``test_ddp_trial_spreads_over_two_nodes``: a real two-node cluster
  (``ray.cluster_utils.Cluster``: a head and a second raylet with its own resources).
  A Tune search runs one trial; the trial is a Ray Train ``TorchTrainer`` with 2 DDP
  workers placed ``STRICT_SPREAD`` (the Ray 2.60 Train V2 pattern: a Tune function
  trainable builds the trainer with ``TuneReportCallback``). Each rank reports the node
  it ran on; the ranks train on different data and must end with the weights a single
  process gets from the mean gradient (gloo all-reduce across the two nodes).
* ``test_search_trial_ranks_on_two_nodes`` (slow): the same on the project's own search
  (tuning/search.py, its trial driver tuning.trial.run_trial, mercl's training loop on
  Ray Data shards of a tiny synthetic study); Ray Train's state records each rank's node.
* ``test_autoscaler_adds_and_removes_gpu_nodes`` (``@pytest.mark.ray``): Ray's fake
  autoscaler (:class:`ray_autoscaling.LocalAutoscalingCluster`) with a CPU-only head
  and worker node types carrying a ``fake_gpu`` resource, like cluster/aws.yaml. The
  trials' workers ask for ``fake_gpu``, which the head lacks: the autoscaler adds
  nodes, the trials finish on them, and the nodes go away after the idle timeout. The
  two-node cluster of the first test stays up meanwhile, as a witness that starting
  and stopping the autoscaling cluster kills nobody else's Ray processes.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import ray.cloudpickle
import ray.tune
import ray.util
import torch
from ray_autoscaling import (
    LocalAutoscalingCluster,
    alive_worker_nodes,
    private_address_file,
    ray_processes,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tuning/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

# Ray workers cannot import this test module (tests/ is not on their path): ship the
# trial and training-loop functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_FEATURES = 4
N_ROWS = 16


def rank_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s data: x (16, 4) and y = sum of x (16, 1); different per rank."""
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(N_ROWS, N_FEATURES, generator=g)
    return x, x.sum(dim=1, keepdim=True)


def initial_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(N_FEATURES, 1)


def ddp_train_loop(config: dict) -> None:
    """One Ray Train worker: ``config['steps']`` DDP SGD steps on its own batch.

    Reports (rank 0's dict reaches Tune) the node id of every rank, gathered over the
    gloo process group, the final weights of every rank and the mean loss.
    """
    import ray.train
    import ray.train.torch
    import torch.distributed as dist
    import torch.nn.functional as F

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    model = ray.train.torch.prepare_model(initial_model())  # DistributedDataParallel, gloo on CPU
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    x, y = rank_batch(rank)
    for step in range(config["steps"]):
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()  # DDP all-reduces (averages) the gradients here
        optimizer.step()
        mine = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "weights": torch.cat([p.detach().flatten() for p in model.parameters()]).tolist(),
            "loss": float(loss),
        }
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
        ray.train.report(
            {
                "step": step,
                "loss": sum(r["loss"] for r in everyone) / world,
                "node_ids": [r["node_id"] for r in everyone],
                "rank_weights": [r["weights"] for r in everyone],
            }
        )


def ddp_trial(config: dict) -> None:
    """Tune function trainable: one trial = one DDP ``TorchTrainer`` run (Train V2)."""
    import ray.tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        ddp_train_loop,
        train_loop_config={"lr": config["lr"], "steps": config["steps"]},
        scaling_config=ScalingConfig(
            num_workers=config["workers"],
            resources_per_worker=config["worker_resources"],
            placement_strategy=config["placement"],
        ),
        run_config=RunConfig(
            name=f"train-{ray.tune.get_context().get_trial_id()}",
            storage_path=config["storage"],
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def run_search(storage: str, name: str, num_samples: int, **trial_config) -> ray.tune.ResultGrid:
    """A small Tune search of :func:`ddp_trial` trials (trainable 0.01 CPU, see DESIGN.md)."""
    param_space = {"lr": ray.tune.grid_search([0.1, 0.05][:num_samples]), "steps": 2, "storage": storage}
    param_space.update(trial_config)
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(ddp_trial, {"CPU": 0.01}),
        param_space=param_space,
        tune_config=ray.tune.TuneConfig(max_concurrent_trials=num_samples),
        run_config=ray.tune.RunConfig(name=name, storage_path=storage, verbose=0),
    )
    return tuner.fit()


def expected_weights(lr: float, steps: int, world: int) -> torch.Tensor:
    """Weights of a single process doing the same SGD on the mean of the ranks' losses."""
    model = initial_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    batches = [rank_batch(rank) for rank in range(world)]
    for _ in range(steps):
        loss = sum(torch.nn.functional.mse_loss(model(x), y) for x, y in batches) / world
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a second node (2 logical CPUs each, resources ``head_node`` /
    ``second_node``) on loopback, in a private temp dir, invisible to anyone's plain
    ``ray.init()``. Ray Train records every worker's node (state tracking) on it."""
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="ray-mn-", dir="/tmp")
    # The nodes' processes inherit these; Ray Train then keeps each worker's node id and
    # pid in its state actor (the reconciliation loop needs the dashboard: off).
    env = {"RAY_TRAIN_ENABLE_STATE_TRACKING": "1", "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with private_address_file():
            cluster = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": 2,
                    "include_dashboard": False,
                    "resources": {"head_node": 1},
                    "temp_dir": temp_dir,
                },
            )
            cluster.add_node(num_cpus=2, resources={"second_node": 1})
            cluster.wait_for_nodes()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield cluster
    ray.shutdown()
    with private_address_file():
        cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.ray
def test_ddp_trial_spreads_over_two_nodes(two_nodes, tmp_path):
    ray.init(address=two_nodes.address)
    try:
        node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(node_ids) == 2
        results = run_search(
            str(tmp_path),
            "spread",
            num_samples=1,
            workers=2,
            worker_resources={"CPU": 0.45},
            placement="STRICT_SPREAD",
        )
    finally:
        ray.shutdown()
    assert not results.errors, results.errors
    metrics = results[0].metrics
    assert metrics["step"] == 1
    # one DDP rank on each node
    assert sorted(metrics["node_ids"]) == sorted(node_ids)
    # different data per rank, same weights after the all-reduced steps, equal to the
    # single-process result on the mean loss
    want = expected_weights(lr=0.1, steps=2, world=2)
    for weights in metrics["rank_weights"]:
        torch.testing.assert_close(torch.tensor(weights), want, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """A prepared synthetic study (4 subjects x 4 clips of 12 s, 32 px video): ~15 s."""
    from mercl.data.prepare import load_prepare_config, prepare
    from mercl.data.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("study")
    synthesize(root / "raw", SynthConfig(subjects=4, stimuli=4, duration=12.0, video_size=32, fps=5))
    config = load_prepare_config(None, {"video.size": 32, "video.fps": 1})
    return prepare(
        root / "raw", "manifest", root / "shards", config=config, workers=1, progress=False
    ).dataset_dir


@pytest.mark.ray
@pytest.mark.slow  # a real search: Ray Data over the shards + mercl's two-stage training, 2-3 min on 2 cores
def test_search_trial_ranks_on_two_nodes(two_nodes, tiny_dataset, tmp_path):
    """tuning/search.py's own trial driver (tuning.trial.run_trial) on the two nodes."""
    from ray.train.v2._internal.state.state_actor import get_state_actor

    from tuning.results import STATUS_COMPLETED
    from tuning.search import plan_search, run_search

    plan = plan_search(
        str(ROOT / "tuning/configs/test.yaml"),
        {
            "data.dataset": str(tiny_dataset),
            "storage": str(tmp_path / "results"),
            "num_samples": 1,
            "resources.placement_strategy": "STRICT_SPREAD",
            "pid_dir": str(tmp_path / "pids"),
            "train_overrides.pretrain.epochs": 1,
            "train_overrides.finetune.epochs": 1,
        },
    )
    messages: list[str] = []
    try:
        status = run_search(plan, address=two_nodes.address, say=messages.append)
        state = get_state_actor()
        runs = ray.get(state.get_train_runs.remote())
        attempts = ray.get(state.get_train_run_attempts.remote())
    finally:
        ray.shutdown()
    assert status == 0, messages
    # the trial ran its planned epochs (both stages) in one attempt, reporting to Tune
    (trial,) = pd.read_csv(plan.exp_dir / "trials.csv").to_dict("records")
    assert trial["status"] == STATUS_COMPLETED and trial["restarts"] == 0
    assert trial["epochs_run"] == trial["epochs_planned"] == 2
    assert 0 <= trial["best_val_metric"] <= 1
    # tuning.worker named its pid files after the Tune trial, tuning.trial the Ray Train run
    # after the trial's id
    pid_files = sorted((tmp_path / "pids").glob("*-rank*.pid"))
    (trial_name,) = {f.name.rsplit("-rank", 1)[0] for f in pid_files}
    (run_id,) = [run_id for run_id, run in runs.items() if trial_name.endswith(run.name)]
    (attempt,) = attempts[run_id].values()
    workers = sorted(attempt.workers, key=lambda w: w.world_rank)
    # each rank's ray.get_runtime_context().get_node_id(), as Ray Train recorded it
    nodes = {two_nodes.head_node.node_id, *(n.node_id for n in two_nodes.worker_nodes)}
    assert [w.world_rank for w in workers] == [0, 1]
    assert {w.node_id for w in workers} == nodes
    # the same processes ran mercl's training loop (tuning/worker.py wrote these files)
    assert {int(f.read_text()) for f in pid_files} == {w.pid for w in workers}


# Node types mirror cluster/aws.yaml: a one-GPU and a four-GPU type, from zero nodes.
FAKE_GPU_NODE_TYPES = {
    "gpu_1x": {
        "resources": {"CPU": 1, "fake_gpu": 1, "object_store_memory": 150 * 1024**2},
        "node_config": {},
        "min_workers": 0,
        "max_workers": 2,
    },
    "gpu_4x": {
        "resources": {"CPU": 2, "fake_gpu": 4, "object_store_memory": 150 * 1024**2},
        "node_config": {},
        "min_workers": 0,
        "max_workers": 1,
    },
}


@pytest.mark.ray
@pytest.mark.slow  # ~1.5 min: a fake autoscaler adds a node and removes it after 6 s idle
def test_autoscaler_adds_and_removes_gpu_nodes(two_nodes, tmp_path):
    # another cluster on this machine (the two-node one): its GCS and raylets must survive
    witnesses = {
        node.all_processes["raylet"][0].process.pid for node in [two_nodes.head_node, *two_nodes.worker_nodes]
    }
    witnesses.add(two_nodes.head_node.all_processes["gcs_server"][0].process.pid)
    assert witnesses <= set(ray_processes())

    cluster = LocalAutoscalingCluster(
        head_resources={"CPU": 1, "object_store_memory": 150 * 1024**2},
        worker_node_types=FAKE_GPU_NODE_TYPES,
        idle_timeout_minutes=0.1,
    )
    try:
        # as in cluster/*.yaml: a trial waits for its node instead of retrying after 60 s
        ray.init(address=cluster.start(override_env={"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300"}))
        head_id = ray.get_runtime_context().get_node_id()
        assert alive_worker_nodes() == []

        seen_nodes: dict[str, tuple[float, float]] = {}  # node id -> (first seen, its fake_gpu)
        first_demand: list[float] = []  # when the first trial's placement group was created
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                if not first_demand and any(
                    "fake_gpu" in bundle
                    for group in ray.util.placement_group_table().values()
                    for bundle in group["bundles"].values()
                ):
                    first_demand.append(time.monotonic())
                for node in alive_worker_nodes():
                    seen_nodes.setdefault(
                        node["NodeID"], (time.monotonic(), node["Resources"].get("fake_gpu", 0))
                    )
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        results = run_search(
            str(tmp_path),
            "autoscale",
            num_samples=2,
            workers=2,
            worker_resources={"CPU": 0.25, "fake_gpu": 1},
            placement="PACK",
        )
        stop.set()
        watcher.join()

        assert not results.errors, results.errors
        assert len(results) == 2
        for result in results:
            assert result.metrics["step"] == 1
            assert head_id not in result.metrics["node_ids"]  # the head has no fake_gpu
            assert set(result.metrics["node_ids"]) <= set(seen_nodes)
        assert seen_nodes and first_demand, "the autoscaler added no node"
        first_node_s = min(t for t, _ in seen_nodes.values()) - first_demand[0]
        print(
            f"\nautoscaler: first worker node alive {first_node_s:.1f} s after the first trial asked for "
            f"fake_gpu; nodes added (fake_gpu each): {sorted(g for _, g in seen_nodes.values())}"
        )
        removed_s = wait_until(lambda: alive_worker_nodes() == [], timeout_s=60)
        print(f"autoscaler: idle nodes removed {removed_s:.1f} s after the search ended")
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert cluster.processes() == []
    assert witnesses <= set(ray_processes()), "stopping the autoscaling cluster killed another cluster"
