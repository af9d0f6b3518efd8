"""Noticing a hand `ollama pull` of a declared model soon, without asking Ollama anything.

`run` sees a pull in Ollama's own log; `watch` cannot, and /api/ps does not change (the old
runner keeps its digest until something loads the new copy), so it would notice only at the
/api/tags refresh (PRELOADER_REFRESH_INTERVAL). When the server's models directory is visible
here (a local server, or the store mounted into the sidecar), a pull rewrites the model's
manifest file: a stat of each declared model's manifest at every watch tick costs no request,
and a change makes the next cycle read /api/tags. Without the store the refresh is all there is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ollama_preloader.ollama.names import ModelName
from ollama_preloader.ollama.registry import store_dir

Stamp = tuple[int, int, int] | None  # (inode, size, mtime ns) of a manifest; None: absent


def server_store(environment: Mapping[str, str]) -> Path | None:
    """The server's models directory, when this machine sees it: from the child's environment
    (`run`), else OLLAMA_MODELS or HOME of the supervisor's own (`watch`: a sidecar with the
    store mounted sets OLLAMA_MODELS to the mount)."""
    return store_dir({**os.environ, **environment})


def manifest_path(store: Path, ref: ModelName) -> Path:
    """Where Ollama keeps a name's manifest: manifests/<host>/<namespace>/<model>/<tag>."""
    return store / "manifests" / ref.host / ref.namespace / ref.model / ref.tag


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ManifestStamps:
    """`changed(refs)`: did any of these manifests change since the last call? (Not at the
    first call, which only records them: /api/tags is read at start anyway.)"""

    def __init__(self, store: Path | None) -> None:
        self.store = store
        self._seen: dict[ModelName, Stamp] | None = None

    def changed(self, refs: Iterable[ModelName]) -> bool:
        if self.store is None:
            return False
        now = {ref: _stamp(manifest_path(self.store, ref)) for ref in refs}
        before, self._seen = self._seen, now
        if before is None:
            return False
        return any(before.get(ref, stamp) != stamp for ref, stamp in now.items())


class DigestRecheck:
    """The other cheap signal, for a store this machine does not see: /api/ps lists a runner
    of a declared model with a digest that is not the one on disk as last read. Something
    loaded another copy under that name (a client, after a hand pull), so /api/tags is read
    again before that runner is judged: otherwise the new copy would be reported as the stale
    one. Each such digest costs one extra /api/tags read."""

    def __init__(self) -> None:
        self._checked: set[tuple[str, str]] = set()
        self._pending: set[tuple[str, str]] = set()

    def unknown(self, key: str, disk_digest: str | None, runner_digests: Iterable[str]) -> bool:
        """True (and a re-read asked for) when a runner's digest is new since the last read."""
        fresh = {(key, d) for d in runner_digests if d != disk_digest} - self._checked
        self._pending |= fresh
        return bool(fresh)

    def tags_read(self) -> None:
        self._checked |= self._pending
        self._pending.clear()
