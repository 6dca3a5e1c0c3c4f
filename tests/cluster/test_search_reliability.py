"""The search on a real Ray cluster (loopback): a killed worker, a killed driver, both recovered.

One local cluster serves the whole module (``ray.init`` here, 2 logical CPUs, with the
dashboard: Ray Train's placement-group cleaner needs its State API); ``tuning/search.py``
runs as a subprocess attached to it through ``RAY_ADDRESS``, exactly as a user runs it.
The training is the real two-stage MERCL loop (``tiny`` config, few epochs) on a tiny
``mercl synth`` study. Only the cluster this module started is shut down.

The driver-restart test runs a nested search (one search per outer fold) and runs it to the
end (outer scores, final model); the inner split of the ``stimulus`` and ``subject-stimulus``
protocols is checked on the Ray Data path itself.

Slow (about 5 minutes on 2 idle cores, more when other jobs load them: every trial starts a Tune
actor, a Train controller and its worker processes), hence ``slow`` and ``ray``.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from builders import make_tiny_dataset

from tuning.results import searcher_studies

# On 2 shared cores a trial takes 1-3 minutes (start-up dominates): beyond pyproject's 600 s default.
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "tuning" / "configs" / "test.yaml"


@pytest.fixture(scope="module")
def cluster():
    """A local 2-CPU Ray cluster for this module; its GCS address for the search subprocesses."""
    if ray.is_initialized():
        pytest.skip("another Ray session is active in this process")
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    yield address
    ray.shutdown()


@pytest.fixture(autouse=True)
def no_stray_search():
    """Kill a search subprocess a failed test left running (only those this module started)."""
    STARTED.clear()
    yield
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


STARTED: list[subprocess.Popen] = []


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("reliability-data"))


def search_command(dataset: Path, storage: Path | str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "tuning" / "search.py"), "--config", str(TEST_CONFIG), "--dataset",
            str(dataset), "--storage", str(storage), *args]


def start_search(cluster: str, command: list[str], log: Path, **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": cluster, "PYTHONUNBUFFERED": "1", **env_vars}
    proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    STARTED.append(proc)
    return proc


def wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float, what: str):
    """Poll ``condition()`` every 0.1 s until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the search exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def train_checkpoints(exp: Path, trial_id: str | None = None) -> list[str]:
    return sorted(glob.glob(str(exp / "train_runs" / (trial_id or "*") / "checkpoint_*")))


def trial_states(exp: Path) -> dict[str, str]:
    """{trial_id: status} from Tune's persisted experiment state (what a restore starts from)."""
    paths = sorted(glob.glob(str(exp / "experiment_state-*.json")))
    if not paths:
        return {}
    try:
        state = json.loads(Path(paths[-1]).read_text())
    except ValueError:  # being replaced right now
        return {}
    trials = [json.loads(entry[0]) for entry in state["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def result_rows(exp: Path, trial_id: str) -> list[dict]:
    (path,) = glob.glob(str(exp / f"*run_trial_{trial_id}_*" / "result.json"))  # nested: fold<k>_run_trial_...
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def epochs_reported(exp: Path, trial_id: str) -> list[int]:
    return [int(r["global_epoch"]) for r in result_rows(exp, trial_id)]


def test_killed_worker_resumes_from_its_checkpoint(cluster, dataset, tmp_path):
    """SIGKILL one DDP worker mid-trial: Ray Train restarts the group from the last checkpoint.

    The storage is given as a URI (``file://``, as ``s3://`` would be): Tune and Ray Train write
    there through pyarrow, the search's own outputs are uploaded from a local mirror. The workers
    stream their shard of the training rows every epoch (``in_memory_max_mb: 0``, Ray Data's
    ``streaming_split``), so the restarted group also gets its streams back.
    """
    pid_dir, log = tmp_path / "pids", tmp_path / "search.log"
    # enough epochs that the trial still trains when its first checkpoint is committed and its
    # first results reached the file:// storage, several epochs later (with 12, a trial without
    # start-up work in its workers could be over by then; streamed epochs take ~0.35 s here)
    planned = 2 + 28
    proc = start_search(cluster, search_command(
        dataset, f"file://{tmp_path / 'store'}", "--name", "kill", "--num-samples", "1", "--set",
        f"pid_dir={pid_dir}", "--set", "train_overrides.finetune.epochs=28", "--set", "data.in_memory_max_mb=0"), log,
        MERCL_LOCAL_RESULTS=str(tmp_path / "mirror"))
    exp = tmp_path / "store" / "kill"

    def checkpointed_epoch():  # Tune has a result and Ray Train has committed a checkpoint
        results = glob.glob(str(exp / "run_trial_*" / "result.json"))
        pids = list(pid_dir.glob("*-rank1.pid"))
        runs = [Path(r).name for r in glob.glob(str(exp / "train_runs" / "*"))]
        return (results and pids and runs and Path(results[0]).read_text().strip()
                and committed_epoch(exp, runs[0]) is not None and (Path(results[0]), pids[0]))

    result_file, pid_file = wait_for(checkpointed_epoch, proc, log, 600, "the trial's first checkpoint")
    victim = int(pid_file.read_text())
    os.kill(victim, signal.SIGKILL)
    reported_before_kill = len(result_file.read_text().splitlines())
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]

    table = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})  # ids like 12345678 are not ints
    assert len(table) == 1
    row = table.iloc[0]
    assert row["status"] == "completed"
    assert row["restarts"] >= 1  # the worker group came back from a checkpoint
    assert row["epochs_run"] == planned
    assert int(pid_file.read_text()) != victim  # a new worker process wrote its PID
    epochs = epochs_reported(exp, row["trial_id"])
    assert epochs.count(1) == 1, epochs  # not restarted from scratch
    assert sorted(set(epochs)) == list(range(1, planned + 1)), epochs
    assert reported_before_kill < planned  # the kill really came mid-trial
    assert f"Trial `{row['trial_id']}`" in (exp / "summary.md").read_text()
    assert (exp / "tensorboard" / row["trial_id"]).is_dir() and (tmp_path / "mirror" / "kill" / "trials.csv").is_file()


def committed_epoch(exp: Path, trial_id: str) -> int | None:
    """The global epoch of the newest checkpoint Ray Train's checkpoint manager has persisted for
    the trial's run (what a restored run resumes from), or None. A result in Tune's result.json
    is not enough: the checkpoint is uploaded asynchronously and registered after the report, and
    a driver killed in between restarts that trial from scratch, rightly."""
    path = exp / "train_runs" / trial_id / "checkpoint_manager_snapshot.json"
    try:
        latest = json.loads(path.read_text()).get("latest_checkpoint_result")
    except (OSError, ValueError):  # not written yet, or being written right now
        return None
    return None if latest is None else int(latest["metrics"]["global_epoch"])


def _interrupt_when_one_done_one_running(exp: Path, proc, log: Path, planned: int) -> tuple[str, str, int]:
    """Kill the driver once Tune's persisted state has one trial finished and one running, and the
    running one has a committed checkpoint with at least 4 of its ``planned`` epochs still to go;
    returns (finished trial, interrupted trial, the epoch of its last committed checkpoint).

    Tune persists its state every few seconds; on a fast machine a short trial can finish before
    its state says RUNNING is over, and a "restored" trial whose last checkpoint is its last epoch
    has nothing left to run (CI saw that with 2 + 4 epochs). Hence the margin, and the check, after
    the kill, that the run really had epochs left. (Tune's result.json is no guide: it is written
    in bursts, several epochs behind the checkpoints, and may lose its last lines to the kill.)"""
    def one_done_one_running():
        states = trial_states(exp)
        done = [t for t, s in states.items() if s == "TERMINATED"]
        running = [t for t, s in states.items() if s == "RUNNING"]
        if len(done) == 1 and len(running) == 1:
            epoch = committed_epoch(exp, running[0])
            if epoch is not None and epoch <= planned - 4:
                return done[0], running[0]
        return None

    finished, interrupted = wait_for(one_done_one_running, proc, log, 900,
                                     f"one finished trial and one running with a checkpoint <= epoch {planned - 4}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(3)  # the killed driver's actors (trial, Train controller, workers) go with it
    left = committed_epoch(exp, interrupted)
    assert left is not None and left < planned, f"the interrupted trial had no epochs left ({left} of {planned})"
    return finished, interrupted, left


def test_interrupted_nested_search_resumes_every_fold_and_runs_to_the_end(cluster, dataset, tmp_path):
    """The driver-restart test, on a nested search (2 outer folds x 2 trials, stimulus protocol):
    kill the driver after fold 0's first trial finished while fold 1's first runs (and has a
    checkpoint); the restart keeps both folds' finished trials and Optuna studies (a plain
    search's single study is restored by the same Tuner.restore), resumes the running trial from
    its checkpoint, runs the rest, scores each fold's best config on its own held-out clips and
    trains model.pt.

    Trials here have one Ray Train worker: the restore is the same for any number of ranks, and
    one rank spares each of the 5 trial start-ups a second worker process and the first DDP
    wrapper's ~7 s (torch imports torch._dynamo there). Two-rank DDP trials, killed and resumed,
    are test_killed_worker_resumes_from_its_checkpoint.

    This search also takes the other way to read the data: the driver reads the shards
    (``data.read: driver``) and hands the outer folds and the final model the loaded dataset.
    """
    log = tmp_path / "first.log"
    # no ASHA: the second trial runs all its epochs, so the kill finds it running (an early stop
    # at its second epoch left a window of ~0.3 s); 2 + 12 epochs (~0.17 s each here) leave the
    # kill a window of several epochs after the running trial's first committed checkpoint
    planned = 2 + 12
    args = ["--name", "nested", "--num-samples", "2", "--nested", "--protocol", "stimulus", "--set", "resources.num_workers=1",
            "--set", "data.folds=2", "--set", "train_overrides.finetune.epochs=12", "--set", "scheduler.asha=false",
            "--set", "data.read=driver", "--set", "crossval.enabled=true", "--set", "final_model=true"]
    proc = start_search(cluster, search_command(dataset, tmp_path, *args), log)
    exp = tmp_path / "nested"
    finished, interrupted, checkpointed = _interrupt_when_one_done_one_running(exp, proc, log, planned)
    finished_rows = result_rows(exp, finished)
    finished_checkpoints = train_checkpoints(exp, finished)
    assert not (exp / "trials.csv").exists()

    log2 = tmp_path / "second.log"
    proc = start_search(cluster, search_command(dataset, tmp_path, *args), log2)
    assert proc.wait(timeout=1200) == 0, log2.read_text()[-4000:]
    text = log2.read_text()
    assert "resuming search nested" in text
    assert "per-fold OptunaSearch states with trials in their Optuna studies (fold 0: 1, fold 1: 1)" in text

    table = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    assert len(table) == 4 and table["trial_id"].is_unique and (table["status"] == "completed").all()
    assert table.groupby("fold").size().to_dict() == {0: 2, 1: 2}
    by_id = table.set_index("trial_id")
    assert by_id.loc[finished, "fold"] == 0 and by_id.loc[interrupted, "fold"] == 1
    # the finished trial was neither lost nor run again; the interrupted one resumed from its checkpoint
    assert result_rows(exp, finished) == finished_rows
    assert train_checkpoints(exp, finished) == finished_checkpoints
    rows = result_rows(exp, interrupted)
    resumed = [int(r["global_epoch"]) for r in rows if r["restarts"] >= 1]
    assert by_id.loc[interrupted, "restarts"] >= 1
    assert resumed == list(range(checkpointed + 1, planned + 1))  # from its checkpoint on, to the end
    assert max(int(r["global_epoch"]) for r in rows) == by_id.loc[interrupted, "epochs_run"] == planned
    # trial names carry the fold; each fold's own study holds its two trials
    for fold in (0, 1):
        assert len(glob.glob(str(exp / f"fold{fold}_run_trial_*"))) == 2
    studies = searcher_studies(exp)
    assert {fold: [t.state.name for t in study.trials] for fold, study in studies.items()} == \
        {0: ["COMPLETE"] * 2, 1: ["COMPLETE"] * 2}
    # to the end: each fold's best config scored on its own held-out clips, beside both baselines
    results = pd.read_csv(exp / "crossval" / "results.csv")
    assert set(results["fold"]) == {0, 1} and set(results["method"]) == {"mercl", "majority", "clip-majority"}
    for fold in (0, 1):  # the fold's best config is its own search's best trial
        part = table[table["fold"] == fold]
        best_ids = set(part[part["best_finetune_val_metric"] == part["best_finetune_val_metric"].max()]["trial_id"])
        header = (exp / f"fold{fold}" / "best_config.yaml").read_text().split()[3]
        assert header in best_ids
    summary = (exp / "summary.md").read_text()
    assert "nested search, mean ± std over 2 outer folds, each scored by a search that never saw it" in summary
    assert (exp / "model.pt").is_file()
    assert "HEADLINE, accuracy on data no part of the search saw: mercl" in text


def test_ray_data_inner_split_never_shares_a_clip_or_viewer(cluster, dataset, tmp_path):
    """What trial workers read through Ray Data, whole (in memory) or streamed: under ``stimulus``
    no clip, under ``subject-stimulus`` no clip and no subject, on both sides of the inner split."""
    from tuning.data import build_ray_datasets, prepare_search_data
    from tuning.search import plan_search
    from tuning.worker import ShardFeed, WorkerSetup

    for protocol, nested in (("stimulus", True), ("subject-stimulus", False)):
        plan = plan_search(str(TEST_CONFIG), {"data.dataset": str(dataset), "storage": str(tmp_path),
                                               "data.protocol": protocol, "data.folds": 2, "data.nested": nested})
        data = prepare_search_data(plan.cfg.data, plan.base_cfg)
        datasets = build_ray_datasets(data, "driver")  # the same map function as read_parquet, fewer tasks
        keys = ["stimulus"] + (["subject"] if protocol == "subject-stimulus" else [])
        for fold, split in data.folds.items():
            for in_memory in (True, False):
                setup = WorkerSetup(shapes=data.shapes, class_names=data.class_names, norm=split.norm,
                                    stimuli_ref=None, in_memory=in_memory)
                seen = {}
                for name in ("train", "val"):
                    feed = ShardFeed(datasets[fold][name], setup, data.stimuli, seed=0)
                    index = [b["index"] for b in feed.batches(0, 8, shuffle=False)]
                    seen[name] = data.rows.iloc[sorted(int(i) for b in index for i in b)]
                    assert len(seen[name]) == split.counts[f"{name}_rows"]
                test = data.rows.iloc[data.split_rows(fold, "test")]
                for key in keys:
                    assert not set(seen["train"][key]) & set(seen["val"][key]), (protocol, fold, in_memory, key)
                    assert not (set(seen["train"][key]) | set(seen["val"][key])) & set(test[key])
