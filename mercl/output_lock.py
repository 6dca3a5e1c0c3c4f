"""One writer per output folder: ``prepare``, ``train``, ``evaluate``, ``experiment`` and
``predict`` hold a lock on their ``-o`` folder while they run.

The lock is the file ``<folder>/.mercl-lock``, locked with ``flock`` (the kernel drops it when the
holder dies, however it dies) and holding who took it: ``{"host", "pid", "since", "command"}``.

* A second run into the folder refuses in one line naming the holder (host, pid, since when).
* A lock left by a crashed run of this host (its ``flock`` gone, its pid no longer running) is
  taken over, and the console says so.
* A lock naming another host cannot be checked from here (its pid means nothing on this host,
  and not every network file system passes ``flock`` between hosts): the run refuses and says
  which file to delete once that run is known to be gone.

Releasing removes the file (while still holding the ``flock``, so a run waiting on the old file
finds it gone and takes the lock on a fresh one), and the folder too when the run created it and
left it empty (a refused or failed run leaves no empty output folder behind).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mercl.atomic import PRIVATE_MODE, host_name, pid_alive
from mercl.errors import InputFileError, MerclError

log = logging.getLogger(__name__)

LOCK_FILE = ".mercl-lock"
_ATTEMPTS = 5


@dataclass
class Holder:
    """Who holds (or held) an output folder's lock."""

    host: str
    pid: int
    since: str
    command: str = "mercl"

    def describe(self) -> str:
        return f"mercl {self.command} (pid {self.pid} on host {self.host}, since {self.since})"


class OutputFolderLocked(MerclError):
    """Another mercl run writes into the output folder."""


def _read_holder(fd: int) -> Holder | None:
    """The holder recorded in an open lock file; None when it is empty or unreadable."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
        return Holder(str(data["host"]), int(data["pid"]), str(data["since"]), str(data.get("command", "mercl")))
    except (ValueError, TypeError, KeyError):
        return Holder("unknown", -1, "unknown", "(unreadable lock file)")


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _open_locked(path: Path) -> int:
    """An fd of ``path`` under an exclusive ``flock``; refuses if a live run of this host holds it."""
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
        except FileNotFoundError:  # a run that created the folder removed it on release: again
            _make_folder(path.parent)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = holder.describe() if holder else "another mercl run (starting up)"
            raise OutputFolderLocked(f"{path.parent}: another run writes into this folder: {who}; "
                                     "wait for it to finish or use another output folder") from None
        except OSError as exc:
            os.close(fd)
            raise InputFileError(path, f"cannot lock the output folder ({exc.strerror or exc})") from None
        if _same_file(fd, path):
            return fd
        os.close(fd)  # the holder released (and removed) it between our open and flock: again
    raise OutputFolderLocked(f"{path.parent}: the lock file keeps changing hands; another run is starting here")


def _make_folder(folder: Path) -> bool:
    """Create ``folder`` if absent; True if this call created it."""
    if folder.exists() and not folder.is_dir():
        raise InputFileError(folder, "is a file, expected an output folder")
    try:
        folder.mkdir(parents=True)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise InputFileError(folder, f"cannot create the output folder ({exc.strerror or exc})") from None


def acquire(folder: Path, command: str) -> tuple[int, Path]:
    """Take the lock of ``folder`` (created if absent) for ``command``; returns (fd, lock path)."""
    folder = Path(folder)
    _make_folder(folder)
    path = folder / LOCK_FILE
    fd = _open_locked(path)
    previous = _read_holder(fd)
    here = host_name()
    if previous is not None and previous.host != here:
        os.close(fd)
        raise OutputFolderLocked(f"{folder}: another host's run holds this folder: {previous.describe()}; if that "
                                 f"run is gone, delete {path}")
    if previous is not None:
        state = "no longer running" if not pid_alive(previous.pid) else "no longer holding it"
        log.warning("%s: taking over the lock of %s, %s", folder, previous.describe(), state)
    record = {"host": here, "pid": os.getpid(), "since": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    os.fsync(fd)
    return fd, path


def release(fd: int, path: Path, remove_empty_folder: bool = False) -> None:
    """Remove the lock file (still holding its ``flock``), then drop the ``flock``; with
    ``remove_empty_folder``, remove the folder too if nothing else is in it."""
    try:
        if _same_file(fd, path):
            path.unlink(missing_ok=True)
            if remove_empty_folder:
                try:
                    path.parent.rmdir()
                except OSError:
                    pass  # not empty: the run's outputs stay
    finally:
        os.close(fd)


@contextmanager
def output_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` for the ``with`` block (see the module docstring)."""
    folder = Path(folder)
    created = not folder.exists()
    fd, path = acquire(folder, command)
    try:
        yield path
    finally:
        release(fd, path, remove_empty_folder=created)
