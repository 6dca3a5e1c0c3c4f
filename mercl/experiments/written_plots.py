"""Which PNGs in a ``plots/`` folder a run wrote, so that ``mercl report`` embeds those and no others.

A search writes its plots with :func:`record_written_plots` beside them (``plots/written.json``:
the file names). The report embeds only the names listed there that are plain files in that
folder: not a PNG someone else dropped in, not a symlink to a file elsewhere (the HTML report
embeds the bytes, so a link to ``~/.ssh/...`` or another study's figure would travel with it).
A ``plots/`` folder from before the list existed is read by the names the search gives its plots.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from mercl import atomic

WRITTEN_LIST = "written.json"
# What tuning.results.write_plots names its plots (for plots/ folders written before WRITTEN_LIST).
SEARCH_PLOT_NAMES = ("optimization_history.png", "param_importances.png", "parallel_coordinate.png")


def record_written_plots(plots_dir: Path, written: Iterable[str | Path]) -> Path:
    """``plots_dir/written.json``: the file names of the plots this run wrote there."""
    names = sorted({Path(p).name for p in written})
    atomic.write_text(plots_dir / WRITTEN_LIST, json.dumps({"written": names}, indent=1) + "\n")
    return plots_dir / WRITTEN_LIST


def _listed_names(plots_dir: Path) -> list[str]:
    listing = plots_dir / WRITTEN_LIST
    if not listing.is_file() or listing.is_symlink():
        return list(SEARCH_PLOT_NAMES)
    try:
        names = json.loads(listing.read_text()).get("written", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str)]


def written_plots(plots_dir: Path) -> list[Path]:
    """The PNGs of ``plots_dir`` its run wrote: listed, a bare ``.png`` file name, a plain file (no symlink)."""
    found = []
    for name in _listed_names(plots_dir):
        path = plots_dir / name
        if Path(name).name == name and name.endswith(".png") and not path.is_symlink() and path.is_file():
            found.append(path)
    return found


def plot_folders(root: Path) -> list[Path]:
    """Every ``plots/`` folder under ``root`` (symlinked folders are not followed), sorted."""
    folders = []
    for here, dirs, _files in os.walk(root, followlinks=False):
        if Path(here).name == "plots" and not Path(here).is_symlink():
            folders.append(Path(here))
        dirs.sort()
    return sorted(folders)
