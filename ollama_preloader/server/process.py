"""The `ollama serve` child: its own session, output relayed, stopped politely then killed."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import IO, Any, BinaryIO, NoReturn, cast

from ollama_preloader.errors import ServerError, exit_code_for_signal
from ollama_preloader.observe import output, terminal
from ollama_preloader.observe.logs import get_logger

log = get_logger()
TAIL_LINES = 40
# gin's access lines for the supervisor's own polling: one a second would drown Ollama's log.
_POLL_LINE = re.compile(rb'^\[GIN\].*\| (GET|HEAD) +"(/|/api/ps)"\s*$')


# Lines that never explain a failure: gin's access log, and Ollama's routine slog levels.
_ROUTINE_LINE = re.compile(r"^\[GIN\]|\blevel=(INFO|DEBUG|TRACE)\b")
_WARNING_LINE = re.compile(r"\blevel=WARN\b")
# slog ERROR, cobra's `Error: ...` (what `ollama serve` prints last before exiting), a Go panic
# or fatal runtime error, and llama.cpp's own `... failed` / `error ...` lines.
_ERROR_LINE = re.compile(r"\blevel=(ERROR|FATAL)\b|\b(error|failed|fatal|panic)\b", re.IGNORECASE)


def signal_name(code: int) -> str | None:
    """`SIGKILL` for a child killed by signal 9 (asyncio reports -9), None for a plain exit."""
    if code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def describe_exit(code: int) -> str:
    """How a child ended, as a phrase: `exited with code 1`, `was killed by SIGKILL (signal 9)`."""
    name = signal_name(code)
    if name is None:
        return f"exited with code {code}"
    if name.startswith("SIG"):
        return f"was killed by {name} (signal {-code})"
    return f"was killed by {name}"


def error_line(lines: Iterable[str]) -> str | None:
    """The last line that looks like an error (else the last warning), or None.

    Access-log and INFO lines never count: after a crash they are only what it was doing.
    An error beats a later warning: Ollama warns at start about things that do not stop it.
    """
    error = warning = None
    for raw in lines:
        line = raw.strip()
        if not line or _ROUTINE_LINE.search(line):
            continue
        if _WARNING_LINE.search(line):
            warning = line
        elif _ERROR_LINE.search(line):
            error = line
    return error or warning


def explain(line: str) -> str:
    """Add the fix to the startup errors people meet most."""
    if "address already in use" in line:
        return (
            f"{line} (another program is using that port: stop it, or set OLLAMA_HOST "
            "to a free address)"
        )
    lowered = line.lower()
    if "mkdir" in lowered or "permission denied" in lowered or "read-only file system" in lowered:
        return f"{line} (check that OLLAMA_MODELS names a directory this user can write)"
    return line


# Ollama logs one line per device it will use, before it serves requests (discover/types.go).
COMPUTE_MARKER = 'msg="inference compute"'


class OllamaServer:
    """One run of `ollama serve`. Create a new one to restart."""

    def __init__(
        self,
        command: str,
        env: Mapping[str, str],
        *,
        quiet_polls: bool = True,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.command = command
        self.env = dict(env)
        self.quiet_polls = quiet_polls
        # Sees every relayed line: Ollama's runner starts and exit statuses (server/runners.py).
        self.on_line = on_line
        self._proc: subprocess.Popen[bytes] | None = None
        self._exited: asyncio.Future[int] | None = None  # its exit status, once `attach`ed
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        # Kept apart from the tail, which later output would push them out of.
        self._compute: list[str] = []
        self._relays: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """How it ended (-N for signal N), once the loop has seen it exit; None until then."""
        exited = self._exited
        return exited.result() if exited is not None and exited.done() else None

    def spawn(self) -> None:
        """Start `ollama serve` (ServerError if it cannot); no event loop needed.

        `run` spawns before it builds its event loop (launch.py): Ollama's GPU discovery starts
        only with the child. Its output waits in the pipes until `attach` relays it.
        """
        path = shutil.which(self.command, path=self.env.get("PATH"))
        if path is None:
            raise ServerError(
                f"{self.command!r} was not found on PATH; install Ollama or set "
                "PRELOADER_OLLAMA_COMMAND to the ollama executable"
            )
        try:
            # Its own session: the whole group (serve and its llama-server runners) can be
            # signalled at once, and a Ctrl-C in our terminal does not reach it directly.
            self._proc = subprocess.Popen(
                [path, "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                # See parent_death_signal: why this is safe with threads.
                preexec_fn=parent_death_signal(),  # noqa: PLW1509
            )
        except OSError as exc:
            raise ServerError(f"could not start {path} serve: {exc.strerror or exc}") from None
        log.info(
            "server.started",
            msg=f"Started {path} serve",
            pid=self._proc.pid,
            command=path,
        )

    async def attach(self) -> None:
        """Relay the spawned child's output and watch for its exit, on the running loop."""
        proc = self._proc
        if proc is None or self._exited is not None:
            return
        assert proc.stdout is not None
        assert proc.stderr is not None
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        watch_exit(proc, self._exited)
        # Through observe/output.py: its writes never block, so this relay always reads and
        # Ollama never waits on a full pipe, whatever happens to our own stdout and stderr.
        out, err = output.install()
        self._relays = [
            asyncio.create_task(self._relay(await _reader(proc.stdout), cast(BinaryIO, out))),
            asyncio.create_task(self._relay(await _reader(proc.stderr), cast(BinaryIO, err))),
        ]

    async def _relay(self, reader: asyncio.StreamReader, out: BinaryIO) -> None:
        """Copy output line by line as it comes, so Ollama never blocks on a full pipe; keep
        a tail for error messages; leave out the access lines of our own polling."""
        pending = b""
        while chunk := await reader.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > 65536:  # no newline in sight: pass it on as it is
                lines.append(pending)
                pending = b""
            kept = [line for line in lines if not (self.quiet_polls and _POLL_LINE.match(line))]
            if kept:
                with contextlib.suppress(OSError, ValueError):
                    terminal.relay(out, b"\n".join(kept) + b"\n")
            for line in kept:
                text = line.decode(errors="replace").rstrip("\r")
                self._tail.append(text)
                if COMPUTE_MARKER in text and len(self._compute) < 64:
                    self._compute.append(text)
                if self.on_line is not None:
                    self.on_line(text)
        if pending:
            with contextlib.suppress(OSError, ValueError):
                terminal.relay(out, pending)
            self._tail.append(pending.decode(errors="replace"))

    def tail(self) -> list[str]:
        return list(self._tail)

    def compute_lines(self) -> list[str]:
        """Ollama's `inference compute` lines: the devices and memory it found at start."""
        return list(self._compute)

    def last_error_line(self) -> str | None:
        """The recent line that best explains an exit (`Error: ...` is what Ollama prints
        last), or None: then there is no line worth quoting as the cause."""
        return error_line(self._tail)

    def last_output_line(self) -> str:
        """The error line if there is one, else the last line that is not an access-log line:
        where a server that never became ready got stuck (GPU discovery, say)."""
        found = self.last_error_line()
        if found is not None:
            return found
        lines = [line.strip() for line in self._tail if line.strip()]
        lines = [line for line in lines if not line.startswith("[GIN]")]
        return lines[-1] if lines else "(no output)"

    def exit_message(self, code: int, when: str = "") -> str:
        """`ollama serve was killed by SIGKILL (signal 9)`, with the error line it printed."""
        text = f"ollama serve {describe_exit(code)}{when}"
        found = self.last_error_line()
        return f"{text}: {explain(found)}" if found else text

    async def wait_ready(
        self,
        probe: Callable[[], Coroutine[Any, Any, bool]],
        *,
        url: str,
        within: float,
        stopping: asyncio.Event,
    ) -> bool:
        """Poll `probe` until it says ready (True), or `stopping` is set (False).

        ServerError when the child exits first or `within` seconds run out: the port opens before
        Ollama serves requests, so only an answered request means ready.
        """
        deadline = time.monotonic() + within
        exited = asyncio.create_task(self.wait())
        stop = asyncio.create_task(stopping.wait())
        try:
            while True:
                attempt = asyncio.create_task(probe())
                await asyncio.wait({attempt, exited, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop.done():
                    attempt.cancel()
                    return False
                if exited.done():
                    attempt.cancel()
                    raise ServerError(self.exit_message(exited.result(), " before it was ready"))
                if attempt.result():
                    return True
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"ollama serve did not answer on {url} within {within:g}s "
                        f"(PRELOADER_READY_TIMEOUT); last output: {self.last_output_line()}"
                    )
                # A refused connection answers at once; poll often so readiness is seen quickly.
                await asyncio.wait({exited, stop}, timeout=0.05)
        finally:
            for task in (exited, stop):
                task.cancel()

    async def wait(self) -> int:
        assert self._exited is not None, "attach() first"
        # Shielded: a waiter cancelled (wait_ready's, at each readiness) must not cancel the
        # one future every waiter shares.
        code = await asyncio.shield(self._exited)
        # Drain the relays so the tail holds everything the child printed.
        for task in self._relays:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return code

    def _signal_group(self, signum: int) -> None:
        if self._proc is None:
            return
        # "No such process" means the group is already gone: not an error.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signum)

    def kill_now(self) -> None:
        """SIGKILL the whole group at once (second signal, or grace exhausted)."""
        self._signal_group(signal.SIGKILL)

    def stop_now(self, grace: float) -> None:
        """Without an event loop (it may be what failed): TERM the group, up to `grace`
        seconds for it to go, then KILL. For an unexpected exception on the way out."""
        if self._proc is None:
            return
        pid = self._proc.pid
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill_now()
        deadline = time.monotonic() + 5.0
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    async def stop(self, grace: float) -> int | None:
        """SIGTERM the group, wait `grace` seconds, then SIGKILL it; leave no runner behind."""
        if self._proc is None:
            return None
        if self.returncode is None:
            log.info("server.stopping", msg="Stopping ollama serve", pid=self._proc.pid)
            self._signal_group(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self.wait()
            except TimeoutError:
                log.warning(
                    "server.kill",
                    msg=f"ollama serve did not stop within {grace:g}s; killing its process group",
                    pid=self._proc.pid,
                )
        # Runners left by a serve that crashed or ignored SIGTERM are still in the group.
        self.kill_now()
        code = await self.wait()
        reap_orphans()
        return code


async def _reader(pipe: IO[bytes]) -> asyncio.StreamReader:
    """A StreamReader over one of the child's pipes (as asyncio's own subprocesses get)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
    return reader


def watch_exit(proc: subprocess.Popen[bytes], exited: asyncio.Future[int]) -> None:
    """Set `exited` to the child's status when it exits: its pidfd turns readable then (no
    polling, no thread; Linux 5.3+). Elsewhere, or where a sandbox refuses pidfds, a thread
    waits on it, as asyncio's own child watcher does."""
    loop = exited.get_loop()

    def settle(code: int) -> None:
        if not exited.done():
            exited.set_result(code)

    def wait_in_thread() -> None:
        code = proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop closed first: nobody waits
            loop.call_soon_threadsafe(settle, code)

    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        threading.Thread(target=wait_in_thread, name="serve-wait", daemon=True).start()
        return

    def readable() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        code = proc.poll()
        if code is None:  # it exited, but its status is not ours yet: wait for it elsewhere
            threading.Thread(target=wait_in_thread, name="serve-wait", daemon=True).start()
        else:
            settle(code)

    loop.add_reader(fd, readable)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def parent_death_signal() -> Callable[[], None] | None:
    """What the child runs before exec so that it gets SIGTERM when we die, however we die.

    A SIGKILLed or crashed supervisor runs no cleanup; with this `ollama serve` still gets the
    SIGTERM on which it stops its runners and exits, instead of living on with them, holding
    their memory. Linux only (None elsewhere). prctl is looked up here, in the parent: the
    child, forked from a process with threads, only makes one system call and reads its parent
    pid (no import, no lock), which is what makes a preexec function safe enough. The parent
    may die between fork and prctl: then the child is already re-parented and ends itself.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    term = int(signal.SIGTERM)

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, term, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), term)

    return arm


def reap_orphans() -> None:
    """As PID 1, collect zombies re-parented to us (runners orphaned by a killed serve).

    Only zombies that are not our own children's live statuses are touched: asyncio waits on
    its own children by pid, so we never call waitpid(-1).
    """
    if os.getpid() != 1:
        return
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, ppid = fields[0], fields[1]
        if state == "Z" and ppid == "1":
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(int(entry), os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    """Is any process of the group left? Reaps its leader, our child, once it exited."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def force_exit(server: OllamaServer | None, signum: int) -> NoReturn:
    """A second stop signal: SIGKILL the child's whole group and leave at once with 128+N."""
    name = signal.Signals(signum).name
    log.warning("supervisor.killed", msg=f"Received {name} again; killing now", signal=name)
    if server is not None:
        server.kill_now()
    output.drain(1.0)
    os._exit(exit_code_for_signal(signum))
