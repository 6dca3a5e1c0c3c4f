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

Who may reach a cluster (issue 21): the dashboard is Ray's job-submission API, so a file whose
dashboard listens beyond loopback without Ray's token auth on every node is refused
(:func:`launcher_auth_problems`, :func:`kuberay_auth_problems`), as is token mode without a
token, a KubeRay NetworkPolicy that admits more than the namespace on the head's ports, and
node rights beyond the search's bucket. Each check is shown to fail on a mutated copy.
"""

from __future__ import annotations

import copy
import json
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


S3_ACTIONS_ON_OBJECTS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                         "s3:ListMultipartUploadParts"}
GCP_STORAGE_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
GCP_COMPUTE_SCOPE = "https://www.googleapis.com/auth/compute"


def search_bucket() -> str:
    """The bucket of the cluster search's Tune storage (s3://BUCKET/...)."""
    return cluster_search_config().storage.split("://", 1)[1].split("/", 1)[0]


def aws_policy(name: str) -> list[dict]:
    return json.loads((CLUSTER / "iam" / name).read_text())["Statement"]


def aws_bucket_problems(statements: list[dict], bucket: str) -> list[str]:
    """S3 rights beyond ``bucket``: wildcard actions, or an s3 action on another resource."""
    problems = []
    for statement in statements:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        for action in actions:
            if action in ("*", "s3:*") or action.startswith("s3:") and action.endswith("*"):
                problems.append(f"{statement.get('Sid')}: wildcard action {action}")
            elif action.startswith("s3:") and set(resources) - {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}:
                problems.append(f"{statement.get('Sid')}: {action} on {resources}")
    return problems


def test_every_node_may_write_the_search_bucket_and_no_other():
    """Every node writes Tune storage (Ray Train workers upload checkpoints), so every node has
    rights on the search's bucket; none has S3 full access (AWS) or the cloud-platform scope (GCP)."""
    bucket = search_bucket()
    aws = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    profiles = {name: t["node_config"]["IamInstanceProfile"] for name, t in aws["available_node_types"].items()}
    assert profiles.pop(aws["head_node_type"]) == {"Name": "mercl-search-head"}
    assert set(map(str, profiles.values())) == {str({"Name": "mercl-search-worker"})}
    worker, head = aws_policy("aws-worker-policy.json"), aws_policy("aws-head-policy.json")
    assert aws_bucket_problems(worker, bucket) == [] and aws_bucket_problems(head, bucket) == []
    worker_actions = {a for s in worker for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert S3_ACTIONS_ON_OBJECTS <= worker_actions and all(a.startswith("s3:") for a in worker_actions)
    (pass_role,) = [s for s in head if s["Action"] == "iam:PassRole"]
    assert pass_role["Resource"] == "arn:aws:iam::*:role/mercl-search-worker"
    other = {a for s in head if s is not pass_role for a in s["Action"] if not a.startswith("s3:")}
    assert other and all(a.startswith("ec2:") and "*" not in a for a in other)
    assert "ray-autoscaler-v1" not in json.dumps(aws["available_node_types"])
    # an S3-full-access statement is caught
    assert aws_bucket_problems([{"Sid": "all", "Action": "s3:*", "Resource": "*"}], bucket) == ["all: wildcard action s3:*"]
    assert aws_bucket_problems([{"Sid": "x", "Action": ["s3:GetObject"], "Resource": "*"}], bucket)

    gcp = yaml.safe_load((CLUSTER / "gcp.yaml").read_text())
    project = gcp["provider"]["project_id"]
    for name, node_type in gcp["available_node_types"].items():
        (account,) = node_type["node_config"]["serviceAccounts"]
        role = "head" if name == gcp["head_node_type"] else "worker"
        assert account["email"] == f"mercl-search-{role}@{project}.iam.gserviceaccount.com", name
        expected = {GCP_STORAGE_SCOPE, GCP_COMPUTE_SCOPE} if role == "head" else {GCP_STORAGE_SCOPE}
        assert set(account["scopes"]) == expected, name
    assert "cloud-platform" not in json.dumps(gcp) and "ray-autoscaler-sa-v1" not in json.dumps(gcp)
    assert f"--storage gs://{bucket}/" in (CLUSTER / "gcp.yaml").read_text()
    # the KubeRay files fetch from and write to the same bucket
    assert f"s3://{bucket}/" in load_manifest("kuberay-rayjob.yaml")["spec"]["entrypoint"]


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


def load_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def ray_resource(docs: list[dict]) -> dict:
    """The one RayCluster/RayJob of a KubeRay manifest (beside it: its NetworkPolicy)."""
    (resource,) = [d for d in docs if d["apiVersion"] == "ray.io/v1"]
    return resource


def load_manifest(name: str) -> dict:
    docs = load_documents(CLUSTER / name)
    assert sorted(d["kind"] for d in docs if d["apiVersion"] != "ray.io/v1") == ["NetworkPolicy"], name
    return ray_resource(docs)


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


# ------------------------------------------------- who may reach the cluster: token auth

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HEAD_PORTS = {8265, 6379, 10001}  # dashboard / job submission, GCS, Ray client
KUBERAY_DEFAULT_DASHBOARD_HOST = "0.0.0.0"  # KubeRay passes this when rayStartParams has none
RAY_DEFAULT_DASHBOARD_HOST = "127.0.0.1"  # `ray start`'s default


def launcher_node_setup(config: dict, name: str) -> tuple[list[str], list[str]]:
    """What sets the environment of node type ``name``'s ``ray start``: its Docker run options
    (shared, head/worker, the type's own) and its start commands."""
    is_head = name == config["head_node_type"]
    docker, own = config.get("docker", {}), config["available_node_types"][name].get("docker", {})
    which = "head_run_options" if is_head else "worker_run_options"
    options = docker.get("run_options", []) + docker.get(which, []) + own.get("run_options", []) + own.get(which, [])
    commands = config["head_start_ray_commands" if is_head else "worker_start_ray_commands"]
    return options, commands


def sets_token_mode(options: list[str], commands: list[str]) -> bool:
    in_container = any(re.fullmatch(r"(--env|-e)[ =]RAY_AUTH_MODE=token", o.strip()) for o in options)
    return in_container or any(re.search(r"(^|[\s;])(export\s+)?RAY_AUTH_MODE=token\b", c) for c in commands)


def launcher_dashboard_host(config: dict) -> str:
    hosts = re.findall(r"--dashboard-host[= ](\S+)", " ".join(config["head_start_ray_commands"]))
    return hosts[-1].strip("'\"") if hosts else RAY_DEFAULT_DASHBOARD_HOST


def launcher_auth_problems(config: dict) -> list[str]:
    """Who can reach a cluster-launcher cluster: the dashboard (job submission = running code with
    the nodes' cloud rights) must ask for Ray's token, or listen on loopback only."""
    nodes = list(config["available_node_types"])
    without = [n for n in nodes if not sets_token_mode(*launcher_node_setup(config, n))]
    host = launcher_dashboard_host(config)
    problems = []
    if without and host not in LOOPBACK:
        problems.append(
            f"dashboard (job submission API) on {host} without token auth on {', '.join(without)}: "
            "set RAY_AUTH_MODE=token on every node, or bind the dashboard to 127.0.0.1"
        )
    if without and len(without) < len(nodes):
        problems.append(f"token auth on some nodes only (not on {', '.join(without)}): every node needs it")
    setup = json.dumps([config.get("docker", {}), config["head_start_ray_commands"], config["worker_start_ray_commands"]])
    has_token = any(remote.rstrip("/").endswith(".ray/auth_token") for remote in config.get("file_mounts", {}))
    if len(without) < len(nodes) and not has_token and "RAY_AUTH_TOKEN" not in setup:
        problems.append("RAY_AUTH_MODE=token but no token on the nodes: file_mounts ~/.ray/auth_token")
    return problems


def kuberay_groups(spec: dict) -> dict[str, dict]:
    return {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}


def container_has_token_auth(container: dict) -> bool:
    env = {e["name"]: e for e in container.get("env", [])}
    token_given = "valueFrom" in env.get("RAY_AUTH_TOKEN", {}) or "RAY_AUTH_TOKEN_PATH" in env
    return env.get("RAY_AUTH_MODE", {}).get("value") == "token" and token_given


def kuberay_auth_problems(spec: dict) -> list[str]:
    """The same for a RayCluster spec: token auth through ``authOptions`` (the operator makes the
    token and gives it to every pod) or by hand on every Ray container (env from a Secret)."""
    host = spec["headGroupSpec"].get("rayStartParams", {}).get("dashboard-host", KUBERAY_DEFAULT_DASHBOARD_HOST)
    operator_token = spec.get("authOptions", {}).get("mode") == "token"
    without = [
        name for name, group in kuberay_groups(spec).items()
        if not (operator_token or container_has_token_auth(group["template"]["spec"]["containers"][0]))
    ]
    if without and host not in LOOPBACK:
        return [f"dashboard (job submission API) on {host} without token auth on {', '.join(without)}: "
                "set authOptions: {mode: token}, or bind the dashboard to 127.0.0.1"]
    return []


def peer_problems(peer: dict) -> list[str]:
    if "ipBlock" in peer:
        return [f"admits addresses {peer['ipBlock']}"]
    if "namespaceSelector" in peer and "podSelector" not in peer:
        return ["admits every pod of whole namespaces"]
    return []


def network_policy_problems(docs: list[dict]) -> list[str]:
    """The NetworkPolicy beside a KubeRay resource must select every Ray pod, admit other pods
    only on the head's ports, and admit nothing from outside the Kubernetes cluster."""
    resource = ray_resource(docs)
    spec = resource["spec"].get("rayClusterSpec", resource["spec"])
    policies = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy" and "Ingress" in d["spec"].get("policyTypes", [])]
    problems = []
    for name, group in kuberay_groups(spec).items():
        labels = group["template"].get("metadata", {}).get("labels", {})
        if not any(p["podSelector"].get("matchLabels", {}).items() <= labels.items() for p in policies):
            problems.append(f"{name}: pods selected by no ingress NetworkPolicy")
    for policy in policies:
        own = {"podSelector": policy["podSelector"]}
        for rule in policy.get("ingress", []):
            peers = rule.get("from", [])
            if not peers:
                problems.append("an ingress rule without `from` admits every source")
            problems += [p for peer in peers for p in peer_problems(peer)]
            ports = {p.get("port") for p in rule.get("ports", [])}
            if not ports and any(peer != own for peer in peers):
                problems.append("all ports open to pods outside the Ray cluster")
            elif ports - HEAD_PORTS and any(peer != own for peer in peers):
                problems.append(f"ports {sorted(ports - HEAD_PORTS)} open to pods outside the Ray cluster")
    return problems


def cluster_file_problems(path: Path) -> list[str]:
    """Every check of one cluster file: Ray's validator (raises), worker counts, who may reach it."""
    docs = load_documents(path)
    if "available_node_types" in docs[0]:
        config = validate_launcher_yaml(path)
        return worker_count_problems(config) + launcher_auth_problems(config)
    resource = ray_resource(docs)
    spec = resource["spec"].get("rayClusterSpec", resource["spec"])
    config = kuberay_autoscaling_config(spec, resource["metadata"]["name"])
    return worker_count_problems(config) + kuberay_auth_problems(spec) + network_policy_problems(docs)


CLUSTER_FILES = [*LAUNCHER_YAMLS, "kuberay-raycluster.yaml", "kuberay-rayjob.yaml"]


def mutated_copy(tmp_path: Path, name: str, *, drop: str, replace: tuple[str, str] = ("", "")) -> Path:
    """cluster/``name`` without the (non-comment) lines matching ``drop``, one text replaced."""
    lines = (CLUSTER / name).read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.lstrip().startswith("#") or not re.search(drop, line)]
    assert len(kept) < len(lines), f"{name}: nothing matches {drop!r}"
    text = "".join(kept)
    old, new = replace
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


AUTH_LINES = r"RAY_AUTH_MODE|\.ray/auth_token|authOptions"


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_shipped_cluster_files_admit_only_the_token_holder(name):
    assert cluster_file_problems(CLUSTER / name) == []


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_dashboard_on_the_network_without_auth_is_refused(tmp_path, name):
    """The state of the files before issue 21: no token auth, dashboard on 0.0.0.0. Ray's own
    validator lets it through; the auth check refuses it, naming the host and the nodes."""
    to_network = ("dashboard-host=127.0.0.1", "dashboard-host=0.0.0.0") if name in LAUNCHER_YAMLS else ("", "")
    path = mutated_copy(tmp_path, name, drop=AUTH_LINES, replace=to_network)
    settings = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not any("RAY_AUTH_MODE" in line for line in settings)
    (problem,) = cluster_file_problems(path)  # passed Ray's validator on the way
    assert problem.startswith("dashboard (job submission API) on 0.0.0.0 without token auth on ")
    assert "head" in problem and "gpu" in problem


def test_dashboard_on_loopback_without_auth_is_accepted(tmp_path):
    """The fallback where token auth is not possible: a dashboard only `ray dashboard`'s SSH
    tunnel reaches. The check is about exposure, not about a keyword."""
    assert cluster_file_problems(mutated_copy(tmp_path, "aws.yaml", drop=AUTH_LINES)) == []
    path = mutated_copy(tmp_path, "kuberay-raycluster.yaml", drop=AUTH_LINES,
                        replace=('dashboard-host: "0.0.0.0"', 'dashboard-host: "127.0.0.1"'))
    assert cluster_file_problems(path) == []


def test_token_mode_without_a_token_or_on_some_nodes_only_is_refused(tmp_path):
    path = mutated_copy(tmp_path, "gcp.yaml", drop=r"~/\.ray/auth_token:")
    assert cluster_file_problems(path) == ["RAY_AUTH_MODE=token but no token on the nodes: file_mounts ~/.ray/auth_token"]
    config = validate_launcher_yaml(CLUSTER / "aws.yaml")
    config["docker"]["run_options"].remove("--env RAY_AUTH_MODE=token")
    config["docker"]["head_run_options"] = ["--env RAY_AUTH_MODE=token"]
    assert launcher_auth_problems(config) == ["token auth on some nodes only (not on gpu.1x, gpu.4x): every node needs it"]
    config["head_start_ray_commands"][-1] += " --dashboard-host=0.0.0.0"
    assert launcher_auth_problems(config)[0].startswith("dashboard (job submission API) on 0.0.0.0 without token auth on gpu.1x")


def test_kuberay_token_by_hand_from_a_secret_counts_as_auth():
    spec = copy.deepcopy(load_manifest("kuberay-raycluster.yaml")["spec"])
    del spec["authOptions"]
    assert kuberay_auth_problems(spec)  # RAY_AUTH_MODE alone: no token given
    secret = {"secretKeyRef": {"name": "mercl-ray-token", "key": "auth_token"}}
    for group in kuberay_groups(spec).values():
        group["template"]["spec"]["containers"][0]["env"].append({"name": "RAY_AUTH_TOKEN", "valueFrom": secret})
    assert kuberay_auth_problems(spec) == []


def test_every_kuberay_container_fails_closed_without_the_operators_token():
    """An operator older than KubeRay 1.5.1 drops authOptions; RAY_AUTH_MODE=token in every Ray
    container then makes `ray start` refuse (no token) instead of starting unauthenticated."""
    for name in ("kuberay-raycluster.yaml", "kuberay-rayjob.yaml"):
        resource = load_manifest(name)
        spec = resource["spec"].get("rayClusterSpec", resource["spec"])
        assert spec["authOptions"] == {"mode": "token"}
        for container in kuberay_containers(spec):
            assert {"name": "RAY_AUTH_MODE", "value": "token"} in container["env"], (name, container["name"])


def test_launcher_dashboards_listen_on_loopback_only(launcher_yaml):
    """Token auth and, on top, no network exposure: `ray dashboard` tunnels to the head's 127.0.0.1.
    (Ray Train's State API user, the PlacementGroupCleaner, runs on the head.)"""
    assert launcher_dashboard_host(validate_launcher_yaml(launcher_yaml)) == "127.0.0.1"


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p.clear(), "head: pods selected by no ingress NetworkPolicy"),
    (lambda p: p["spec"]["ingress"][1].pop("from"), "an ingress rule without `from` admits every source"),
    (lambda p: p["spec"]["ingress"][1].pop("ports"), "all ports open to pods outside the Ray cluster"),
    (lambda p: p["spec"]["ingress"][2]["from"][0].pop("podSelector"), "admits every pod of whole namespaces"),
    (lambda p: p["spec"]["ingress"].append({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 8265}]}),
     "admits addresses {'cidr': '0.0.0.0/0'}"),
])
def test_kuberay_network_policy_problems_are_found(edit, expected):
    docs = load_documents(CLUSTER / "kuberay-raycluster.yaml")
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    edit(policy)
    if not policy:
        docs.remove(policy)
    assert expected in network_policy_problems(docs)
