"""Fixtures the test modules share, and the layout of the suite.

The suite is grouped by what a test needs to run:

* ``tests/unit/``: one module at a time, no cluster, no multi-step pipeline (seconds);
* ``tests/integration/``: the commands end to end on real small files (prepare, train,
  evaluate, experiment, predict), real training that must reach a stated accuracy;
* ``tests/cluster/``: real Ray clusters on loopback (search trials, worker kill, driver
  restart, placement, the fake autoscaler); most are marked ``slow``.

``make test-fast`` runs everything not marked ``slow``. The shared builders are plain
functions in ``tests/builders.py``; the datasets they make once per session are fixtures here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import build_demo_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """The 4-subject x 8-clip demo study, prepared once per session (:func:`builders.build_demo_dataset`)."""
    return build_demo_dataset(tmp_path_factory.getbasetemp())


def pytest_collection_modifyitems(config, items):
    """Mark every test with its group (``unit``, ``integration``, ``cluster``) from its folder."""
    for item in items:
        group = Path(str(item.fspath)).parent.name
        if group in ("unit", "integration", "cluster"):
            item.add_marker(getattr(pytest.mark, group))
