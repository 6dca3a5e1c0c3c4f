"""Lines a process says once: facts a per-unit loop would otherwise repeat for every unit.

``mercl experiment --workers 1`` builds a model for each of its hundreds of units; "video
backbone ...: random init" and "backbone features: using cache ..." are true of the whole
run, so the console gets them once (later repeats go to DEBUG, shown by ``--verbose``).
"""

from __future__ import annotations

import logging

_SAID: set[tuple[str, str]] = set()


def info_once(log: logging.Logger, msg: str, *args) -> None:
    """``log.info(msg, *args)`` the first time this process says exactly that line; DEBUG after."""
    key = (log.name, msg % args if args else msg)
    if key in _SAID:
        log.debug(msg, *args)
        return
    _SAID.add(key)
    log.info(msg, *args)
