"""Local Ray clusters for tests that never touch anyone else's Ray processes.

Two helpers for tests/test_multinode.py:

* :class:`LocalAutoscalingCluster`: Ray's fake autoscaler
  (``ray.cluster_utils.AutoscalingCluster``) on this machine. The stock class cannot
  start in the Ray 2.60 wheel (it reads ``fake_multi_node/example.yaml``, which the
  wheel does not ship) and runs ``ray stop --force`` on start and on shutdown, which
  kills every Ray process on the machine. This subclass builds the config inline,
  starts its head with ``ray start`` on a free port in a private ``--temp-dir``, and
  shuts down by killing only the processes whose command line names that temp dir or
  its address, and their descendants (its head, the autoscaler, the fake worker nodes
  the autoscaler started, their workers).
* :func:`private_address_file`: ``ray.cluster_utils.Cluster`` writes its address to
  ``/tmp/ray/ray_current_cluster`` (where any plain ``ray.init()`` on the machine would
  pick it up and join *our* cluster) and deletes that file on shutdown (whoever wrote
  it). Inside this context manager both are no-ops.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import ray
import ray._common.utils
import ray._private.services
import ray._private.utils
from ray.cluster_utils import AutoscalingCluster

HEAD_NODE_TYPE = "ray.head.default"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _is_running(pid: int) -> bool:
    """True for a live process; False for a gone one or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def ray_processes() -> dict[int, str]:
    """``{pid: command line}`` of every live Ray process on the machine (anyone's)."""
    found = {}
    for pid in _all_pids():
        cmdline = _cmdline(pid)
        if ("ray/" in cmdline or cmdline.startswith("ray::")) and _is_running(pid):
            found[pid] = cmdline
    return found


def processes_of(markers: list[str]) -> list[int]:
    """Live processes whose command line contains one of ``markers`` (a private temp dir,
    a head's ``ip:port``), plus all their descendants (workers rename themselves to
    ``ray::...`` and no longer name the temp dir, but their parent is our raylet)."""
    pids = [pid for pid in _all_pids() if pid != os.getpid() and _is_running(pid)]
    # a marker must not continue with a digit: "host:4123" does not match "host:41234"
    pattern = re.compile("|".join(re.escape(m) + r"(?!\d)" for m in markers))
    ours = {pid for pid in pids if pattern.search(_cmdline(pid))}
    parents = {pid: _parent_pid(pid) for pid in pids}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in ours and pid not in ours}
        ours |= children
        grew = bool(children)
    return sorted(ours)


def kill_processes(pids: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM the given processes, then SIGKILL whatever still runs after ``grace_s``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_is_running(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if _is_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def private_address_file() -> Iterator[None]:
    """Stop ``ray.cluster_utils.Cluster`` from writing or deleting the machine-wide
    ``/tmp/ray/ray_current_cluster`` (other people's ``ray.init()`` reads it)."""
    saved = ray._private.utils.write_ray_address, ray._common.utils.reset_ray_address
    ray._private.utils.write_ray_address = lambda *args, **kwargs: None
    ray._common.utils.reset_ray_address = lambda *args, **kwargs: None
    try:
        yield
    finally:
        ray._private.utils.write_ray_address, ray._common.utils.reset_ray_address = saved


class LocalAutoscalingCluster(AutoscalingCluster):
    """Ray's fake multi-node autoscaler on loopback, started and stopped in isolation.

    ``head_resources`` e.g. ``{"CPU": 1}``; ``worker_node_types`` maps a node type name
    to ``{"resources": {...}, "node_config": {}, "min_workers": 0, "max_workers": n}``
    (custom resources such as ``{"fake_gpu": 1}`` stand in for GPUs). Worker nodes are
    extra raylets on this machine that the autoscaler starts when pending tasks or
    placement groups need them and removes after ``idle_timeout_minutes``.
    """

    def __init__(
        self,
        head_resources: dict,
        worker_node_types: dict,
        idle_timeout_minutes: float = 0.1,
        update_interval_s: int = 1,
    ):
        self.port = free_port()
        self.temp_dir = tempfile.mkdtemp(prefix="ray-as-", dir="/tmp")
        self.address = f"{ray._private.services.get_node_ip_address()}:{self.port}"
        self._update_interval_s = update_interval_s
        super().__init__(dict(head_resources), worker_node_types, idle_timeout_minutes=idle_timeout_minutes)

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        """The config of Ray's ``fake_multi_node/example.yaml``, built inline.

        ``provider.gcs_address`` points the fake provider's new nodes at this head
        (it assumes port 6379 otherwise).
        """
        node_types = {name: dict(spec) for name, spec in worker_node_types.items()}
        node_types[HEAD_NODE_TYPE] = {"resources": dict(head_resources), "node_config": {}, "max_workers": 0}
        config = {
            "cluster_name": "fake_multinode",
            "max_workers": sum(spec.get("max_workers", 0) for spec in worker_node_types.values()),
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "gcs_address": self.address,
            },
            "available_node_types": node_types,
            "head_node_type": HEAD_NODE_TYPE,
            "auth": {},
            "upscaling_speed": 1.0,
            "docker": {},
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
        }
        config.update(config_kwargs)
        return config

    def start(self, _system_config=None, override_env: dict | None = None) -> str:
        """Start the head (GCS, raylet, autoscaler) and return its address. No ``ray stop``."""
        config_path = Path(self.temp_dir) / "autoscaling.json"
        config_path.write_text(json.dumps(self._config))
        head = dict(self._head_resources)
        ray_cli = str(Path(sys.executable).with_name("ray"))
        cmd = [
            ray_cli,
            "start",
            "--head",
            f"--port={self.port}",
            f"--temp-dir={self.temp_dir}",
            f"--autoscaling-config={config_path}",
            f"--num-cpus={head.pop('CPU', 0)}",
            f"--num-gpus={head.pop('GPU', 0)}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ]
        if "object_store_memory" in head:
            cmd.append(f"--object-store-memory={head.pop('object_store_memory')}")
        if head:
            cmd.append(f"--resources={json.dumps(head)}")
        if _system_config is not None:
            cmd.append(f"--system-config={json.dumps(_system_config, separators=(',', ':'))}")
        env = {
            **os.environ,
            "AUTOSCALER_UPDATE_INTERVAL_S": str(self._update_interval_s),
            "RAY_FAKE_CLUSTER": "1",
            # The head must use the auth mode of the driver that will connect: `ray start`
            # turns token auth on once any local ray.init() has written ~/.ray/auth_token,
            # and a local ray.init() sets RAY_AUTH_MODE=token in its own process for good
            # (a driver in token mode on a token-less head gets its trial actors cancelled).
            "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
            **(override_env or {}),
        }
        env.pop("RAY_ADDRESS", None)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            self.shutdown()
            raise RuntimeError(f"ray start failed ({done.returncode}): {done.stderr[-2000:]}")
        return self.address

    def processes(self) -> list[int]:
        """PIDs of this cluster: named by its temp dir or address, or descended from those."""
        return processes_of([self.temp_dir, self.address])

    def shutdown(self) -> None:
        """Kill this cluster's processes only (head, autoscaler, fake worker nodes, workers)."""
        # The autoscaler goes first so that it does not start nodes while we stop them.
        kill_processes([pid for pid in self.processes() if "monitor.py" in _cmdline(pid)])
        for _ in range(3):  # a dying raylet may still fork a worker: sweep again
            pids = self.processes()
            if not pids:
                break
            kill_processes(pids)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def alive_worker_nodes() -> list[dict]:
    """``ray.nodes()`` entries of live non-head nodes (driver must be connected)."""
    return [n for n in ray.nodes() if n["Alive"] and not n.get("Resources", {}).get("node:__internal_head__")]


def wait_until(predicate, timeout_s: float, interval_s: float = 0.5) -> float:
    """Poll ``predicate()`` until true; return the seconds it took, raise on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
    return time.monotonic() - start
