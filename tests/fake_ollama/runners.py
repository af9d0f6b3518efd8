"""A load request waiting for a runner, and a runner: one fake llama-server child process."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .gotime import rfc3339nano
from .options import RunnerOptions, SchedError
from .store import LocalModel


@dataclass
class LoadRequest:
    """A request that needs a runner."""

    model: LocalModel
    request_name: str
    opts: RunnerOptions
    options: dict[str, Any]
    keep_alive: int | None
    is_gone: Callable[[], bool] = lambda: False
    done: threading.Event = field(default_factory=threading.Event)
    runner: Runner | None = None
    error: SchedError | None = None
    loaded_ns: int = 0

    @property
    def key(self) -> str:
        """Runner key: the model blob path."""
        return str(self.model.model_path)

    def succeed(self, runner: Runner) -> None:
        """Hand the runner to the waiting handler."""
        self.runner = runner
        self.done.set()

    def fail(self, err: SchedError) -> None:
        """Hand an error to the waiting handler."""
        self.error = err
        self.done.set()


@dataclass
class Runner:
    """A loaded model (one fake llama-server process)."""

    key: str
    model: LocalModel
    opts: RunnerOptions
    options: dict[str, Any]
    context_length: int
    parallel: int
    session_duration: int
    proc: subprocess.Popen[bytes]
    size: int
    size_vram: int
    token_seconds: float
    unload_seconds: float
    refcount: int = 0
    expires_at_ns: int | None = None
    deadline: float | None = None  # monotonic time of the keep_alive timer
    unloading: bool = False
    loaded_at: float = field(default_factory=time.time)
    slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(1))

    @property
    def display(self) -> str:
        """Name that loaded the runner (DisplayShortest)."""
        return self.model.display

    @property
    def pid(self) -> int:
        """Runner process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """The runner process has not exited (a /health ping)."""
        return self.proc.poll() is None

    def expires_ns(self, now_ns: int) -> int:
        """expires_at as /api/ps reports it."""
        if self.expires_at_ns is not None:
            return self.expires_at_ns
        d = self.session_duration
        return now_ns + d if d > 0 else now_ns

    def ps_entry(self, now_ns: int) -> dict[str, Any]:
        """One /api/ps model object."""
        return {
            "name": self.display,
            "model": self.display,
            "size": self.size,
            "digest": self.model.digest,
            "details": self.model.details(),
            "expires_at": rfc3339nano(self.expires_ns(now_ns)),
            "size_vram": self.size_vram,
            "context_length": self.context_length,
        }


def kill_process(p: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap (no error if already gone)."""
    try:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired, ChildProcessError):
        pass
