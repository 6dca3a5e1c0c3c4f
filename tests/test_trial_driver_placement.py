"""Trial drivers on the head's ``trial_driver`` resource, never on a GPU node (Ray's fake autoscaler).

The cluster mirrors cluster/aws.yaml's problem case: a head with ``CPU: 0`` and
``trial_driver`` (as the cluster YAMLs now give it) and one node type whose ranks take all
of it (``{CPU: 1, fake_gpu: 1}``, the ``gpu.1x`` node with ranks asking for its 4 CPUs),
capped at one node. A trial driver asking for 0.01 CPU (the old ``trainable_cpus``) could
only run on such a node, and its rank would then never fit there: with the node count
capped the trial waits forever. With ``tuning.trial.trial_driver_resources`` the drivers
run on the head, both trials' ranks get the one GPU node in turn, and the test records
where each driver and rank ran. One cluster start for this module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import ray
import ray.cloudpickle
import ray.tune
from ray_autoscaling import LocalAutoscalingCluster, alive_worker_nodes

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tuning/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from tuning.trial import TRIAL_DRIVER_RESOURCE, trial_driver_resources  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/

MB = 1024**2
RANK = {"CPU": 1, "fake_gpu": 1}  # a rank takes the whole GPU node


def rank_loop(config: dict) -> None:
    import ray.train

    ray.train.report({"rank_node": ray.get_runtime_context().get_node_id(), "driver_node": config["driver_node"]})


def driver_trial(config: dict) -> None:
    """The Tune trial driver: records its own node, runs a 1-rank TorchTrainer (Train V2 + Tune)."""
    import ray.tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    TorchTrainer(
        rank_loop,
        train_loop_config={"driver_node": ray.get_runtime_context().get_node_id()},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker=RANK),
        run_config=RunConfig(name=f"run-{ray.tune.get_context().get_trial_id()}", storage_path=config["storage"],
                             callbacks=[TuneReportCallback()]),
    ).fit()


@pytest.fixture(scope="module")
def capped_gpu_cluster():
    cluster = LocalAutoscalingCluster(
        head_resources={"CPU": 0, TRIAL_DRIVER_RESOURCE: 10, "object_store_memory": 150 * MB},
        worker_node_types={"gpu_1x": {"resources": {**RANK, "object_store_memory": 150 * MB}, "node_config": {},
                                      "min_workers": 0, "max_workers": 1}},
        idle_timeout_minutes=0.1,
    )
    try:
        # as in cluster/*.yaml: the second trial waits for the node instead of retrying after 60 s
        yield cluster.start(override_env={"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300"})
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert cluster.processes() == []


@pytest.mark.ray
@pytest.mark.slow  # the fake autoscaler adds the GPU node (~10 s); two 1-rank trials one after the other
def test_trial_drivers_run_on_the_head_so_capped_gpu_nodes_take_every_rank(capped_gpu_cluster, tmp_path):
    ray.init(address=capped_gpu_cluster)
    try:
        head_id = ray.get_runtime_context().get_node_id()
        assert alive_worker_nodes() == []
        resources = trial_driver_resources(0.01, ray.cluster_resources())
        assert resources == {"cpu": 0, TRIAL_DRIVER_RESOURCE: 1}
        tuner = ray.tune.Tuner(
            ray.tune.with_resources(driver_trial, resources),
            param_space={"storage": str(tmp_path), "trial": ray.tune.grid_search([0, 1])},
            tune_config=ray.tune.TuneConfig(max_concurrent_trials=2),
            run_config=ray.tune.RunConfig(name="drivers", storage_path=str(tmp_path), verbose=0),
        )
        results = tuner.fit()
        gpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("fake_gpu")}
    finally:
        ray.shutdown()
    assert not results.errors, results.errors
    assert len(results) == 2
    for result in results:
        assert result.metrics["driver_node"] == head_id  # the driver holds no CPU of a GPU node
        assert result.metrics["rank_node"] != head_id and result.metrics["rank_node"] in gpu_nodes
