"""Atomic, private file writes: a file is written under a temporary name, flushed to disk and
renamed into place (``os.replace``), so a reader never sees a half-written output that looks
complete.

Temporary names are ``<name>.tmp-<pid>.<random>.<host>``: unique across processes and across
hosts that share a folder, and they tell clean-up whose they are
(:func:`remove_dead_temp_files` removes only this host's files of processes no longer running).

Files are created without world-read bits (``0o640`` under the usual umask; a stricter umask
stays stricter): the outputs hold EEG features, subject ids and per-subject results.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

PRIVATE_MODE = 0o640
TMP_MARK = ".tmp-"
_TMP_NAME = re.compile(r"\.tmp-(\d+)\.([0-9a-f]+)\.([A-Za-z0-9.-]+?)(?:\.(?:png|edf|mp4))?$")


def host_name() -> str:
    """This machine's host name as it appears in temporary and lock file names."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"


def tmp_path(path: Path, suffix: str = "") -> Path:
    """The temporary name a file is written under before ``os.replace``:
    ``<name>.tmp-<pid>.<8 random hex>.<host><suffix>`` (``suffix``: for writers that pick the
    format from the extension, ``.png``, ``.edf`` or ``.mp4``)."""
    path = Path(path)
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}.{secrets.token_hex(4)}.{host_name()}{suffix}")


def tmp_owner(path: Path) -> tuple[int, str] | None:
    """(pid, host) of a temporary file named by :func:`tmp_path`; None for any other name."""
    match = _TMP_NAME.search(Path(path).name)
    return (int(match.group(1)), match.group(3)) if match else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a process of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files under ``folder`` that this host's dead processes left behind.

    Another host's files, a live process's files and names this module did not make are kept.
    Returns the removed paths.
    """
    removed = []
    here = host_name()
    for tmp in Path(folder).rglob(f"*{TMP_MARK}*"):
        owner = tmp_owner(tmp)
        if owner is None or owner[1] != here:
            continue
        if owner[0] != os.getpid() and pid_alive(owner[0]):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _create_private(tmp: Path) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system syncs a directory
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """Call ``write(tmp)``, fsync ``tmp`` and rename it to ``path``; the temporary file never
    outlives a failure. ``tmp`` exists (empty, mode 0o640) when ``write`` is called."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path, suffix)
    try:
        _create_private(tmp)
        write(tmp)
        mode = tmp.stat().st_mode & 0o777
        if mode & 0o007:  # a writer that re-created the file: take the world bits off again
            os.chmod(tmp, mode & ~0o007)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent) + "\n")
