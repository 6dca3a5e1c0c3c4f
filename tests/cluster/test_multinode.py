"""The autoscaler on loopback: GPU-hungry DDP trials make it add nodes, idle nodes go away.

``test_autoscaler_adds_gpu_nodes_for_ranks_and_keeps_trial_drivers_on_the_head``: Ray's fake
autoscaler (:class:`ray_autoscaling.LocalAutoscalingCluster`) with a head like cluster/aws.yaml's
(``CPU: 0`` and the ``trial_driver`` resource) and worker node types carrying a ``fake_gpu``
resource whose ranks take a whole ``gpu_1x`` node (as ranks asking for all 4 CPUs of
``gpu.1x`` do). A trial driver asking for 0.01 CPU could only run on such a node, and its
rank would then never fit there; with ``tuning.trial_driver.trial_driver_resources`` the drivers run
on the head, and each reports its node. Each trial is a Ray Train
``TorchTrainer`` with 2 DDP workers (the Ray 2.60 Train V2 pattern: a Tune function trainable
builds the trainer with ``TuneReportCallback``) that ask for ``fake_gpu``, which the head
lacks: the autoscaler adds nodes, the trials finish on them, and the nodes go away after the
idle timeout. The ranks train on different data and must end with the weights a single
process gets from the mean gradient (gloo all-reduce). Another Ray cluster stays up
meanwhile, as a witness that starting and stopping the autoscaling cluster kills nobody
else's Ray processes.

The project's own search with its two ranks on two nodes (``STRICT_SPREAD``, tuning/search.py,
mercl's training loop on Ray Data shards) is tests/test_placement.py.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

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

from tuning.trial_driver import TRIAL_DRIVER_RESOURCE, trial_driver_resources

ROOT = Path(__file__).resolve().parents[2]

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
                "driver_node": config["driver_node"],
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
        train_loop_config={"lr": config["lr"], "steps": config["steps"],
                           "driver_node": ray.get_runtime_context().get_node_id()},
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


def run_search(storage: str, name: str, num_samples: int, driver: dict, **trial_config) -> ray.tune.ResultGrid:
    """A small Tune search of :func:`ddp_trial` trials, each driver asking for ``driver``."""
    param_space = {"lr": ray.tune.grid_search([0.1, 0.05][:num_samples]), "steps": 2, "storage": storage}
    param_space.update(trial_config)
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(ddp_trial, driver),
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
def witness_cluster():
    """Another one-node Ray cluster on loopback, in a private temp dir, invisible to anyone's
    plain ``ray.init()``."""
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="ray-mn-", dir="/tmp")
    with private_address_file():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                                "temp_dir": temp_dir})
        cluster.wait_for_nodes()
    yield cluster
    with private_address_file():
        cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


# Node types mirror cluster/aws.yaml: a one-GPU and a four-GPU type, from zero nodes; a rank
# takes a whole gpu_1x node.
RANK = {"CPU": 1, "fake_gpu": 1}
FAKE_GPU_NODE_TYPES = {
    "gpu_1x": {
        "resources": {**RANK, "object_store_memory": 150 * 1024**2},
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
@pytest.mark.slow  # ~1.5 min: a fake autoscaler adds nodes and removes them after 6 s idle
def test_autoscaler_adds_gpu_nodes_for_ranks_and_keeps_trial_drivers_on_the_head(witness_cluster, tmp_path):
    # another cluster on this machine: its GCS and raylet must survive
    head = witness_cluster.head_node
    witnesses = {head.all_processes["raylet"][0].process.pid, head.all_processes["gcs_server"][0].process.pid}
    assert witnesses <= set(ray_processes())

    cluster = LocalAutoscalingCluster(
        head_resources={"CPU": 0, TRIAL_DRIVER_RESOURCE: 10, "object_store_memory": 150 * 1024**2},
        worker_node_types=FAKE_GPU_NODE_TYPES,
        idle_timeout_minutes=0.1,
    )
    try:
        # as in cluster/*.yaml: a trial waits for its node instead of retrying after 60 s
        ray.init(address=cluster.start(override_env={"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300"}))
        head_id = ray.get_runtime_context().get_node_id()
        assert alive_worker_nodes() == []
        driver = trial_driver_resources(0.01, ray.cluster_resources())
        assert driver == {"cpu": 0, TRIAL_DRIVER_RESOURCE: 1}

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
            driver=driver,
            workers=2,
            worker_resources=RANK,
            placement="PACK",
        )
        stop.set()
        watcher.join()

        assert not results.errors, results.errors
        assert len(results) == 2
        for result in results:
            assert result.metrics["step"] == 1
            assert head_id not in result.metrics["node_ids"]  # the head has no fake_gpu
            assert result.metrics["driver_node"] == head_id  # the driver holds no CPU of a GPU node
            assert set(result.metrics["node_ids"]) <= set(seen_nodes)
            # different data per rank, the same weights after the all-reduced steps, equal to the
            # single-process result on the mean loss
            want = expected_weights(lr=result.config["lr"], steps=2, world=2)
            for weights in result.metrics["rank_weights"]:
                torch.testing.assert_close(torch.tensor(weights), want, rtol=1e-5, atol=1e-6)
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
