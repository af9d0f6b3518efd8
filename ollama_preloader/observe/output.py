"""Our stdout and stderr, written so that a failing or stalled stream never stops anything.

A closed terminal gives EIO, a reader that went away EPIPE, a reader that stopped reading a
full pipe that blocks every write. Any of these used to end the supervisor (a log write raised)
or stall it (a blocking write in the event loop, and then `ollama serve` blocked on its own
pipe to us). So each stream is written by a thread of its own from a bounded queue: a write
from the loop only appends. A write that fails makes the stream `lost`: it is pointed at
/dev/null (so Python's own later writes and its exit flush cannot fail either), said once on
the other stream, and shown in /status. A stream that stays full past MAX_BACKLOG drops lines
(counted, and said once it moves again) instead of holding anyone up.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

MAX_BACKLOG = 4 * 1024 * 1024  # bytes waiting for a slow reader before lines are dropped
DRAIN_AT_EXIT = 2.0  # seconds the last lines may take to go out when we exit


def describe_error(exc: OSError) -> str:
    """`EPIPE (Broken pipe)`: the name people search for, and the text."""
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{name} ({exc.strerror or exc})"


class Output:
    """One stream (fd 1 or 2) and the thread that writes it."""

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd
        self.lost: str | None = None  # why writing failed, once it has
        self.dropped = 0  # lines dropped because the reader did not keep up
        self.on_lost: Callable[[Output], None] | None = None
        self._tty = os.isatty(fd)
        self._queue: deque[bytes] = deque()
        self._backlog = 0
        self._unsaid_drops = 0
        self._busy = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def isatty(self) -> bool:
        return self._tty

    def write(self, data: bytes) -> None:
        """Queue `data`; never blocks and never raises."""
        if not data or self.lost is not None:
            return
        with self._cond:
            if self._backlog + len(data) > MAX_BACKLOG:
                lines = data.count(b"\n") or 1
                self.dropped += lines
                self._unsaid_drops += lines
                return
            self._queue.append(data)
            self._backlog += len(data)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"output-{self.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def flush(self) -> None:
        """Nothing to do: the thread writes as soon as it can (see `drain`)."""

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the queue to go out; True if it did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait()
                chunk = b"".join(self._queue)
                self._queue.clear()
                self._backlog = 0
                self._busy = True
                drops, self._unsaid_drops = self._unsaid_drops, 0
            if drops:
                chunk = (
                    f"ollama-preloader: {drops} lines of output dropped: {self.name} was "
                    "not read for a while\n"
                ).encode() + chunk
            try:
                _write_all(self.fd, chunk)
            except OSError as exc:
                self._lose(describe_error(exc))
                return

    def _lose(self, why: str) -> None:
        self.lost = why  # from now on `write` drops at once; `drain` waits for the rest here
        # Later writes by anyone (a traceback, typer, Python's flush at exit) go nowhere
        # instead of failing: an exit flush that fails would turn our exit code into 120.
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.fd)
            os.close(null)
        if self.on_lost is not None:
            with contextlib.suppress(Exception):
                self.on_lost(self)
        with self._cond:
            self._queue.clear()
            self._backlog = 0
            self._busy = False
            self._cond.notify_all()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:  # a descriptor someone else made non-blocking: wait, not fail
            time.sleep(0.05)
            continue
        view = view[written:]


class TextOutput:
    """The text face of an Output, for structlog and rich (a file with write and flush)."""

    encoding = "utf-8"

    def __init__(self, output: Output) -> None:
        self.output = output

    def write(self, text: str) -> int:
        self.output.write(text.encode("utf-8", errors="replace"))
        return len(text)

    def flush(self) -> None:
        """Writes go out from the stream's thread; nothing is buffered here."""

    def isatty(self) -> bool:
        return self.output.isatty()

    def fileno(self) -> int:
        return self.output.fd


class _Streams:
    """The process's two streams, once `install` made them."""

    stdout: Output | None = None
    stderr: Output | None = None


def install() -> tuple[Output, Output]:
    """Write fd 1 and 2 through threads from now on (idempotent); returns (stdout, stderr)."""
    if _Streams.stdout is not None and _Streams.stderr is not None:
        return _Streams.stdout, _Streams.stderr
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    out, err = Output("stdout", 1), Output("stderr", 2)
    out.on_lost = err.on_lost = _say_lost
    _Streams.stdout, _Streams.stderr = out, err
    atexit.register(drain, DRAIN_AT_EXIT)
    return out, err


def stdout() -> Output | None:
    return _Streams.stdout


def stderr() -> Output | None:
    return _Streams.stderr


def drain(timeout: float = DRAIN_AT_EXIT) -> None:
    """Let queued lines go out (at exit, and before a final error line)."""
    for stream in (_Streams.stdout, _Streams.stderr):
        if stream is not None:
            stream.drain(timeout)


def problems() -> dict[str, str]:
    """For /status: each stream that failed or dropped lines, and what happened."""
    found: dict[str, str] = {}
    for stream in (_Streams.stdout, _Streams.stderr):
        if stream is None:
            continue
        if stream.lost is not None:
            found[stream.name] = f"lost: {stream.lost}; the supervisor goes on without it"
        elif stream.dropped:
            found[stream.name] = f"{stream.dropped} lines dropped: it was not read for a while"
    return found


def _say_lost(lost: Output) -> None:
    """Once, on the other stream (if it still works): what failed, and that we go on."""
    other = _Streams.stderr if lost is _Streams.stdout else _Streams.stdout
    if other is None or other.lost is not None:
        return
    from ollama_preloader.observe.logs import get_logger

    message = (
        f"Writing to {lost.name} failed ({lost.lost}); going on without it "
        "(the models stay pinned; /status shows this)"
    )
    if other is _Streams.stderr:
        # Logs go to stderr: an event there is the one line.
        get_logger().warning("output.lost", msg=message, stream=lost.name, error=lost.lost)
    else:
        other.write(f"ollama-preloader: {message}\n".encode())


def has_controlling_terminal() -> bool:
    """Whether this process still has a controlling terminal (a hangup takes it away)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True
