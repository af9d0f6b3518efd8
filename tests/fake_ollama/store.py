"""The on-disk model store under OLLAMA_MODELS: manifests, placeholder blobs, partial downloads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import ModelSpec, param_count
from .gotime import go_json
from .names import Name, parse_name

MT_MODEL = "application/vnd.ollama.image.model"
MT_TEMPLATE = "application/vnd.ollama.image.template"
MT_LICENSE = "application/vnd.ollama.image.license"
MT_PARAMS = "application/vnd.ollama.image.params"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class StoreInitError(Exception):
    """The models directory cannot be created or written; str() is the Go-style message."""


@dataclass(frozen=True)
class Blob:
    """One layer (or the config) of a manifest."""

    media_type: str
    digest: str  # "sha256:<hex>"
    size: int  # logical size
    content: bytes | None  # None for the model blob (placeholder written instead)

    @property
    def short(self) -> str:
        """The 12 hex characters shown in pull statuses."""
        return self.digest[7:19]


@dataclass
class LocalModel:
    """A model present in the store, as read from disk."""

    name: Name
    manifest_path: Path
    manifest: dict[str, Any]
    digest: str  # sha256 hex of the manifest file
    modified_ns: int
    size: int
    model_digest: str
    model_path: Path
    config: dict[str, Any]
    meta: dict[str, Any]  # from the model blob placeholder ({} if the blob is missing)
    params: dict[str, Any] = field(default_factory=dict)
    template: str = ""
    license: str = ""

    @property
    def display(self) -> str:
        """DisplayShortest of the on-disk name."""
        return self.name.display_shortest()

    @property
    def blob_present(self) -> bool:
        """The model blob exists on disk."""
        return bool(self.meta)

    @property
    def is_embedding(self) -> bool:
        """Has <arch>.pooling_type."""
        return self.meta.get("kind") == "embedding"

    @property
    def architecture(self) -> str:
        """general.architecture."""
        return str(self.meta.get("architecture") or self.config.get("model_family") or "llama")

    @property
    def context_length(self) -> int:
        """Training context length."""
        return int(self.meta.get("context_length") or 4096)

    @property
    def embedding_length(self) -> int:
        """<arch>.embedding_length."""
        return int(self.meta.get("embedding_length") or 384)

    def capabilities(self) -> list[str]:
        """Capabilities as /api/show derives them."""
        caps = ["embedding"] if self.is_embedding else ["completion"]
        for c in self.config.get("capabilities") or []:
            if c not in caps and c not in ("completion", "embedding"):
                caps.append(str(c))
        return caps

    def details(self, *, with_lengths: bool = False) -> dict[str, Any]:
        """api.ModelDetails (tags adds context/embedding length)."""
        d: dict[str, Any] = {
            "parent_model": "",
            "format": self.config.get("model_format", "gguf"),
            "family": self.config.get("model_family", ""),
            "families": self.config.get("model_families"),
            "parameter_size": self.config.get("model_type", ""),
            "quantization_level": self.config.get("file_type", ""),
        }
        if with_lengths and self.meta:
            d["context_length"] = self.context_length
            d["embedding_length"] = self.embedding_length
        return d

    def model_info(self) -> dict[str, Any]:
        """GGUF KV as /api/show model_info."""
        arch = self.architecture
        m = self.meta
        info: dict[str, Any] = {
            "general.architecture": arch,
            "general.basename": m.get("basename", self.name.model),
            "general.file_type": m.get("file_type", 15),
            "general.parameter_count": m.get("parameter_count", 0),
            "general.quantization_version": 2,
            f"{arch}.attention.head_count": 16,
            f"{arch}.block_count": m.get("block_count", 24),
            f"{arch}.context_length": self.context_length,
            f"{arch}.embedding_length": self.embedding_length,
            "tokenizer.ggml.model": "bert" if self.is_embedding else "gpt2",
            "tokenizer.ggml.tokens": [],
            "tokenizer.ggml.token_type": [],
        }
        if self.is_embedding:
            info[f"{arch}.pooling_type"] = 1
        return dict(sorted(info.items()))

    def runtime(self) -> dict[str, Any]:
        """Runtime knobs stored with the blob."""
        r = self.meta.get("runtime")
        return dict(r) if isinstance(r, dict) else {}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_manifest(spec: ModelSpec) -> tuple[bytes, list[Blob], bytes]:
    """Manifest bytes, its blobs (layers then config), and the model placeholder content."""
    small: list[Blob] = []
    if spec.template:
        c = spec.template.encode()
        small.append(Blob(MT_TEMPLATE, "sha256:" + _sha(c), len(c), c))
    if spec.license:
        c = spec.license.encode()
        small.append(Blob(MT_LICENSE, "sha256:" + _sha(c), len(c), c))
    if spec.parameters:
        c = go_json(spec.parameters).encode()
        small.append(Blob(MT_PARAMS, "sha256:" + _sha(c), len(c), c))
    extra_caps = [c for c in spec.capabilities if c not in ("completion", "embedding")]
    model_digest = "sha256:" + _sha(("fake-ollama-model-blob:" + spec.blob_name).encode())
    config_obj: dict[str, Any] = {
        "model_format": "gguf",
        "model_family": spec.family,
        "model_families": [spec.family],
        "model_type": spec.parameter_size,
        "file_type": spec.quantization_level,
        "renderer": "",
        "parser": "",
    }
    if extra_caps:
        config_obj["capabilities"] = extra_caps
    config_obj["rootfs"] = {
        "type": "layers",
        "diff_ids": [model_digest] + [b.digest for b in small],
    }
    cfg = go_json(config_obj).encode()
    config = Blob(MT_CONFIG, "sha256:" + _sha(cfg), len(cfg), cfg)
    model_size = max(1, spec.size - sum(b.size for b in small) - config.size)
    model = Blob(MT_MODEL, model_digest, model_size, None)
    layers = [model, *small]
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": b.size} for b in layers],
    }
    placeholder = go_json(
        {
            "fake_ollama": "model blob placeholder",
            "blob": spec.blob_name,
            "logical_size": model_size,
            "kind": spec.kind,
            "architecture": spec.architecture,
            "basename": spec.blob_name.split(":")[0].split("/")[-1],
            "context_length": spec.context_length,
            "embedding_length": spec.embedding_length,
            "parameter_count": param_count(spec),
            "file_type": spec.file_type,
            "runtime": spec.runtime(),
        }
    ).encode()
    return go_json(manifest).encode(), [*layers, config], placeholder


class Store:
    """Filesystem layout of OLLAMA_MODELS (§1.3)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.manifests = root / "manifests"
        self.lock = threading.RLock()

    # ----------------------------------------------------------------- init
    def init(self) -> None:
        """Create the directories; raise StoreInitError with a Go-style message."""
        for d in (self.blobs, self.manifests):
            _mkdir_all(d)
        probe = self.blobs / f".fake-ollama-write-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StoreInitError(_go_path_error("mkdir", e, self.blobs)) from e

    # ---------------------------------------------------------------- paths
    def blob_path(self, digest: str) -> Path:
        """blobs/sha256-<hex> for "sha256:<hex>"."""
        return self.blobs / digest.replace(":", "-")

    def partial_path(self, digest: str) -> Path:
        """blobs/sha256-<hex>-partial."""
        return self.blobs / (digest.replace(":", "-") + "-partial")

    def manifest_path(self, name: Name) -> Path:
        """manifests/<host>/<ns>/<model>/<tag>."""
        return self.manifests.joinpath(*name.parts())

    # ---------------------------------------------------------------- reads
    def manifest_names(self) -> list[tuple[Name, Path]]:
        """Every manifest on disk."""
        out: list[tuple[Name, Path]] = []
        if not self.manifests.is_dir():
            return out
        for p in self.manifests.glob("*/*/*/*"):
            if p.is_file():
                host, ns, model, tag = p.relative_to(self.manifests).parts
                out.append((Name(host, ns, model, tag), p))
        return out

    def existing_name(self, name: Name) -> Name:
        """getExistingName: case-insensitive match against manifests, on-disk spelling."""
        if self.manifest_path(name).is_file():
            return name
        fold = name.fold()
        for n, _ in self.manifest_names():
            if n.fold() == fold:
                return n
        return name

    def read(self, name: Name) -> LocalModel | None:
        """The model stored under exactly this name."""
        p = self.manifest_path(name)
        try:
            raw = p.read_bytes()
            st = p.stat()
            manifest = json.loads(raw)
        except (OSError, ValueError):
            return None
        layers = manifest.get("layers") or []
        model_layer = next((la for la in layers if la.get("mediaType") == MT_MODEL), None)
        model_digest = model_layer["digest"] if model_layer else ""
        config: dict[str, Any] = {}
        cfg_digest = (manifest.get("config") or {}).get("digest")
        if cfg_digest:
            try:
                config = json.loads(self.blob_path(cfg_digest).read_bytes())
            except (OSError, ValueError):
                config = {}
        meta: dict[str, Any] = {}
        if model_digest:
            try:
                meta = json.loads(self.blob_path(model_digest).read_bytes())
            except (OSError, ValueError):
                meta = {}
        lm = LocalModel(
            name=name,
            manifest_path=p,
            manifest=manifest,
            digest=_sha(raw),
            modified_ns=st.st_mtime_ns,
            size=sum(int(la.get("size", 0)) for la in layers)
            + int((manifest.get("config") or {}).get("size", 0)),
            model_digest=model_digest,
            model_path=self.blob_path(model_digest) if model_digest else p,
            config=config,
            meta=meta,
        )
        for la in layers:
            mt = la.get("mediaType")
            if mt not in (MT_TEMPLATE, MT_LICENSE, MT_PARAMS):
                continue
            try:
                text = self.blob_path(la["digest"]).read_text(encoding="utf-8")
            except OSError:
                continue
            if mt == MT_TEMPLATE:
                lm.template = text
            elif mt == MT_LICENSE:
                lm.license = text
            else:
                with contextlib.suppress(ValueError):
                    lm.params = dict(json.loads(text))
        return lm

    def find(self, raw_name: str, *, case_insensitive: bool = True) -> LocalModel | None:
        """Resolve a request name to a present model."""
        name = parse_name(raw_name)
        if not name.is_valid():
            return None
        if case_insensitive:
            name = self.existing_name(name)
        return self.read(name)

    def list_models(self) -> list[LocalModel]:
        """All present models, newest first (as /api/tags)."""
        out = [m for n, _ in self.manifest_names() if (m := self.read(n)) is not None]
        out.sort(key=lambda m: m.modified_ns, reverse=True)
        return out

    def referenced(self) -> set[str]:
        """Every digest referenced by a manifest (layers and configs)."""
        refs: set[str] = set()
        for _, p in self.manifest_names():
            try:
                m = json.loads(p.read_bytes())
            except (OSError, ValueError):
                continue
            for la in [*(m.get("layers") or []), m.get("config") or {}]:
                if la.get("digest"):
                    refs.add(la["digest"])
        return refs

    # --------------------------------------------------------------- writes
    def write_blob(self, digest: str, content: bytes) -> None:
        """Write a finished blob atomically and drop its partial file."""
        path = self.blob_path(digest)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(content)
        os.replace(tmp, path)
        with contextlib.suppress(FileNotFoundError):
            self.partial_path(digest).unlink()

    def read_partial(self, digest: str) -> int:
        """Bytes completed by an interrupted download (0 if none)."""
        try:
            return int(self.partial_path(digest).read_text().strip() or "0")
        except (OSError, ValueError):
            return 0

    def write_partial(self, digest: str, completed: int) -> None:
        """Record download progress."""
        p = self.partial_path(digest)
        tmp = p.with_name(p.name + f".tmp{threading.get_ident()}")
        tmp.write_text(str(completed))
        os.replace(tmp, p)

    def write_manifest(self, name: Name, data: bytes) -> None:
        """Write a manifest (creating directories)."""
        with self.lock:
            p = self.manifest_path(name)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, p)

    def install(self, name: Name, spec: ModelSpec) -> bool:
        """Make a model present without a pull; False if it already was."""
        with self.lock:
            if self.manifest_path(name).is_file():
                return False
            manifest, blobs, placeholder = build_manifest(spec)
            for b in blobs:
                if not self.blob_path(b.digest).is_file():
                    self.write_blob(b.digest, b.content if b.content is not None else placeholder)
            self.write_manifest(name, manifest)
            return True

    def remove_unreferenced(self, digests: set[str]) -> list[str]:
        """Delete those blobs that no manifest references any more."""
        with self.lock:
            refs = self.referenced()
            removed = []
            for d in digests - refs:
                try:
                    self.blob_path(d).unlink()
                    removed.append(d)
                except FileNotFoundError:
                    pass
            return removed

    def delete(self, lm: LocalModel) -> None:
        """Remove a manifest and the layers no other manifest uses."""
        with self.lock:
            digests = {la["digest"] for la in lm.manifest.get("layers") or []}
            cfg = (lm.manifest.get("config") or {}).get("digest")
            if cfg:
                digests.add(cfg)
            lm.manifest_path.unlink()
            self._prune_dirs(lm.manifest_path.parent)
            self.remove_unreferenced(digests)

    def copy(self, src: LocalModel, dst: Name) -> None:
        """Copy a manifest byte for byte."""
        self.write_manifest(dst, src.manifest_path.read_bytes())

    def _prune_dirs(self, d: Path) -> None:
        while d != self.manifests and d.is_relative_to(self.manifests):
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent

    def prune(self, max_age_seconds: float = 3600.0) -> int:
        """Startup pruning: unreferenced blobs (and partials) older than max_age."""
        with self.lock:
            refs = self.referenced()
            removed = 0
            now = time.time()
            for p in self.blobs.glob("sha256-*"):
                digest = p.name.replace("sha256-", "sha256:", 1)
                if digest.endswith("-partial"):
                    digest = digest[: -len("-partial")]
                elif digest in refs:
                    continue
                try:
                    if now - p.stat().st_mtime > max_age_seconds:
                        p.unlink()
                        removed += 1
                except OSError:
                    pass
            return removed

    def blob_count(self) -> int:
        """Number of files in blobs/."""
        return sum(1 for _ in self.blobs.glob("sha256-*"))


def _mkdir_all(path: Path) -> None:
    """os.MkdirAll with Go's error reporting (the first path that is not a directory)."""
    missing: list[Path] = []
    p = path
    while True:
        try:
            st_is_dir = p.is_dir()
            exists = p.exists()
        except OSError as e:
            raise StoreInitError(_go_path_error("mkdir", e, p)) from e
        if exists:
            if not st_is_dir:
                raise StoreInitError(f"mkdir {p}: not a directory")
            break
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise StoreInitError(_go_path_error("mkdir", e, d)) from e


def _go_path_error(op: str, e: OSError, fallback: Path) -> str:
    path = e.filename if e.filename else str(fallback)
    msg = (e.strerror or str(e)).strip()
    msg = msg[:1].lower() + msg[1:]
    return f"{op} {path}: {msg}"
