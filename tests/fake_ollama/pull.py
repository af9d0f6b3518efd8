"""`POST /api/pull` (§6): shared per-digest downloads with resumable partial files."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .catalog import Catalog
from .envconfig import Settings
from .eventlog import Logger
from .faults import Faults
from .names import Name
from .store import Blob, Store, build_manifest

NOT_FOUND = "pull model manifest: file does not exist"
# Go's net/http and crypto/x509 texts, as Ollama v0.33 streams them (realollama README).
PLAIN_HTTP = "http: server gave HTTP response to HTTPS client"
UNKNOWN_CA = "tls: failed to verify certificate: x509: certificate signed by unknown authority"
HTTPS_ONLY = "pull model manifest: 400: Client sent an HTTP request to an HTTPS server.\n"
DEFAULT_PULL_FAIL = "max retries exceeded: unexpected EOF"
TICK = 0.06


class PullError(Exception):
    """A pull failure; str() is the `error` text."""


class ClientGone(Exception):
    """The HTTP client went away."""


class Download:
    """One blob being downloaded; shared by every pull waiting on the same digest."""

    def __init__(
        self,
        store: Store,
        blob: Blob,
        *,
        content: bytes,
        rate: float,
        min_seconds: float,
        fail_at: int | None,
        fail_message: str,
    ) -> None:
        self.store = store
        self.blob = blob
        self.content = content
        self.total = blob.size
        self.completed = min(store.read_partial(blob.digest), blob.size)
        self.rate = rate
        self.min_seconds = min_seconds
        self.fail_at = fail_at
        self.fail_message = fail_message
        self.done = threading.Event()
        self.error: str | None = None
        self.waiters = 0
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start_bytes = self.completed
        remaining = self.total - start_bytes
        duration = max(remaining / self.rate if self.rate > 0 else 0.0, self.min_seconds)
        t0 = time.monotonic()
        last_write = 0.0
        try:
            while True:
                if self.cancel.is_set():
                    self.store.write_partial(self.blob.digest, self.completed)
                    self.error = "context canceled"
                    return
                el = time.monotonic() - t0
                frac = 1.0 if duration <= 0 else min(1.0, el / duration)
                self.completed = start_bytes + int(remaining * frac)
                if self.fail_at is not None and self.completed >= self.fail_at:
                    self.completed = max(start_bytes, self.fail_at)
                    self.store.write_partial(self.blob.digest, self.completed)
                    self.error = self.fail_message
                    return
                if frac >= 1.0:
                    self.completed = self.total
                    self.store.write_blob(self.blob.digest, self.content)
                    return
                if el - last_write >= TICK / 2:
                    self.store.write_partial(self.blob.digest, self.completed)
                    last_write = el
                time.sleep(min(0.01, max(0.0, duration - el)))
        except OSError as e:
            self.error = str(e)
        finally:
            self.done.set()


class Puller:
    """Runs pulls against the catalog and the store."""

    def __init__(
        self, settings: Settings, store: Store, catalog: Catalog, faults: Faults, log: Logger
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.faults = faults
        self.log = log
        self._lock = threading.Lock()
        self._downloads: dict[str, Download] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.attempts: collections.Counter[str] = collections.Counter()

    def _join(
        self, blob: Blob, content: bytes, rate: float, fail_at: int | None, msg: str
    ) -> Download:
        with self._lock:
            d = self._downloads.get(blob.digest)
            if d is not None and d.cancel.is_set():
                d.done.wait(2.0)
            if d is None or d.done.is_set():
                d = Download(
                    self.store,
                    blob,
                    content=content,
                    rate=rate,
                    min_seconds=self.settings.scaled(TICK) * 1.5,
                    fail_at=fail_at,
                    fail_message=msg,
                )
                self._downloads[blob.digest] = d
                d.waiters += 1
                d.thread.start()
            else:
                d.waiters += 1
            return d

    def _leave(self, d: Download) -> None:
        with self._lock:
            d.waiters -= 1
            if d.waiters <= 0 and not d.done.is_set():
                d.cancel.set()
            if d.done.is_set() and self._downloads.get(d.blob.digest) is d:
                del self._downloads[d.blob.digest]

    def _registry_refusal(self, name: Name, insecure: bool) -> str | None:
        """The error a registry set up by the `registry` fault gives this pull, if any.

        `insecure` makes Ollama speak plain HTTP to the registry; a private CA is trusted
        when SSL_CERT_FILE (read by Go's crypto/x509 in `ollama serve`) names a file.
        """
        kind = self.faults.registry(name.host)
        host, namespace, model, tag = name.parts()
        url = f"https://{host}/v2/{namespace}/{model}/manifests/{tag}"
        if kind == "http" and not insecure:
            return f'pull model manifest: Get "{url}": {PLAIN_HTTP}'
        if kind == "private-ca":
            if insecure:
                return HTTPS_ONLY
            if not os.path.isfile(os.environ.get("SSL_CERT_FILE", "")):
                return f'pull model manifest: Get "{url}": {UNKNOWN_CA}'
        return None

    def pull(
        self,
        name: Name,
        emit: Callable[[dict[str, Any]], None],
        is_gone: Callable[[], bool],
        *,
        insecure: bool = False,
    ) -> None:
        """Stream the pull of name through emit; raise PullError or ClientGone."""
        s = self.settings
        tick = s.scaled(TICK)
        display = name.display_shortest()
        with self._lock:
            self.attempts[display] += 1
        emit({"status": "pulling manifest"})
        time.sleep(min(tick, 0.05))
        refusal = self._registry_refusal(name, insecure)
        if refusal is not None:
            raise PullError(refusal)
        spec = self.catalog.get(display)
        if spec is None:
            raise PullError(NOT_FOUND)
        fault = self.faults.take("pull_fail", display, model=True)
        manifest, blobs, placeholder = build_manifest(spec)
        old = self.store.read(name)
        old_digests: set[str] = set()
        if old is not None:
            old_digests = {la["digest"] for la in old.manifest.get("layers") or []}
            cfg = (old.manifest.get("config") or {}).get("digest")
            if cfg:
                old_digests.add(cfg)
        total_bytes = sum(b.size for b in blobs)
        pull_s = s.scaled(spec.pull_seconds)
        rate = total_bytes / pull_s if pull_s > 0 else 0.0
        model_blob = blobs[0]
        for blob in blobs:
            content = blob.content if blob.content is not None else placeholder
            path = self.store.blob_path(blob.digest)
            fail_here = fault is not None and blob is model_blob
            if path.is_file():
                emit(_progress(blob, blob.size))
                if fail_here:
                    assert fault is not None
                    raise PullError(str(fault.get("message", DEFAULT_PULL_FAIL)))
                continue
            fail_at = None
            msg = ""
            if fail_here:
                assert fault is not None
                frac = float(fault.get("after_fraction", 0.5))
                fail_at = max(1, int(blob.size * frac))
                msg = str(fault.get("message", DEFAULT_PULL_FAIL))
            d = self._join(blob, content, rate, fail_at, msg)
            try:
                # The layer's first line as the download starts, as Ollama sends it: without
                # it, a download that ends (or fails) within a tick would name no layer at all.
                emit(_progress(blob, d.completed))
                while not d.done.wait(tick):
                    if is_gone():
                        raise ClientGone()
                    emit(_progress(blob, d.completed))
            finally:
                self._leave(d)
            if d.error is not None:
                raise PullError(d.error)
        emit({"status": "verifying sha256 digest"})
        time.sleep(min(tick, 0.02))
        emit({"status": "writing manifest"})
        self.store.write_manifest(name, manifest)
        new_digests = {b.digest for b in blobs}
        if old_digests - new_digests and not s.noprune:
            emit({"status": "removing unused layers"})
            self.store.remove_unreferenced(old_digests - new_digests)
        with self._lock:
            self.counts[display] += 1
        emit({"status": "success"})


def _progress(blob: Blob, completed: int) -> dict[str, Any]:
    p: dict[str, Any] = {"status": f"pulling {blob.short}", "digest": blob.digest}
    if blob.size:
        p["total"] = blob.size
    if completed:
        p["completed"] = completed
    return p
