"""What is known of a runner process (pid, model file, context), how one ended, and one that no
`ollama serve` owns: facts that server/ finds and the board keeps, so they live below both."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunnerInfo:
    """One runner process: its pid, its model file and the context length per request slot."""

    pid: int
    blob: str | None
    context: int | None


@dataclass(frozen=True)
class ExitStatus:
    """How a runner ended, as far as anything showed it."""

    text: str  # `signal: killed`, `exit status 2`, or `unknown`
    signal: str | None = None  # `SIGKILL`
    code: int | None = None  # the exit code of a plain exit

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        """From the wait status the kernel keeps for a zombie (/proc/<pid>/stat)."""
        if os.WIFSIGNALED(status):
            return cls.from_signal(os.WTERMSIG(status))
        code = os.WEXITSTATUS(status)
        return cls(f"exit status {code}", code=code)

    @classmethod
    def from_signal(cls, number: int) -> ExitStatus:
        try:
            name: str | None = signal.Signals(number).name
        except ValueError:
            name = None
        text = (signal.strsignal(number) or f"signal {number}").lower()
        return cls(f"signal: {text}", signal=name)


UNKNOWN = ExitStatus("unknown")


@dataclass(frozen=True)
class RunnerExit:
    """A runner that was seen alive and is gone: who it was and, if it showed, how it ended."""

    runner: RunnerInfo
    status: ExitStatus | None  # None: not seen yet (Ollama logs it at the next request)
    at: float  # monotonic


@dataclass(frozen=True)
class LeftoverRunner:
    """A `llama-server` of the store whose `ollama serve` is gone (an earlier run's)."""

    pid: int
    blob: str
    memory: int | None  # resident bytes

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "model": self.blob, "memory": self.memory}
