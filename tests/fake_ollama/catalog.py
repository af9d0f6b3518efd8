"""The fake registry: which models can be pulled, their sizes, metadata and delays."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from .names import normalize

DEFAULT_PULL_SECONDS = 0.3
DEFAULT_LOAD_SECONDS = 0.1
DEFAULT_UNLOAD_SECONDS = 0.05  # with a GPU; unset on CPU means 0 (see scheduler)
DEFAULT_TOKEN_SECONDS = 0.002

_FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}

DEFAULT_CATALOG: dict[str, dict[str, Any]] = {
    "qwen3-coder:30b": {
        "kind": "completion",
        "size": 18556000000,
        "context_length": 262144,
        "embedding_length": 2048,
        "family": "qwen3moe",
        "parameter_size": "30.5B",
        "quantization_level": "Q4_K_M",
        "vram": 19000000000,
        "capabilities": ["completion", "tools"],
    },
    "devstral:latest": {
        "kind": "completion",
        "size": 14333927918,
        "context_length": 131072,
        "embedding_length": 5120,
        "family": "llama",
        "parameter_size": "23.6B",
        "quantization_level": "Q4_K_M",
        "vram": 15600000000,
        "capabilities": ["completion", "tools"],
    },
    "qwen2.5-coder:1.5b-base": {
        "kind": "completion",
        "size": 986061892,
        "context_length": 32768,
        "embedding_length": 1536,
        "family": "qwen2",
        "parameter_size": "1.5B",
        "quantization_level": "Q4_K_M",
        "vram": 1300000000,
        "capabilities": ["completion", "insert"],
    },
    "nomic-embed-text:latest": {
        "kind": "embedding",
        "size": 274302450,
        "context_length": 2048,
        "embedding_length": 768,
        "family": "nomic-bert",
        "architecture": "nomic-bert",
        "parameter_size": "137M",
        "quantization_level": "F16",
        "vram": 300000000,
    },
    "llama3.2:latest": {
        "kind": "completion",
        "size": 2019393189,
        "context_length": 131072,
        "embedding_length": 3072,
        "family": "llama",
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
        "vram": 2500000000,
        "capabilities": ["completion", "tools"],
    },
    "llama3.2:1b": {
        "kind": "completion",
        "size": 1321098329,
        "context_length": 131072,
        "embedding_length": 2048,
        "family": "llama",
        "parameter_size": "1.2B",
        "quantization_level": "Q8_0",
        "vram": 1700000000,
        "capabilities": ["completion", "tools"],
    },
    "all-minilm:latest": {
        "kind": "embedding",
        "size": 45960996,
        "context_length": 512,
        "embedding_length": 384,
        "family": "bert",
        "architecture": "bert",
        "parameter_size": "23M",
        "quantization_level": "F16",
        "vram": 60000000,
    },
}


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry, with defaults filled in."""

    name: str  # normalised display name (lower case), e.g. "llama3.2:latest"
    kind: str
    size: int
    context_length: int
    embedding_length: int
    family: str
    architecture: str
    parameter_size: str
    quantization_level: str
    vram: int
    pull_seconds: float
    load_seconds: float
    unload_seconds: float | None  # None: the scheduler's default for the server's GPU
    token_seconds: float
    capabilities: tuple[str, ...]
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str = ""
    license: str = ""
    revision: str = ""
    alias_of: str | None = None
    blob_name: str = ""  # whose model blob this is (alias target or self)

    @property
    def is_embedding(self) -> bool:
        """Embedding model (has <arch>.pooling_type)."""
        return self.kind == "embedding"

    @property
    def file_type(self) -> int:
        """GGUF general.file_type."""
        return _FILE_TYPES.get(self.quantization_level.upper(), 15)

    def runtime(self) -> dict[str, Any]:
        """Values stored in the model blob placeholder and used at load time."""
        return {
            "vram": self.vram,
            "load_seconds": self.load_seconds,
            "unload_seconds": self.unload_seconds,
            "token_seconds": self.token_seconds,
        }


def _param_count(ps: str) -> int:
    ps = ps.strip().upper()
    mult = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}.get(ps[-1:], 1)
    try:
        return int(float(ps.rstrip("KMBT")) * mult)
    except ValueError:
        return 0


def build_spec(name: str, raw: dict[str, Any], base: ModelSpec | None = None) -> ModelSpec:
    """Fill defaults for one entry (base = alias target, whose values are inherited)."""

    def get(key: str, default: Any) -> Any:
        if key in raw:
            return raw[key]
        if base is not None:
            return getattr(base, key)
        return default

    kind = str(get("kind", "completion"))
    size = int(get("size", 1_000_000_000))
    family = str(get("family", "llama" if kind == "completion" else "bert"))
    caps_default: list[str] = ["embedding"] if kind == "embedding" else ["completion"]
    caps = tuple(str(c) for c in get("capabilities", caps_default))
    if kind == "embedding":
        caps = tuple(c for c in caps if c != "completion") or ("embedding",)
        if "embedding" not in caps:
            caps = ("embedding", *caps)
    elif "completion" not in caps:
        caps = ("completion", *caps)
    template_default = "" if kind == "embedding" else "{{ .System }}\n{{ .Prompt }}"
    return ModelSpec(
        name=normalize(name),
        kind=kind,
        size=size,
        context_length=int(get("context_length", 4096 if kind == "completion" else 512)),
        embedding_length=int(get("embedding_length", 2048 if kind == "completion" else 384)),
        family=family,
        architecture=str(get("architecture", family)),
        parameter_size=str(get("parameter_size", "1B")),
        quantization_level=str(get("quantization_level", "Q4_K_M")),
        vram=int(get("vram", int(size * 1.1) + 100_000_000)),
        pull_seconds=float(get("pull_seconds", DEFAULT_PULL_SECONDS)),
        load_seconds=float(get("load_seconds", DEFAULT_LOAD_SECONDS)),
        unload_seconds=None
        if get("unload_seconds", None) is None
        else float(get("unload_seconds", None)),
        token_seconds=float(get("token_seconds", DEFAULT_TOKEN_SECONDS)),
        capabilities=caps,
        parameters=dict(get("parameters", {})),
        template=str(get("template", template_default)),
        license=str(get("license", "FAKE MODEL LICENSE\nFor tests only.\n")),
        revision=str(get("revision", "")),
        alias_of=normalize(str(raw["alias_of"])) if raw.get("alias_of") else None,
        blob_name=(
            base.blob_name
            if base is not None
            else normalize(name) + "#" + str(raw.get("revision", ""))
        ),
    )


def param_count(spec: ModelSpec) -> int:
    """general.parameter_count derived from parameter_size."""
    return _param_count(spec.parameter_size)


class Catalog:
    """Catalog file (FAKE_OLLAMA_CATALOG) re-read when it changes; else the default."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._specs: dict[str, ModelSpec] = {}
        if not path:
            self._specs = self._build(DEFAULT_CATALOG)

    @staticmethod
    def _build(raw: dict[str, dict[str, Any]]) -> dict[str, ModelSpec]:
        by_norm = {normalize(k): (k, v) for k, v in raw.items()}
        out: dict[str, ModelSpec] = {}

        def resolve(norm: str, depth: int = 0) -> ModelSpec:
            if norm in out:
                return out[norm]
            key, entry = by_norm[norm]
            base = None
            target = entry.get("alias_of")
            if target and depth < 10 and normalize(str(target)) in by_norm:
                base = resolve(normalize(str(target)), depth + 1)
            spec = build_spec(key, entry, base)
            out[norm] = spec
            return spec

        for norm in by_norm:
            resolve(norm)
        return out

    def _reload(self) -> None:
        if not self._path:
            return
        try:
            st = os.stat(self._path)
        except OSError:
            self._specs, self._stamp = {}, None
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return
        with open(self._path, encoding="utf-8") as f:
            data = json.load(f)
        models: dict[str, dict[str, Any]] = dict(data.get("models", data))
        models.pop("include_defaults", None)
        if data.get("include_defaults"):
            models = {**DEFAULT_CATALOG, **models}
        self._specs = self._build(models)
        self._stamp = stamp

    def get(self, name: str) -> ModelSpec | None:
        """Entry for a (normalised, case-insensitive) model name."""
        with self._lock:
            self._reload()
            return self._specs.get(normalize(name))

    def all(self) -> dict[str, ModelSpec]:
        """All entries by normalised name."""
        with self._lock:
            self._reload()
            return dict(self._specs)


def default_spec(name: str) -> ModelSpec:
    """A spec for a pre-seeded model that is not in the catalog."""
    return build_spec(name, {})
