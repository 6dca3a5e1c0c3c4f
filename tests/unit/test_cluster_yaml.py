"""Offline checks of cluster/: the cluster-launcher YAMLs and the KubeRay manifests.

The launcher YAMLs go through Ray's own validator, the path ``ray up`` takes before it
touches a cloud: ``ray.autoscaler._private.util.prepare_config`` (merge the provider's
defaults, fill per-type worker counts) then ``validate_config`` (the JSON schema
ray-schema.json plus the head-type and min/max-workers cross checks). The schema
rejects unknown keys and wrong types but does not look inside ``provider`` or
``node_config``, and it accepts a negative per-type ``min_workers``/``max_workers``
(they are plain integers there; the autoscaler would then silently never launch that
type), so :func:`worker_count_problems` adds that check.

The KubeRay manifests go through the code the in-tree autoscaler itself runs on a
RayCluster (``_derive_autoscaling_config_from_ray_cr``, which ends in the same
``validate_config``), plus checks of the fields KubeRay requires.

The cluster search config (tuning/configs/cluster.yaml) must fit these clusters: its
trial's resource requests go through the autoscaler's own node-type choice
(``get_nodes_for``), which shows that one trial packs onto one 4-GPU node.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
LAUNCHER_YAMLS = ["aws.yaml", "gcp.yaml"]
SEARCH_ENTRY = "tuning/search.py"
SEARCH_CONFIG = "tuning/configs/cluster.yaml"


def validate_launcher_yaml(path: Path) -> dict:
    """Ray's validation of a cluster-launcher YAML; returns the prepared config."""
    config = prepare_config(yaml.safe_load(path.read_text()))
    validate_config(config)
    return config


def worker_count_problems(config: dict) -> list[str]:
    """What Ray's schema lets through: per-type worker counts must be 0 <= min <= max."""
    problems = []
    for name, node_type in config["available_node_types"].items():
        low, high = node_type.get("min_workers", 0), node_type.get("max_workers", 0)
        if low < 0 or high < 0:
            problems.append(f"{name}: negative worker count (min_workers {low}, max_workers {high})")
        elif low > high:
            problems.append(f"{name}: min_workers {low} > max_workers {high}")
    return problems


def gpu_node_types(config: dict) -> dict[str, dict]:
    return {
        name: node_type
        for name, node_type in config["available_node_types"].items()
        if node_type["resources"].get("GPU", 0) > 0
    }


def pinned_ray_version() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("ray[")]
    return pin.split("==")[1]


@pytest.fixture(params=LAUNCHER_YAMLS)
def launcher_yaml(request) -> Path:
    return CLUSTER / request.param


def test_launcher_yaml_passes_rays_validator(launcher_yaml):
    start = time.perf_counter()
    config = validate_launcher_yaml(launcher_yaml)
    elapsed = time.perf_counter() - start
    assert worker_count_problems(config) == []
    assert elapsed < 5, f"validation took {elapsed:.2f} s"


def test_head_runs_no_trials(launcher_yaml):
    config = validate_launcher_yaml(launcher_yaml)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0
    start_head = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in start_head and "--num-gpus=0" in start_head


def test_trial_drivers_run_on_the_head_and_only_there(launcher_yaml):
    """The head offers ``trial_driver`` for every concurrent trial's Tune driver; no GPU node does."""
    from tuning.trial_driver import TRIAL_DRIVER_RESOURCE, trial_driver_resources

    config = validate_launcher_yaml(launcher_yaml)
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    assert head[TRIAL_DRIVER_RESOURCE] >= cluster_search_config().resources.max_concurrent_trials
    start_head = " ".join(config["head_start_ray_commands"])
    assert f"--resources='{{\"{TRIAL_DRIVER_RESOURCE}\": {head[TRIAL_DRIVER_RESOURCE]}}}'" in start_head
    for node_type in gpu_node_types(config).values():
        assert TRIAL_DRIVER_RESOURCE not in node_type["resources"]
    assert trial_driver_resources(0.01, head) == {"cpu": 0, TRIAL_DRIVER_RESOURCE: 1}
    assert trial_driver_resources(0.01, {"CPU": 8}) == {"cpu": 0.01}  # a laptop: as before


def test_gpu_workers_autoscale_from_zero(launcher_yaml):
    config = validate_launcher_yaml(launcher_yaml)
    gpus = gpu_node_types(config)
    assert len(gpus) >= 2
    assert {t["resources"]["GPU"] for t in gpus.values()} >= {1, 4}
    for node_type in gpus.values():
        assert node_type["min_workers"] == 0 and node_type["max_workers"] >= 1
        assert node_type["resources"]["CPU"] >= node_type["resources"]["GPU"]
    assert sum(t["max_workers"] for t in gpus.values()) <= config["max_workers"]
    assert 0 < config["idle_timeout_minutes"] <= 30


def test_nodes_install_this_checkout(launcher_yaml):
    config = validate_launcher_yaml(launcher_yaml)
    # the working tree (ray up runs from the repository root) is synced to every node
    (mount,) = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert ".gitignore" in config["rsync_filter"]
    setup = config["head_setup_commands"] + config["worker_setup_commands"]
    assert f"pip install --quiet -e {mount}" in setup
    # one Python and one Ray everywhere: the pins of pyproject.toml
    docker = config["docker"]
    images = {docker["image"], docker["head_image"], docker["worker_image"]}
    for image in images:
        assert re.fullmatch(rf"rayproject/ray:{re.escape(pinned_ray_version())}-py311-(cpu|gpu)", image)
    assert pinned_ray_version() == ray.__version__
    assert docker["worker_image"].endswith("-gpu")


START_TIMEOUT = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


def test_trials_wait_for_new_gpu_nodes(launcher_yaml):
    """A trial's worker group waits long enough for the autoscaler to boot a GPU node
    (Ray Train's default is 60 s, then it tears the group down and retries)."""
    options = validate_launcher_yaml(launcher_yaml)["docker"]["run_options"]
    (timeout,) = [o.split("=", 1)[1] for o in options if o.startswith(f"--env {START_TIMEOUT}=")]
    assert float(timeout) >= 600


def kuberay_containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_storage_is_object_storage_every_node_can_write():
    aws = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    for name, node_type in gpu_node_types(aws).items():
        assert node_type["node_config"]["IamInstanceProfile"] == {"Name": "ray-autoscaler-v1"}, name
    gcp = yaml.safe_load((CLUSTER / "gcp.yaml").read_text())
    project = gcp["provider"]["project_id"]
    for name, node_type in gpu_node_types(gcp).items():
        (account,) = node_type["node_config"]["serviceAccounts"]
        assert account["email"] == f"ray-autoscaler-sa-v1@{project}.iam.gserviceaccount.com", name
        assert "https://www.googleapis.com/auth/cloud-platform" in account["scopes"]
    assert "--storage gs://" in (CLUSTER / "gcp.yaml").read_text()


# ---------------------------------------------------------------- broken launcher YAMLs


def broken_copy(tmp_path: Path, old: str, new: str) -> Path:
    """cluster/aws.yaml with one textual edit, written to a new file."""
    text = (CLUSTER / "aws.yaml").read_text()
    assert old in text
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_typo_in_a_key_fails_rays_validator(tmp_path):
    path = broken_copy(tmp_path, "idle_timeout_minutes: 5", "idle_timout_minutes: 5")
    with pytest.raises(jsonschema.ValidationError, match="'idle_timout_minutes' was unexpected"):
        validate_launcher_yaml(path)


def test_typo_in_a_node_type_key_fails_rays_validator(tmp_path):
    path = broken_copy(tmp_path, "    max_workers: 4\n", "    max_worker: 4\n")
    with pytest.raises(jsonschema.ValidationError, match="'max_worker' was unexpected"):
        validate_launcher_yaml(path)


def test_wrong_type_fails_rays_validator(tmp_path):
    path = broken_copy(tmp_path, "resources: {CPU: 4, GPU: 1}", "resources: {CPU: 4, GPU: one}")
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        validate_launcher_yaml(path)


def test_negative_workers(tmp_path):
    """Ray's schema rejects a negative global max_workers but lets a negative per-type
    min_workers through: worker_count_problems catches that one."""
    path = broken_copy(tmp_path, "max_workers: 6\n", "max_workers: -6\n")
    with pytest.raises(jsonschema.ValidationError, match="-6 is less than the minimum of 0"):
        validate_launcher_yaml(path)

    path = broken_copy(
        tmp_path, "    min_workers: 0\n    max_workers: 4\n", "    min_workers: -1\n    max_workers: 4\n"
    )
    config = validate_launcher_yaml(path)  # passes Ray's own validator
    assert config["available_node_types"]["gpu.1x"]["min_workers"] == -1
    assert worker_count_problems(config) == ["gpu.1x: negative worker count (min_workers -1, max_workers 4)"]


def test_unknown_head_type_fails_rays_validator(tmp_path):
    path = broken_copy(tmp_path, "head_node_type: head.cpu", "head_node_type: head")
    with pytest.raises(ValueError, match="`head_node_type` must be one of `available_node_types`"):
        validate_launcher_yaml(path)


# ---------------------------------------------------------------------------- KubeRay


def load_manifest(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]
    assert len(docs) == 1, f"{name}: expected one resource, got {len(docs)}"
    return docs[0]


def kuberay_autoscaling_config(cluster_spec: dict, name: str) -> dict:
    """The autoscaling config KubeRay's in-tree autoscaler derives from a RayCluster
    spec (Ray's own code; it ends in validate_config)."""
    cr = {"metadata": {"name": name, "namespace": "default"}, "spec": copy.deepcopy(cluster_spec)}
    return _derive_autoscaling_config_from_ray_cr(cr)


def check_ray_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == pinned_ray_version()
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {})
    groups = spec["workerGroupSpecs"]
    assert len(groups) >= 2
    gpus = set()
    for group in groups:
        assert group["groupName"] and group["minReplicas"] == 0 and group["maxReplicas"] >= 1
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        assert "rayStartParams" in group
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] == f"rayproject/ray:{pinned_ray_version()}-py311-gpu"
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
        gpus.add(int(limits["nvidia.com/gpu"]))
    assert gpus >= {1, 4}
    for container in kuberay_containers(spec):
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert float(env[START_TIMEOUT]) >= 600, container["name"]

    config = kuberay_autoscaling_config(spec, "mercl-search")
    assert worker_count_problems(config) == []
    node_types = config["available_node_types"]
    assert node_types["headgroup"]["resources"]["CPU"] == 0
    assert node_types["headgroup"]["resources"]["trial_driver"] >= 3  # each trial's Tune driver runs there
    assert all("trial_driver" not in t["resources"] for n, t in node_types.items() if n != "headgroup")
    assert {t["resources"]["GPU"] for n, t in node_types.items() if n != "headgroup"} == gpus
    assert config["idle_timeout_minutes"] == spec["autoscalerOptions"]["idleTimeoutSeconds"] / 60


def test_raycluster_manifest():
    cluster = load_manifest("kuberay-raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["metadata"]["name"]
    check_ray_cluster_spec(cluster["spec"])


def test_rayjob_manifest_runs_the_search(tmp_path):
    job = load_manifest("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    fetch, search = spec["entrypoint"].split(" && ")
    assert search.split() == ["python", SEARCH_ENTRY, "--config", SEARCH_CONFIG]
    assert (ROOT / SEARCH_CONFIG).is_file()
    # the fetch step copies the bucket's datasets to where the search config expects them:
    # run it, with a local folder standing in for the bucket
    python, flag, code = shlex.split(fetch)
    assert (python, flag) == ("python", "-c")
    (bucket,) = re.findall(r"'(s3://[^']+)'", code)
    dataset = cluster_search_config().data.dataset
    assert f"'{dataset}'" in code
    (tmp_path / "bucket" / "deap-0123").mkdir(parents=True)
    (tmp_path / "bucket" / "deap-0123" / "manifest.json").write_text("{}")
    local = code.replace(bucket, str(tmp_path / "bucket")).replace(dataset, str(tmp_path / "head"))
    subprocess.run([sys.executable, "-c", local], check=True)
    assert (tmp_path / "head" / "deap-0123" / "manifest.json").read_text() == "{}"
    assert spec["shutdownAfterJobFinishes"] is True
    # the runtime env passes Ray's own checks; the code is a pinned revision of this repo
    runtime_env = RuntimeEnv(**yaml.safe_load(spec["runtimeEnvYAML"]))
    assert runtime_env["working_dir"].endswith("/archive/REVISION.zip")
    assert runtime_env["pip"]["packages"] == ["${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"]
    check_ray_cluster_spec(spec["rayClusterSpec"])
    # the same cluster as the interactive one
    assert spec["rayClusterSpec"] == load_manifest("kuberay-raycluster.yaml")["spec"]


def test_kuberay_group_without_replica_bounds_fails():
    spec = copy.deepcopy(load_manifest("kuberay-raycluster.yaml")["spec"])
    del spec["workerGroupSpecs"][0]["minReplicas"]
    with pytest.raises(KeyError, match="minReplicas"):
        kuberay_autoscaling_config(spec, "broken")


def test_kuberay_negative_replicas_fail_worker_count_check():
    spec = copy.deepcopy(load_manifest("kuberay-raycluster.yaml")["spec"])
    spec["workerGroupSpecs"][1]["minReplicas"] = -1
    config = kuberay_autoscaling_config(spec, "broken")  # passes Ray's own validator
    assert worker_count_problems(config) == ["gpu-4x: negative worker count (min_workers -1, max_workers 2)"]


# ------------------------------------------------------------ the cluster search config


def cluster_search_config():
    from tuning.config import load_search_config

    return load_search_config(ROOT / SEARCH_CONFIG)


def trial_demands(resources) -> list[dict]:
    """One trial's resource requests on new nodes as the autoscaler sees them: one bundle per
    DDP worker (the autoscaler flattens a PACK group into its bundles). The Tune trainable
    asks for the head's ``trial_driver`` (tests above), which needs no new node."""
    worker = {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker}
    return [worker] * resources.num_workers


def nodes_to_add(config: dict, demands: list[dict]) -> tuple[dict[str, int], list[dict]]:
    """Ray's autoscaler choice for ``demands`` on an empty cluster: (nodes per type, unmet)."""
    scorer = lambda node, resources, node_type, **_: _default_utilization_scorer(  # noqa: E731
        node, resources, node_type, node_availability_summary=NodeAvailabilitySummary({})
    )
    added, unmet = get_nodes_for(
        config["available_node_types"], {}, config["head_node_type"], config["max_workers"], demands, scorer
    )
    return dict(added), unmet


def autoscaling_configs() -> dict[str, dict]:
    configs = {name: validate_launcher_yaml(CLUSTER / name) for name in LAUNCHER_YAMLS}
    configs["kuberay"] = kuberay_autoscaling_config(load_manifest("kuberay-raycluster.yaml")["spec"], "mercl")
    return configs


def test_cluster_search_config_is_valid():
    from tuning.space import check_space_against_base, parse_space

    cfg = cluster_search_config()
    base_cfg, _ = check_space_against_base(parse_space(cfg.space), cfg.train, cfg.train_overrides)
    assert base_cfg.model.video.backbone == "vit_base_patch16_224"  # the paper's sizes on GPUs
    assert cfg.storage.startswith("s3://")
    res = cfg.resources
    assert res.use_gpu and res.gpus_per_worker == 1 and res.num_workers >= 2
    assert res.placement_strategy == "PACK"
    assert res.max_concurrent_trials >= 2


@pytest.mark.parametrize("cluster", ["aws.yaml", "gcp.yaml", "kuberay"])
def test_one_trial_packs_on_one_four_gpu_node(cluster):
    config = autoscaling_configs()[cluster]
    res = cluster_search_config().resources
    (four_gpu,) = [n for n, t in config["available_node_types"].items() if t["resources"].get("GPU") == 4]
    one = trial_demands(res)
    assert nodes_to_add(config, one) == ({four_gpu: 1}, [])
    # the trials in parallel all fit (the third one spreads over 1-GPU nodes) ...
    added, unmet = nodes_to_add(config, one * res.max_concurrent_trials)
    assert unmet == [] and sum(added.values()) <= config["max_workers"]
    # ... and the cluster is no bigger than that: one more trial would wait
    _, unmet = nodes_to_add(config, one * (res.max_concurrent_trials + 1))
    assert unmet
