"""Fixtures for integration tests: the real CLI against the fake `ollama` on PATH."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from preloader_harness import Launcher


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Starts supervisors with an isolated model store, port and fake request log."""
    launch = Launcher(tmp_path)
    yield launch
    launch.cleanup()
