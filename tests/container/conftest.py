"""Fixtures for the container tier: the project's Dockerfile built and run on a real Docker
Engine (20.10, the kit's private `engine`; container_harness says where its state lives).

Found like the real-server tier: PRELOADER_ENGINE names the kit's `engine` script, or it is the
one beside the kit that PRELOADER_REAL_OLLAMA names (`./scripts/test` sets both when the kit is
beside the checkout). Skipped locally without it; with CI=true a missing engine fails the tier.
The images are built once per session and shared; every container is removed and the engine
stopped (its state deleted) at the end. Every test of the tier is marked `container` and uses
the one session engine, so a parallel run must keep the tier in one worker.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from container_harness import Engine, Ports, find_engine
from preloader_harness import free_port
from real_harness import Kit, Registry, find_kit
from tier_gate import unavailable

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "container: the container tier (one session engine)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tier (`-m container` / `-m "not container"`); tests/conftest.py keeps it in
    the one xdist group "engine"."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.container)


@pytest.fixture(scope="session")
def engine_script() -> Path:
    path, why = find_engine()
    if path is None:
        unavailable("container", why)
    return path


@pytest.fixture(scope="session")
def kit(engine_script: Path, tmp_path_factory: pytest.TempPathFactory) -> Kit:
    """The kit the engine belongs to (its registry serves the models the tests pull)."""
    ollama = engine_script.parent / "bin" / "ollama"
    path, why = find_kit()
    if path is None and not ollama.is_file():
        unavailable("container", why)
    return Kit.prepare(path or ollama, tmp_path_factory.mktemp("containerkit"))


@pytest.fixture(scope="session")
def engine(engine_script: Path) -> Iterator[Engine]:
    """The private engine with ollama/ollama:TAG; stopped (and its containers removed) after."""
    eng = Engine(engine_script)
    try:
        eng.start()
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="session")
def app_image(engine: Engine) -> str:
    """The Dockerfile's `app` stage, built unchanged, once."""
    tag = "ollama-preloader:container-tier"
    engine.build(REPO, tag, target="app")
    return tag


@pytest.fixture(scope="session")
def baked_image(engine: Engine, app_image: str, registry: Registry) -> str:
    """The `baked` stage with tiny-embed, pulled from the kit's registry at build time; the
    bake's temporary server on a free port (the build shares the host's network)."""
    tag = "ollama-preloader:container-tier-baked"
    args = {
        "PRELOAD_MODELS": registry.name("tiny-embed") + "?insecure=true",
        "BAKE_OLLAMA_HOST": f"127.0.0.1:{free_port()}",
    }
    engine.build(REPO, tag, target="baked", build_args=args)
    return tag


@pytest.fixture
def ports() -> Ports:
    return Ports(api=free_port(), health=free_port())


@pytest.fixture
def name(engine: Engine) -> Iterator[str]:
    """A container name; the container is removed after the test whatever happened."""
    value = f"preloader-{uuid.uuid4().hex[:10]}"
    yield value
    subprocess.run(
        [*engine.docker, "rm", "-f", "-v", value], capture_output=True, check=False, env=engine.env
    )
