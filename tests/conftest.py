"""Shared test setup: `tests/` is on sys.path (pyproject), so `fake_ollama` imports directly."""

from __future__ import annotations

import pytest
from real_harness import find_kit


def pytest_report_header(config: pytest.Config) -> str:
    """One visible line saying whether the real-server tier (tests/real) runs, and why not."""
    path, why = find_kit()
    if path is None:
        return f"real-server tier: SKIPPED, {why}"
    return f"real-server tier: runs against {path}"
