"""Warm single-worker trials (``resources.runner: inprocess``): the Tune actor is the trial's one
rank and Tune reuses it for the next trial.

One small local Ray instance serves the module (2 logical CPUs, no dashboard: nothing here
starts Ray Train). The searches are real: the ``tiny`` two-stage MERCL loop on a tiny
``mercl synth`` study, run through :func:`tuning.search.execute_search` as the CLI runs it.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pandas as pd
import pytest
import ray
from builders import make_tiny_dataset

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "tuning" / "configs" / "test.yaml"
A = {"l1": 0.5, "alpha": 0.6, "lr": 0.004, "width": 16, "heads": 2, "tcn_blocks": 1}
B = {"l1": 1.5, "alpha": 0.8, "lr": 0.002, "width": 32, "heads": 4, "tcn_blocks": 2}


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        pytest.skip("another Ray session is active in this process")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("warm-data"))


def warm_search(dataset: Path, tmp_path: Path, name: str, points: list[dict], say=None, **overrides):
    """A search of ``points`` (in this order) with one in-process worker per trial, one at a time."""
    from tuning.search import execute_search, plan_search

    plan = plan_search(str(TEST_CONFIG), {
        "data.dataset": str(dataset), "storage": str(tmp_path), "name": name, "num_samples": len(points),
        "resources.runner": "inprocess", "resources.num_workers": 1, "scheduler.asha": False,
        "pid_dir": str(tmp_path / f"{name}-pids"), **overrides})
    plan.points_to_evaluate = [dict(p) for p in points]
    plan.timings_dir = str(tmp_path / f"{name}-timings")
    messages: list[str] = []
    outcome = execute_search(plan, say=say or messages.append)
    assert outcome.status == 0, messages
    return plan.exp_dir, outcome


def trial_results(exp: Path) -> dict[str, list[dict]]:
    """{trial_id: the rows of its result.json}."""
    out = {}
    for path in glob.glob(str(exp / "*run_trial_*" / "result.json")):
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        out[rows[0]["trial_id"]] = rows
    return out


def curve(rows: list[dict]) -> list[tuple]:
    keys = ("global_epoch", "stage", "val_metric", "loss", "val_loss", "restarts")
    return [tuple(row.get(k) for k in keys) for row in rows if "global_epoch" in row]


def by_config(exp: Path, outcome) -> dict[float, list[dict]]:
    """{lr of the trial's config: its result rows}."""
    results = trial_results(exp)
    return {float(r.config["lr"]): results[r.metrics["trial_id"]] for r in outcome.results}


def test_two_trials_on_one_warm_actor_match_each_run_alone(cluster, dataset, tmp_path):
    """A then B on the same actor (same PID, B's data from the actor's cache): B's every epoch is
    bit-identical to B run alone in a fresh actor; B's first report comes within seconds."""
    exp, outcome = warm_search(dataset, tmp_path, "ab", [A, B])
    alone_exp, alone = warm_search(dataset, tmp_path, "b", [B])

    pids = {int(p.read_text()) for p in (tmp_path / "ab-pids").glob("*-rank0.pid")}
    assert len(pids) == 1  # both trials ran in one actor process
    (alone_pid,) = {int(p.read_text()) for p in (tmp_path / "b-pids").glob("*-rank0.pid")}
    assert alone_pid not in pids

    warm, cold = by_config(exp, outcome), by_config(alone_exp, alone)
    assert curve(warm[B["lr"]]) == curve(cold[B["lr"]])  # same floats, every epoch of both stages
    assert [r["global_epoch"] for r in warm[B["lr"]] if "global_epoch" in r] == [1, 2, 3, 4, 5]
    table = pd.read_csv(exp / "trials.csv")
    assert (table["status"] == "completed").all() and (table["epochs_run"] == 5).all()

    timings = [json.loads(line) for line in (tmp_path / "ab-timings" / "timings.jsonl").read_text().splitlines()]
    second = [t for t in timings if t["trial_in_process"] == 2]
    assert len(second) == 1 and second[0]["actor_start"] == 0 and second[0]["process_group"] == 0
    # the first report: Tune's time from the trial's (re)start to its first result
    assert warm[B["lr"]][0]["time_this_iter_s"] < 5.0, warm[B["lr"]][0]


def test_asha_stops_warm_trials_with_one_line_each_and_a_killed_actor_resumes(cluster, dataset, tmp_path):
    """ASHA (grace 1 epoch, reduction factor 2) stops warm trials; each stop is one console line
    naming the trial, its epoch and its metric. The first trial's actor is SIGKILLed after its
    first checkpoint: Tune restarts the trial (fault.max_failures) from that checkpoint, in a new
    actor, and it runs to its end (``restarts`` 1, from the checkpoint's epoch on)."""
    import os
    import signal
    import threading
    import time

    pid_dir, exp = tmp_path / "asha-pids", tmp_path / "asha"
    killed: list[int] = []
    done = threading.Event()

    def kill_first_actor_after_its_first_checkpoint():
        while not done.is_set():
            pids, checkpoints = list(pid_dir.glob("*-rank0.pid")), glob.glob(str(exp / "*" / "checkpoint_000001"))
            if pids and checkpoints:
                killed.append(int(pids[0].read_text()))
                os.kill(killed[0], signal.SIGKILL)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_first_actor_after_its_first_checkpoint, daemon=True)
    watcher.start()
    messages: list[str] = []
    lr = [0.004, 0.001, 0.009, 0.002, 0.006]
    try:
        exp, outcome = warm_search(dataset, tmp_path, "asha", [{**A, "lr": x} for x in lr], say=messages.append,
                                   **{"scheduler.asha": True, "scheduler.grace_period": 1,
                                      "scheduler.reduction_factor": 2, "train_overrides.finetune.epochs": 20})
    finally:
        done.set()
    table = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str}).set_index("trial_id")
    stopped = table[table["status"] == "stopped_early"]
    assert len(stopped) >= 1 and (stopped["epochs_run"] < 22).all()
    lines = [m for m in messages if "stopped by ASHA" in m]
    assert sorted(line.split()[1] for line in lines) == sorted(stopped.index)
    for trial_id, row in stopped.iterrows():
        (line,) = [m for m in lines if m.startswith(f"trial {trial_id} ")]
        assert f"at epoch {int(row['epochs_run'])}: val_metric " in line
    assert not [m for m in messages if "Traceback" in m or "Error" in m], messages

    assert killed, "the first trial ended before its actor could be killed"
    results = trial_results(exp)
    (first_id,) = [t for t, rows in results.items() if any(r.get("restarts", 0) >= 1 for r in rows)]
    assert table.loc[first_id, "status"] == "completed" and table.loc[first_id, "restarts"] == 1
    # resumed from a checkpoint (not from epoch 1) and run to the end; Tune's result.json may lose
    # the lines the killed actor's last results were in flight with, so only the resumed rows count
    resumed = [r["global_epoch"] for r in results[first_id] if r.get("restarts", 0) >= 1]
    assert resumed[0] > 1 and resumed == list(range(resumed[0], 23)), resumed


def test_a_time_budget_ends_the_search_and_names_the_trial_it_cut(cluster, dataset, tmp_path):
    """``time_budget_s``: Tune stops starting trials once the budget is spent and stops the running
    one where it is; the trial table says which trials the budget cut (``stopped_by_budget``), the
    finished ones stay ``completed``, and the search still ends with status 0 and its best config."""
    import time

    planned = 2 + 30
    started = time.perf_counter()
    exp, outcome = warm_search(dataset, tmp_path, "budget", [A, B, {**A, "lr": 0.003}],
                               **{"num_samples": 500, "time_budget_s": 12.0, "train_overrides.finetune.epochs": 30})
    took = time.perf_counter() - started
    table = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    assert 2 <= len(table) < 500 and outcome.tuning_seconds < 12.0 + 20.0, (len(table), outcome.tuning_seconds)
    cut = table[table["status"] == "stopped_by_budget"]
    done = table[table["status"] == "completed"]
    assert len(done) >= 1 and (done["epochs_run"] == planned).all()
    assert len(cut) + len(done) == len(table), table[["trial_id", "status", "epochs_run"]]
    assert len(cut) <= 1 and (cut["epochs_run"] < planned).all()  # one trial at a time: at most one cut
    assert (exp / "best_config.yaml").is_file()
    summary = (exp / "summary.md").read_text()
    assert (f"{len(cut)} stopped by the time budget" in summary) == bool(len(cut)), summary
    assert took < 120


def test_the_warm_cache_keeps_one_searchs_data_within_its_byte_budget():
    """A warm actor keeps data only: per search (a new data key drops the old search's entries),
    least recently used entries first out past the byte budget, each entry made once."""
    import numpy as np
    import torch

    from tuning.warm import ProcessCache

    cache, made = ProcessCache(max_bytes=1000), []

    def make(name, n):
        made.append(name)
        return {"eeg": torch.zeros(n)} if name != "stimuli" else np.zeros(n, np.float32)

    cache.get("search1", "rows/0", lambda: make("rows/0", 100))  # 400 bytes
    cache.get("search1", "rows/1", lambda: make("rows/1", 100))
    assert cache.get("search1", "rows/0", lambda: make("again", 1))["eeg"].numel() == 100  # cached
    cache.get("search1", "stimuli", lambda: make("stimuli", 100))  # over budget: rows/1 (least recent) goes
    assert list(cache.entries) == ["rows/0", "stimuli"] and made == ["rows/0", "rows/1", "stimuli"]
    cache.get("search2", "rows/0", lambda: make("rows/0", 10))  # another search: nothing of search1 kept
    assert list(cache.entries) == ["rows/0"] and cache.entries["rows/0"]["eeg"].numel() == 10


@pytest.mark.slow
def test_a_warm_search_killed_mid_trial_resumes_from_tunes_checkpoint(cluster, dataset, tmp_path):
    """The driver-restart case on the warm path, as a user runs it (``tuning/search.py`` attached
    to the cluster): SIGKILL the driver once its first trial finished and its second has a
    checkpoint in Tune's saved state; the same command again keeps the finished trial and the
    Optuna study, and the second trial resumes from ``ray.tune.get_checkpoint()`` (``restarts``
    1, from the checkpoint's epoch on) and runs to its end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    planned = 2 + 60
    command = [sys.executable, str(ROOT / "tuning" / "search.py"), "--config", str(TEST_CONFIG), "--dataset",
               str(dataset), "--storage", str(tmp_path), "--name", "restore", "--num-samples", "2",
               "--set", "resources.runner=inprocess", "--set", "resources.num_workers=1",
               "--set", "scheduler.asha=false", "--set", "train_overrides.finetune.epochs=60"]
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    exp, log = tmp_path / "restore", tmp_path / "first.log"
    proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def saved_trials() -> dict[str, dict]:
        paths = sorted(glob.glob(str(exp / "experiment_state-*.json")))
        try:
            state = json.loads(Path(paths[-1]).read_text()) if paths else {"trial_data": []}
        except ValueError:  # being replaced right now
            return {}
        out = {}
        for trial, meta in state["trial_data"]:
            trial, meta = json.loads(trial), json.loads(meta)
            out[trial["trial_id"]] = {"status": trial["status"], **(meta.get("last_result") or {})}
        return out

    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            trials = saved_trials()
            done = [t for t, s in trials.items() if s["status"] == "TERMINATED"]
            running = [t for t, s in trials.items() if s["status"] == "RUNNING" and s.get("checkpoint_dir_name")
                       and s.get("global_epoch", planned) <= planned - 8]
            if len(done) == 1 and running:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no moment with one trial done and one checkpointed:\n{log.read_text()[-3000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        (finished,), (interrupted,) = done, running
        time.sleep(3)  # the killed driver's trial actors go with it
        before = trial_results(exp)[finished]

        log2 = tmp_path / "second.log"
        proc = subprocess.Popen(command, stdout=log2.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        assert proc.wait(timeout=600) == 0, log2.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log2.read_text()
    assert "resuming search restore" in text and "OptunaSearch state with" in text
    table = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str}).set_index("trial_id")
    assert len(table) == 2 and (table["status"] == "completed").all() and (table["epochs_run"] == planned).all()
    assert table.loc[interrupted, "restarts"] >= 1 and table.loc[finished, "restarts"] == 0
    results = trial_results(exp)
    assert results[finished] == before  # the finished trial was not run again
    # resumed from its checkpoint, not from epoch 1, to the end (the killed driver may have lost
    # result.json lines it had not written yet: only the resumed rows count)
    resumed = [r["global_epoch"] for r in results[interrupted] if r.get("restarts", 0) >= 1]
    assert resumed[0] > 1 and resumed == list(range(resumed[0], planned + 1)), resumed
    assert "Traceback" not in text


def test_a_stopped_ray_train_runs_shutdown_logs_no_traceback_but_a_crash_still_does():
    """The Ray Train path's quiet stop: the callback every trial's run carries installs, once
    unpickled in the run's controller (here: this process), a filter on Ray Train's backend
    shutdown logger that drops the record of workers that died with their owner (a stopped
    trial), and keeps a worker that crashed."""
    import logging
    import pickle

    from ray import cloudpickle
    from ray.train.v2._internal.callbacks import backend_setup

    from tuning.trial_driver import OWNER_EXITED, StoppedRunLogFilter, quiet_stopped_run_callback

    logger = logging.getLogger(backend_setup.__name__)
    logger.filters = [f for f in logger.filters if not isinstance(f, StoppedRunLogFilter)]
    pickle.loads(cloudpickle.dumps(quiet_stopped_run_callback()))  # what the controller does with it
    (only,) = [f for f in logger.filters if isinstance(f, StoppedRunLogFilter)]

    def record(message: str) -> logging.LogRecord:
        try:
            raise RuntimeError(message)
        except RuntimeError as exc:
            return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "Graceful shutdown of backend failed",
                                     (), (type(exc), exc, exc.__traceback__))

    assert not only.filter(record(f"The actor died unexpectedly. {OWNER_EXITED}. Owner Id: 3d58"))
    assert only.filter(record("The actor died unexpectedly: the worker process was killed by SIGKILL"))
