"""What a tier that needs something this machine lacks (the real Ollama kit, the Docker engine)
does: with CI=true it fails, because CI must run every tier and a silent skip would hide that it
ran nothing; elsewhere it skips, saying why."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(tier: str, why: str) -> NoReturn:
    """Fail (CI) or skip (elsewhere) the test asking for `tier` ("real-server", "container")."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{tier} tier: {why}; CI must run it", pytrace=False)
    pytest.skip(f"{tier} tier skipped: {why}")
