"""One `ollama-preloader run` on the real Ollama for a benchmark, its output collected as it
comes. The resident and fault-mix benchmarks (resident.py, faultmix.py) both drive one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class SupervisorProcess:
    """`python -m ollama_preloader run` with the kit's `ollama` first on PATH, JSON logs on.

    `lines` holds every output line with the time it was read. `source` runs another
    checkout's supervisor (PYTHONPATH), to compare a branch with main; `extra` adds variables.
    """

    def __init__(
        self,
        *,
        bin_dir: Path,
        home: Path,
        store: Path,
        models: str,
        port: int,
        health_port: int,
        source: Path | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "PRELOADER_"))}
        env.update(
            PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            HOME=str(home),
            OLLAMA_HOST=f"127.0.0.1:{port}",
            OLLAMA_MODELS=str(store),
            OLLAMA_NO_CLOUD="1",
            OLLAMA_PRELOAD_MODELS=models,
            PRELOADER_LOG_FORMAT="json",
            PRELOADER_HEALTH_PORT=str(health_port),
            PRELOADER_HEALTH_HOST="127.0.0.1",
        )
        env.update(extra or {})
        if source is not None:
            env["PYTHONPATH"] = str(source)
        self.env = env
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollama_preloader", "run"],
            env=env,
            cwd=home,  # not a checkout: `-m` would import the package found there first
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every JSON log event called `name` so far."""
        out = []
        for _, line in list(self.lines):
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    out.append(event)
        return out

    def tail(self, count: int) -> str:
        """The last `count` lines, each cut at 240 characters, for an error message."""
        return "\n".join(line[:240] for _, line in self.lines[-count:])
