"""One writer per output folder (issue 21, section 3): a lock on ``-o``, refused in one line while a
live run holds it, taken over from a crashed run; temporary files unique across writers and hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from builders import make_manifest_raw

from mercl import atomic
from mercl.cli import main as cli_main
from mercl.output_lock import LOCK_FILE, OutputFolderLocked, output_lock

HOLD = """
import sys, time
from mercl.output_lock import output_lock
with output_lock(sys.argv[1], "prepare"):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """A real second process holding the lock of tmp_path/out (killed at the end)."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield out, proc
    finally:
        proc.kill()
        proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _prepare_argv(raw: Path, out: Path) -> list[str]:
    return ["prepare", str(raw), "--source", "manifest", "-o", str(out), "--video-size", "32", "--workers", "1",
            "--no-progress"]


def test_a_second_prepare_into_a_locked_folder_refuses_naming_the_holder(tmp_path, holder, capsys, caplog):
    out, proc = holder
    raw = make_manifest_raw(tmp_path, subjects=("s01",))
    assert cli_main(_prepare_argv(raw, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("mercl: error: ") and str(out) in line
    assert f"pid {proc.pid}" in line and f"host {atomic.host_name()}" in line and "mercl prepare" in line
    assert "since 20" in line  # an ISO date
    assert not list(out.glob("*/manifest.json"))  # the refused run wrote nothing

    # the holder crashes (SIGKILL: no clean-up, its lock file stays): the next run takes over
    proc.kill()
    proc.wait()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == proc.pid
    assert cli_main(_prepare_argv(raw, out)) == 0
    assert f"taking over the lock of mercl prepare (pid {proc.pid}" in caplog.text
    assert len(list(out.glob("*/manifest.json"))) == 1
    assert not (out / LOCK_FILE).exists()  # released: the folder holds only the dataset


@pytest.mark.parametrize("command", ["train", "evaluate", "experiment", "predict"])
def test_every_writing_command_takes_the_lock(tmp_path, holder, command, capsys):
    out, proc = holder
    argv = {
        "train": ["train", str(tmp_path), "--label", "valence2", "-o", str(out)],
        "evaluate": ["evaluate", str(tmp_path), "--label", "valence2", "-o", str(out)],
        "experiment": ["experiment", "paper", str(tmp_path), "-o", str(out)],
        "predict": ["predict", str(tmp_path / "model.pt"), str(tmp_path), "--source", "manifest", "-o", str(out)],
    }[command]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "another run writes into this folder" in err and f"pid {proc.pid}" in err and "\n" not in err


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    dead = _dead_pid()
    stale = {"host": atomic.host_name(), "pid": dead, "since": "2026-01-01T00:00:00+00:00", "command": "train"}
    (out / LOCK_FILE).write_text(json.dumps(stale))
    with output_lock(out, "evaluate") as path:
        mine = json.loads(path.read_text())
        assert (mine["pid"], mine["host"], mine["command"]) == (os.getpid(), atomic.host_name(), "evaluate")
    assert f"taking over the lock of mercl train (pid {dead}" in caplog.text and "no longer running" in caplog.text
    assert not (out / LOCK_FILE).exists()


def test_another_hosts_lock_is_not_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    theirs = {"host": "node-7.cluster", "pid": 4242, "since": "2026-01-01T00:00:00+00:00", "command": "experiment"}
    (out / LOCK_FILE).write_text(json.dumps(theirs))
    with pytest.raises(OutputFolderLocked) as info:
        with output_lock(out, "prepare"):
            pass
    message = str(info.value)
    assert "pid 4242 on host node-7.cluster" in message and str(out / LOCK_FILE) in message
    assert json.loads((out / LOCK_FILE).read_text()) == theirs  # left as it was


def test_the_lock_is_one_per_folder_within_a_process_too(tmp_path):
    with output_lock(tmp_path / "a", "train"):
        with pytest.raises(OutputFolderLocked, match="mercl train"):
            with output_lock(tmp_path / "a", "predict"):
                pass
        with output_lock(tmp_path / "b", "predict"):  # another folder: its own lock
            pass


WRITE_TWICE = """
import sys
from pathlib import Path
from mercl import atomic
names = []
def write(tmp):
    names.append(tmp.name)
    tmp.write_text(sys.argv[2])
atomic.write_atomic(Path(sys.argv[1]), write)
atomic.write_atomic(Path(sys.argv[1]), write)
print(" ".join(names))
"""


def test_temporary_names_differ_across_writers_and_are_fsynced_private_files(tmp_path):
    target = tmp_path / "shared.json"
    names = []
    for text in ("one", "two"):
        done = subprocess.run([sys.executable, "-c", WRITE_TWICE, str(target), text], capture_output=True,
                              text=True, check=True)
        names += done.stdout.split()
    assert len(set(names)) == 4  # two processes, two writes each: four names
    for name in names:
        pid, host = atomic.tmp_owner(Path(name))
        assert host == atomic.host_name() and pid > 0
    assert target.read_text() == "two" and target.stat().st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob(f"*{atomic.TMP_MARK}*"))


def test_clean_up_removes_only_this_hosts_dead_temp_files(tmp_path):
    here = atomic.host_name()
    dead, live = _dead_pid(), os.getppid()
    names = {
        "dead-here": f"a.parquet.tmp-{dead}.0a1b2c3d.{here}",
        "live-here": f"b.parquet.tmp-{live}.0a1b2c3d.{here}",
        "dead-elsewhere": f"c.parquet.tmp-{dead}.0a1b2c3d.node-7.cluster",
        "not ours": "d.parquet.tmp-notes.txt",
    }
    for name in names.values():
        (tmp_path / name).write_text("x")
    removed = atomic.remove_dead_temp_files(tmp_path)
    assert [p.name for p in removed] == [names["dead-here"]]
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {names["live-here"], names["dead-elsewhere"], names["not ours"]}
