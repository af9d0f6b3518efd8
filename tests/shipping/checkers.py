"""Run the static checkers the test extra installs; a missing checker fails, never skips."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """The checker's executable: next to this Python first (the venv), then on PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return found


def run_tool(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a checker from the repository root and capture what it says."""
    return subprocess.run(
        [tool(name), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
