"""The guard's optional API keys (PRELOADER_GUARD_API_KEYS_FILE): Ollama has no authentication.

One key a line, `#` starts a comment, blank lines are skipped. The file is read at start (an
unreadable or empty one is a ConfigError: exit 2), again on SIGHUP, and again when it changes:
a request looks at the file's identity (inode, size, mtime; a Kubernetes Secret's symlink swap
changes the inode) at most once per CHECK_INTERVAL, so an idle guard reads nothing. A file that
cannot be read later keeps the keys in force (a Secret or ConfigMap being swapped can be absent
for a moment); a file emptied on purpose refuses every client. Keys are never logged, only
counted, and each presented token is compared in constant time against every key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path

from ollama_preloader.errors import ConfigError
from ollama_preloader.observe.logs import get_logger

log = get_logger()

VARIABLE = "PRELOADER_GUARD_API_KEYS_FILE"
CHECK_INTERVAL = 1.0  # seconds between looks at the file, and only while requests come
_Identity = tuple[int, int, int, int]


def parse_keys(text: str) -> frozenset[str]:
    """The keys in a file's text: one a line, `#` comments and blank lines skipped."""
    keys = set()
    for line in text.splitlines():
        key = line.split("#", 1)[0].strip()
        if key:
            keys.add(key)
    return frozenset(keys)


def _digest(key: str) -> bytes:
    # Fixed-length digests: compare_digest is constant time only for equal lengths.
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The keys in force and the file they come from; `allows(header)` per request."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._digests: tuple[bytes, ...] = ()
        self._identity: _Identity | None = None
        self._checked = 0.0

    def load(self) -> None:
        """At start: read the file or raise ConfigError naming the variable."""
        try:
            identity, keys = self._read()
        except OSError as exc:
            raise ConfigError(
                f"{VARIABLE}={str(self.path)!r}: cannot read it "
                f"({os.strerror(exc.errno).lower() if exc.errno else exc}); "
                "give a readable file with one API key a line"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"{VARIABLE}={str(self.path)!r}: not a text file; give one API key a line"
            ) from None
        if not keys:
            raise ConfigError(
                f"{VARIABLE}={str(self.path)!r}: the file has no keys (only comments or blank "
                "lines); add one key a line, or unset the variable to let every client in"
            )
        self._apply(identity, keys)
        log.info(
            "guard.keys.loaded",
            msg=f"Guard requires an API key: {len(keys)} key(s) from {self.path}",
            path=str(self.path),
            keys=len(keys),
        )

    def reload(self, trigger: str) -> None:
        """Read the file again (SIGHUP, or it changed); a failure keeps the keys in force."""
        self._checked = self.clock()
        try:
            identity, keys = self._read()
        except (OSError, UnicodeDecodeError) as exc:
            if self._identity is not None:  # one warning per disappearance, not per request
                log.warning(
                    "guard.keys.reload_failed",
                    msg=f"Cannot read {self.path} ({exc.__class__.__name__}); the "
                    f"{len(self._digests)} key(s) in force stay",
                    path=str(self.path),
                    trigger=trigger,
                )
            self._identity = None
            return
        if identity == self._identity and trigger != "signal":
            return
        self._apply(identity, keys)
        msg = f"Guard API keys re-read from {self.path}: {len(keys)} key(s)"
        fields = {"path": str(self.path), "keys": len(keys), "trigger": trigger}
        if keys:
            log.info("guard.keys.reloaded", msg=msg, **fields)
        else:  # a warning: the guard now refuses everyone
            log.warning(
                "guard.keys.reloaded",
                msg=f"{msg}; every client is refused until a key is added",
                **fields,
            )

    def allows(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header carries a key in force (`Bearer <key>`)."""
        if self.clock() - self._checked >= CHECK_INTERVAL:
            self._maybe_changed()
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        presented = _digest(token.strip())
        found = False
        for digest in self._digests:  # every key, no early exit: the time says nothing
            found |= hmac.compare_digest(presented, digest)
        return found

    # ----- inside ----------------------------------------------------------------------------

    def _maybe_changed(self) -> None:
        self._checked = self.clock()
        try:
            identity = self._stat()
        except OSError:
            identity = None
        if identity != self._identity:
            self.reload("file")

    def _stat(self) -> _Identity:
        st = os.stat(self.path)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> tuple[_Identity, frozenset[str]]:
        identity = self._stat()
        return identity, parse_keys(self.path.read_text(encoding="utf-8"))

    def _apply(self, identity: _Identity, keys: frozenset[str]) -> None:
        self._identity = identity
        self._checked = self.clock()
        self._digests = tuple(_digest(k) for k in sorted(keys))
