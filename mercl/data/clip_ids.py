"""A stimulus id names a clip inside the stimuli folder, and nothing outside it.

A clip is ``<stimuli folder>/<stimulus id>.<ext>`` (:func:`mercl.data.prepare.find_clip`).
An id taken from a user's manifest such as ``../x`` or ``/home/u/x`` would make that path
leave the folder (``Path / "/home/u/x.mp4"`` is the absolute path itself), so prepare would
read, fingerprint and embed a file the user never put among the stimuli.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from mercl.errors import InputFileError


def check_stimulus_id(stimuli_dir: Path, stimulus: str) -> None:
    """Raise a one-line :class:`InputFileError` if ``stimulus`` is an absolute path or climbs
    out of ``stimuli_dir`` with ``..``; ids with sub-folders (``set1/A``) stay allowed."""
    posix, windows = PurePosixPath(stimulus), PureWindowsPath(stimulus)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or stimulus.startswith("~"):
        where = "is an absolute path"
    elif ".." in posix.parts or ".." in windows.parts:
        where = "climbs out with '..'"
    else:
        return
    raise InputFileError(
        stimuli_dir, f"stimulus id {stimulus[:80]!r} {where}: its clip would lie outside this folder of stimulus clips"
    )
