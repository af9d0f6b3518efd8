"""Output of the fake server: slog text on stderr, gin lines on stdout, JSON lines for tests."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from .gotime import duration_string, gin_time, slog_time

_out_lock = threading.Lock()


def _slog_value(v: object) -> str:
    s = v if isinstance(v, str) else str(v)
    if s == "" or any(c in s for c in ' ="\\') or not s.isprintable():
        return json.dumps(s, ensure_ascii=False)
    return s


class Logger:
    """Writes slog-style lines and the FAKE_OLLAMA_LOG JSON lines file."""

    def __init__(self, json_path: str = "", debug: bool = False) -> None:
        self.json_path = json_path
        self.debug_enabled = debug
        self._lock = threading.Lock()

    def slog(self, level: str, source: str, msg: str, **attrs: object) -> None:
        """One slog TextHandler line on stderr."""
        if level == "DEBUG" and not self.debug_enabled:
            return
        parts = [
            f"time={slog_time(time.time_ns())}",
            f"level={level}",
            f"source={source}",
            f"msg={_slog_value(msg)}",
        ]
        parts += [f"{k}={_slog_value(v)}" for k, v in attrs.items()]
        line = " ".join(parts) + "\n"
        with _out_lock:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def slog_info(self, source: str, msg: str, **attrs: object) -> None:
        """INFO line."""
        self.slog("INFO", source, msg, **attrs)

    def slog_warn(self, source: str, msg: str, **attrs: object) -> None:
        """WARN line."""
        self.slog("WARN", source, msg, **attrs)

    def slog_debug(self, source: str, msg: str, **attrs: object) -> None:
        """DEBUG line (only with OLLAMA_DEBUG)."""
        self.slog("DEBUG", source, msg, **attrs)

    def gin(self, status: int, latency_ns: int, client_ip: str, method: str, path: str) -> None:
        """gin's request log line on stdout."""
        line = (
            f"[GIN] {gin_time(time.time_ns())} | {status:3d} | {duration_string(latency_ns):>13}"
            f" | {client_ip:>15} | {method:<7} {json.dumps(path)}\n"
        )
        with _out_lock:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def record(self, obj: dict[str, Any]) -> None:
        """Append one JSON object to FAKE_OLLAMA_LOG (locked, flushed)."""
        if not self.json_path:
            return
        data = {"t": time.time(), **obj}
        line = json.dumps(data, default=str) + "\n"
        with self._lock:
            try:
                with open(self.json_path, "a", encoding="utf-8") as f:
                    f.write(line)
                    f.flush()
            except OSError:
                pass

    def event(self, event: str, model: str | None = None, **fields: Any) -> None:
        """A scheduler/server event record."""
        obj: dict[str, Any] = {"event": event}
        if model is not None:
            obj["model"] = model
        obj.update(fields)
        self.record(obj)
