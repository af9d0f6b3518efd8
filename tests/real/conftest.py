"""Fixtures for the real-server tier: the real CLI against the real Ollama of ../shared/realollama.

The tier runs when PRELOADER_REAL_OLLAMA names the kit's `bin/ollama` (`./scripts/test` and
`.ci/run` set it when the kit is beside the checkout). Without it the tier is skipped locally;
with CI=true a missing server fails every test of the tier instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from real_harness import Kit, RealLauncher, Registry, build_template_store, find_kit, free_port_pair
from tier_gate import unavailable


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    """The real Ollama kit, repaired into a temporary copy if its symlinks were flattened."""
    path, why = find_kit()
    if path is None:
        unavailable("real-server", why)
    return Kit.prepare(path, tmp_path_factory.mktemp("realkit"))


@pytest.fixture(scope="session")
def tls_registry(kit: Kit) -> Iterator[Registry]:
    """A TLS registry with a private CA; `real` passes the CA to Ollama as SSL_CERT_FILE."""
    reg = Registry(kit, free_port_pair(), tls=True).start()
    yield reg
    reg.stop()


@pytest.fixture
def own_registry(kit: Kit) -> Iterator[Registry]:
    """A plain registry of this test's own, which it may stop and start again."""
    reg = Registry(kit, free_port_pair())
    yield reg
    if reg.running:
        reg.stop()


@pytest.fixture
def tls_own_registry(kit: Kit, tls_registry: Registry) -> Iterator[Registry]:
    """A TLS registry of this test's own, not started yet, which it may stop and start again;
    it shares the session's CA, which `real` already gives Ollama."""
    assert tls_registry.ca.exists()
    reg = Registry(kit, free_port_pair(), tls=True)
    yield reg
    if reg.running:
        reg.stop()


@pytest.fixture(scope="session")
def template_store(
    kit: Kit, tls_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return build_template_store(kit, tls_registry, tmp_path_factory.mktemp("template"))


@pytest.fixture
def real(
    tmp_path: Path, kit: Kit, tls_registry: Registry, template_store: Path
) -> Iterator[RealLauncher]:
    """Starts supervisors with the real `ollama` on PATH, an empty store, and the TLS registry."""
    launch = RealLauncher(tmp_path, kit=kit, registry=tls_registry, template_store=template_store)
    yield launch
    launch.cleanup()
