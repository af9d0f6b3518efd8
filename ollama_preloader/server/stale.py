"""Runners left by an earlier run: `llama-server` processes of this store whose serve is gone.

A serve that was SIGKILLed (or died before the parent-death signal existed) leaves its runners
re-parented, holding their memory. At the start of `run` they are found by their `--model`
file (under this OLLAMA_MODELS) and a parent that is no live `ollama serve`, reported
(`server.stale_runner`) and, unless PRELOADER_STALE_RUNNERS=keep, stopped. `watch` on this host
looks for them in the store its server names (LeftoverWatch) and only reports them: it stops
nothing it did not start. A runner of a live serve, or of another store, is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.psformat import human_bytes
from ollama_preloader.server.runners import parse_command
from ollama_preloader.state.runner_facts import LeftoverRunner

if TYPE_CHECKING:
    from ollama_preloader.server.base import Link

log = get_logger()

# `watch`: how often to look again while nothing else calls for a look (a return of the
# server, a store named for the first time). One look lists /proc and reads each command line.
LEFTOVER_SCAN = 60.0


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
    """`ollama serve`; also an `ollama` that an interpreter runs (a wrapper script, the test
    suite's fake): a false match only leaves a runner alone, never stops one."""
    argv = _argv(pid)
    for at, arg in enumerate(argv[:2]):
        if Path(arg).name.startswith("ollama") and "serve" in argv[at + 1 :]:
            return True
    return False


def _resident(pid: int) -> int | None:
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else None
    return None


def store_blobs(store: Path) -> Path:
    """The directory of a store's model files (OLLAMA_MODELS/blobs)."""
    return (store.expanduser() / "blobs").resolve()


def find_leftovers(blobs_dirs: Collection[Path]) -> list[LeftoverRunner]:
    """llama-server processes whose model file is in one of `blobs_dirs` and whose parent is
    no live serve."""
    wanted = {d.resolve() for d in blobs_dirs}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        argv = _argv(pid)
        if not argv or Path(argv[0]).name != "llama-server":
            continue
        model = next((b for a, b in itertools.pairwise(argv) if a in ("--model", "-m")), None)
        if model is None or Path(model).resolve().parent not in wanted:
            continue  # another store's runner
        parent = _ppid(pid)
        if parent is None or _is_serve(parent):
            continue  # a live serve owns it
        blob = parse_command(argv)[0] or Path(model).name
        found.append(LeftoverRunner(pid, blob, _resident(pid)))
    return found


def find_stale(store: Path) -> list[LeftoverRunner]:
    """The leftover runners of one store (OLLAMA_MODELS)."""
    return find_leftovers([store_blobs(store)])


def handle_stale(store: Path, policy: str) -> list[LeftoverRunner]:
    """`run`'s start: report each stale runner; with policy `stop`, stop them (TERM, then KILL
    after 5 s)."""
    stale = find_stale(store)
    stop = policy == "stop"
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


def report_leftovers(blobs_dirs: Collection[Path], reported: set[int]) -> list[LeftoverRunner]:
    """`watch`: the leftover runners now; one warning for each not in `reported` (updated
    to the pids found, so a pid that goes and comes back is said again)."""
    found = find_leftovers(blobs_dirs)
    for runner in found:
        if runner.pid in reported:
            continue
        held = f", {human_bytes(runner.memory)} resident" if runner.memory else ""
        log.warning(
            "server.stale_runner",
            msg=f"A llama-server of the store this Ollama uses (pid {runner.pid}, "
            f"{runner.blob}{held}) belongs to no running `ollama serve`: an earlier serve left "
            "it. `watch` stops nothing it did not start; stop it by hand "
            f"(kill {runner.pid}) once you are sure it is not in use",
            pid=runner.pid,
            model=runner.blob,
            memory=runner.memory,
            action="report",
        )
    reported.clear()
    reported.update(r.pid for r in found)
    return found


class LeftoverWatch:
    """`watch` of an Ollama on this host: its store's leftover runners, in the board."""

    def __init__(self, poll: float) -> None:
        self._poll = poll  # how often to see whether a look is due (no /proc read)
        self._dirs: set[Path] = set()
        self._reported: set[int] = set()
        self._now = asyncio.Event()

    def look_now(self) -> None:
        """The server came back: an earlier serve may have left runners."""
        self._now.set()

    async def run(self, link: Link) -> None:
        """Look when the server (re)appears, when a model file names a store not seen yet,
        and every LEFTOVER_SCAN seconds. The store is where the model files are that the
        server names (/api/show), whoever runs it and whatever its OLLAMA_MODELS."""
        last = -LEFTOVER_SCAN
        while not link.stopping.is_set():
            dirs = {Path(m.blob).parent for m in link.board.models if m.blob}
            now = time.monotonic()
            if dirs and (
                self._now.is_set() or not dirs <= self._dirs or now - last >= LEFTOVER_SCAN
            ):
                self._now.clear()
                self._dirs |= dirs
                last = now
                found = await asyncio.to_thread(report_leftovers, self._dirs, self._reported)
                link.board.leftover_runners = found
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await link.stopping.wait()
