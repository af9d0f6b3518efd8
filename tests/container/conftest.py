"""Fixtures for the container tier: the project's Dockerfile built and run on a real Docker
Engine (20.10, the kit's private `engine`, its state in a temp dir).

Found like the real-server tier: PRELOADER_REAL_OLLAMA names the kit's `bin/ollama`, and the
engine script sits beside it (`../engine`). Skipped locally without it; with CI=true it fails.
The image is built once per run; every container is removed and the engine stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from container_harness import Engine
from real_harness import Kit, Registry, find_kit, free_port_pair

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    path, why = find_kit()
    engine = None if path is None else path.parent.parent / "engine"
    if path is None or engine is None or not engine.is_file():
        why = why or f"{engine} is missing"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"container tier: {why}; CI must run it", pytrace=False)
        pytest.skip(f"container tier skipped: {why}")
    return Kit.prepare(path, tmp_path_factory.mktemp("containerkit"))


@pytest.fixture(scope="session")
def engine(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The private engine with ollama/ollama:TAG; stopped (and its containers removed) after."""
    eng = Engine(kit.root / "engine", tmp_path_factory.mktemp("engine"))
    eng.start()
    try:
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="session")
def registry(kit: Kit) -> Iterator[Registry]:
    reg = Registry(kit, free_port_pair()).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def app_image(engine: Engine) -> str:
    """The Dockerfile's `app` stage, built unchanged, once."""
    tag = "ollama-preloader:container-tier"
    engine.build(REPO, tag, target="app")
    return tag


@pytest.fixture(scope="session")
def baked_image(engine: Engine, app_image: str, registry: Registry) -> str:
    """The `baked` stage with tiny-embed, pulled from the kit's registry at build time."""
    tag = "ollama-preloader:container-tier-baked"
    model = registry.name("tiny-embed") + "?insecure=true"
    engine.build(REPO, tag, target="baked", build_args={"PRELOAD_MODELS": model})
    return tag


@pytest.fixture
def name(engine: Engine) -> Iterator[str]:
    """A container name; the container is removed after the test whatever happened."""
    value = f"preloader-{uuid.uuid4().hex[:10]}"
    yield value
    subprocess.run(
        [*engine.docker, "rm", "-f", "-v", value], capture_output=True, check=False, env=engine.env
    )
