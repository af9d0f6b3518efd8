"""FAKE_OLLAMA_FAULTS: a JSON file re-read on every use; consumed counts are written back."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any

from .names import normalize


class Faults:
    """Access to the faults file. Entries with `times` are consumed (-1 = forever)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        if not self.path:
            return {}
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return {}
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        tmp = f"{self.path}.fake-tmp{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, self.path)

    def flag(self, key: str) -> bool:
        """A boolean fault such as `no_embed_endpoint`."""
        return bool(self._read().get(key))

    def get(self, key: str) -> Any:
        """Raw value of a top-level key (not consumed)."""
        return self._read().get(key)

    def registry(self, host: str) -> str | None:
        """How the registry at `host` speaks: `http` (plain), `private-ca` (TLS), None (public)."""
        table = self._read().get("registry")
        if not isinstance(table, dict):
            return None
        for key, value in table.items():
            if str(key).lower() == host.lower():
                return str(value)
        return None

    def take(self, kind: str, key: str, *, model: bool = False) -> dict[str, Any] | None:
        """Consume one use of faults[kind][key]; return the entry, or None if none applies.

        `times`: remaining uses; -1 (or absent) = every time; 0 = spent.

        With model=True keys are compared as normalised model names.
        """
        with self._lock:
            data = self._read()
            table = data.get(kind)
            if not isinstance(table, dict):
                return None
            match = None
            for k in table:
                if (normalize(k) == normalize(key)) if model else (k == key):
                    match = k
                    break
            if match is None:
                return None
            entry = table[match]
            if not isinstance(entry, dict):
                entry = {}
            times = entry.get("times", -1)
            try:
                times = int(times)
            except (TypeError, ValueError):
                times = 1
            if times == 0:
                return None
            if times > 0:
                entry = dict(entry)
                entry["times"] = times - 1
                table[match] = entry
                with contextlib.suppress(OSError):
                    self._write(data)
            return dict(entry)

    def wedged(self, model: str, runner_pid: int, serve_pid: int) -> bool:
        """faults["wedge"][model]: the model is wedged (§9.5a) for its current runner.

        `until`: what ends it, as on the real server: `runner` (default; a new runner process,
        after a kill), `serve` (a new `ollama serve`) or `never`. The first request it hangs
        records the pid it is tied to; once that pid is gone the entry is removed.
        """
        with self._lock:
            data = self._read()
            table = data.get("wedge")
            if not isinstance(table, dict):
                return False
            match = next((k for k in table if normalize(k) == normalize(model)), None)
            if match is None:
                return False
            entry = table[match] if isinstance(table[match], dict) else {}
            until = str(entry.get("until", "runner"))
            if until == "never":
                return True
            pid = runner_pid if until == "runner" else serve_pid
            if "pid" not in entry:
                table[match] = {**entry, "pid": pid}
            elif entry["pid"] != pid:
                del table[match]
            else:
                return True
            with contextlib.suppress(OSError):
                self._write(data)
            return match in table
