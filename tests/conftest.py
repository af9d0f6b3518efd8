"""Shared test setup: `tests/` is on sys.path (pyproject), so `fake_ollama` imports directly.

Parallel runs (pytest-xdist, `./scripts/test` passes `-n N --dist loadgroup`): every test gets
its own ports (fake_ollama.harness.free_port: a block per worker), temporary folders, HOME and
model store, and finds processes only through what it started (a process group, its HOME).
Tests that need something machine-wide to themselves share an `xdist_group`, so one worker
runs them one after the other: the container tier (tests/container) is put in the group
"engine" here, and any other test can say `@pytest.mark.xdist_group("engine")`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from real_harness import Kit, Registry, find_kit, free_port_pair

TESTS = Path(__file__).resolve().parent
ENGINE_GROUP = "engine"  # one Docker engine: the container tier runs on one worker
SINGLE_WORKER_DIRS = {"container": ENGINE_GROUP}


def pytest_report_header(config: pytest.Config) -> str:
    """One visible line saying whether the real-server tier (tests/real) runs, and why not."""
    path, why = find_kit()
    if path is None:
        return f"real-server tier: SKIPPED, {why}"
    return f"real-server tier: runs against {path}"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            top = item.path.resolve().relative_to(TESTS).parts[0]
        except (ValueError, IndexError):
            continue
        group = SINGLE_WORKER_DIRS.get(top)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures (an engine) are set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a grouped test that xdist did not group: loadgroup keeps a group on one worker by
    adding `@group` to its tests' ids, which pytest-xdist 3.8 cannot do under pytest 9.2. The
    container tier then ran on several workers at once, with an engine each (and apt-get runs
    that fail on each other on a machine without docker.io yet)."""
    marker = item.get_closest_marker("xdist_group")
    if marker is None or not item.config.getoption("loadgroup", default=False):
        return
    if "@" not in item.nodeid:
        pytest.fail(
            f"in the xdist group {marker.args[0]!r}, but not grouped by pytest-xdist (its id "
            "has no '@group'): this pytest and pytest-xdist do not keep a group on one "
            "worker; install the versions pyproject.toml allows",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def registry(kit: Kit) -> Iterator[Registry]:
    """A plain-HTTP registry with the kit's three models (pulls need insecure), for the real
    and the container tier: `kit` is each tier's own fixture (tests/real, tests/container).
    One per session: a run of both tiers shares the first one started (the same kit)."""
    reg = Registry(kit, free_port_pair()).start()
    yield reg
    reg.stop()
