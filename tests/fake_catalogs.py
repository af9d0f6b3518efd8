"""Small model catalogs for the fake, with short delays so tests stay quick."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GB = 1_000_000_000


def model(kind: str = "completion", size: float = 1.0, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": kind,
        "size": int(size * GB),
        "pull_seconds": 0.3,
        "load_seconds": 0.1,
        "context_length": 32768 if kind == "completion" else 2048,
    }
    entry.update(extra)
    return entry


SMALL = {
    "qwen3-coder:30b": model(size=18.6, family="qwen3moe", parameter_size="30.5B"),
    "devstral:latest": model(size=14.3, family="mistral3"),
    "qwen2.5-coder:1.5b-base": model(size=1.0, family="qwen2"),
    "nomic-embed-text:latest": model("embedding", size=0.27, family="nomic-bert"),
    "llama3.2:latest": model(size=2.0, family="llama"),
    "all-minilm:latest": model("embedding", size=0.05, family="bert"),
}


def write_catalog(path: Path, models: dict[str, dict[str, Any]] | None = None) -> str:
    path.write_text(json.dumps({"models": models or SMALL}))
    return str(path)
