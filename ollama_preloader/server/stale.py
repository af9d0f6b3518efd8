"""Runners left by an earlier run: `llama-server` processes of this store whose serve is gone.

A serve that was SIGKILLed (or died before the parent-death signal existed) leaves its runners
re-parented, holding their memory. At the start of `run` they are found by their `--model`
file (under this OLLAMA_MODELS) and a parent that is no live `ollama serve`, reported
(`server.stale_runner`) and, unless PRELOADER_STALE_RUNNERS=keep, stopped. A runner of a
live serve, or of another store, is never touched.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from pathlib import Path

from ollama_preloader.observe.logs import get_logger
from ollama_preloader.server.runners import parse_command
from ollama_preloader.state.runner_facts import LeftoverRunner

log = get_logger()


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _argv(pid: int) -> list[str]:
    text = _read(f"/proc/{pid}/cmdline")
    return [part for part in (text or "").split("\0") if part]


def _ppid(pid: int) -> int | None:
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 and fields[0] != "Z" else None


def _is_serve(pid: int) -> bool:
    argv = _argv(pid)
    return len(argv) >= 2 and Path(argv[0]).name.startswith("ollama") and "serve" in argv[1:]


def _resident(pid: int) -> int | None:
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else None
    return None


def find_stale(store: Path) -> list[LeftoverRunner]:
    """llama-server processes whose model file is in `store` and whose parent is no serve."""
    blobs = (store.expanduser() / "blobs").resolve()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        argv = _argv(pid)
        if not argv or Path(argv[0]).name != "llama-server":
            continue
        model = next((b for a, b in itertools.pairwise(argv) if a in ("--model", "-m")), None)
        if model is None or Path(model).resolve().parent != blobs:
            continue  # another store's runner
        parent = _ppid(pid)
        if parent is None or _is_serve(parent):
            continue  # a live serve owns it
        blob = parse_command(argv)[0] or Path(model).name
        found.append(LeftoverRunner(pid, blob, _resident(pid)))
    return found


def handle_stale(store: Path, policy: str, *, may_stop: bool) -> list[LeftoverRunner]:
    """Report each stale runner; stop them (TERM, then KILL after 5 s) when allowed."""
    stale = find_stale(store)
    stop = may_stop and policy == "stop"
    for runner in stale:
        log.warning(
            "server.stale_runner",
            msg=f"A llama-server of this store left by an earlier run (pid {runner.pid}, "
            f"{runner.blob}); " + ("stopping it" if stop else "kept (PRELOADER_STALE_RUNNERS)"),
            pid=runner.pid,
            model=runner.blob,
            memory=runner.memory,
            action="stop" if stop else "keep",
        )
        if stop:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(runner.pid, signal.SIGTERM)
    if stop and stale:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(_argv(r.pid) for r in stale):
            time.sleep(0.05)
        for runner in stale:
            if _argv(runner.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(runner.pid, signal.SIGKILL)
    return stale
