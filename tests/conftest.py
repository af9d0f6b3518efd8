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


@pytest.fixture(scope="session")
def registry(kit: Kit) -> Iterator[Registry]:
    """A plain-HTTP registry with the kit's three models (pulls need insecure), for the real
    and the container tier: `kit` is each tier's own fixture (tests/real, tests/container).
    One per session: a run of both tiers shares the first one started (the same kit)."""
    reg = Registry(kit, free_port_pair()).start()
    yield reg
    reg.stop()
