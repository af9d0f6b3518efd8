"""Fixtures for testing the fake `ollama` itself: a factory of started fake servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_ollama.harness import FakeOllama, start_fake

GB = 1_000_000_000

CATALOG: dict[str, dict[str, Any]] = {
    "llama3.2": {
        "size": 2 * GB,
        "context_length": 131072,
        "capabilities": ["completion", "tools"],
        "pull_seconds": 0.15,
        "load_seconds": 0.05,
        "vram": int(2.5 * GB),
    },
    "llama3.2:1b": {
        "size": int(1.3 * GB),
        "context_length": 131072,
        "pull_seconds": 0.15,
        "load_seconds": 0.05,
        "vram": int(1.7 * GB),
    },
    "qwen2.5-coder:1.5b-base": {
        "size": 1 * GB,
        "context_length": 32768,
        "capabilities": ["completion", "insert"],
        "pull_seconds": 0.15,
        "load_seconds": 0.05,
        "vram": int(1.3 * GB),
    },
    "nomic-embed-text": {
        "kind": "embedding",
        "size": 274302450,
        "context_length": 2048,
        "embedding_length": 768,
        "family": "nomic-bert",
        "architecture": "nomic-bert",
        "pull_seconds": 0.15,
        "load_seconds": 0.05,
        "vram": 300_000_000,
    },
    "all-minilm": {
        "kind": "embedding",
        "size": 45960996,
        "context_length": 512,
        "embedding_length": 384,
        "family": "bert",
        "pull_seconds": 0.1,
        "load_seconds": 0.05,
        "vram": 60_000_000,
    },
    "llama-alias": {"alias_of": "llama3.2"},
}

MakeFake = Callable[..., FakeOllama]


@pytest.fixture
def make_fake(tmp_path: Path) -> Iterator[MakeFake]:
    """Start fake servers (test catalog by default); all are cleaned up afterwards."""
    fakes: list[FakeOllama] = []

    def make(**kwargs: Any) -> FakeOllama:
        kwargs.setdefault("catalog", CATALOG)
        fake = start_fake(tmp_path / f"fake{len(fakes)}", **kwargs)
        fakes.append(fake)
        return fake

    yield make
    for f in fakes:
        f.cleanup()
