"""The runner processes of the `ollama serve` we own: which model file each serves, which exit.

Ollama runs every loaded model as a `llama-server` child of `ollama serve`, started with
`--model <store>/blobs/sha256-<hex>` and `-c <context × parallel> -np <parallel>`. When one dies,
Ollama notices nothing until the next request for that model (it keeps listing it in /api/ps),
so the supervisor watches the children itself: Ollama's own log lines (relayed by process.py)
for the runners it starts and the exit status it finds, a look at
`/proc/<serve>/task/*/children` after each start line to learn the new runner's pid, and a pidfd
per runner (os.pidfd_open, Linux 5.3+) on the event loop, readable once it exits. Nothing polls
while the models sit pinned; where pidfds are unavailable the look is repeated every
RUNNER_POLL seconds instead. The relayed lines that say what is loaded may have changed (a
model request's or a store write's access line, a runner start) are passed on to `on_change`,
which wakes the reconcile loop (reconcile/wakes.py). `watch` has no process view: `NoRunners`
knows nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import re
import shlex
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.endpoints import MODEL_PATHS
from ollama_preloader.state.runner_facts import UNKNOWN, ExitStatus, RunnerExit, RunnerInfo

log = get_logger()

# Without pidfds: one look costs a directory listing and a few small reads of /proc (idle CPU:
# well under 0.1 % of a core); a dead runner is noticed within this, and repaired within 2 s.
RUNNER_POLL = 1.0
# While deciding whether a model that left /api/ps is being reloaded (by a client) or evicted:
# Ollama stops the old runner and starts the new one within milliseconds of each other.
FAST_POLL = 0.02
START_LINES_KEPT = 64

# Ollama's slog lines (v0.33 llama_server.go; older servers say "starting llama server").
_START = re.compile(r'msg="starting llama[ -]server"')
# Ollama's access log: a request that may have changed the store (a pull done by hand).
_STORE_WRITE = re.compile(r'^\[GIN\].*\| +(?:POST|DELETE) +"/api/(?:pull|delete|copy|create)"')
# ... and a request that may have loaded, unloaded (keep_alive 0, `ollama stop`) or reloaded a
# model with other options. gin prints the line when the request ends, so what it did is done.
_MODEL_REQUEST = re.compile(
    r'^\[GIN\].*\| +POST +"(?:'
    + "|".join(re.escape(path) for path in sorted(MODEL_PATHS))
    + r'|/v1/[a-z/]+)"'
)
_CMD = re.compile(r'\bcmd="((?:[^"\\]|\\.)*)"')
_GONE = re.compile(r'msg="llama-server process no longer running"')
_SYS = re.compile(r"\bsys=(-?\d+)")
_STRING = re.compile(r'\bstring="((?:[^"\\]|\\.)*)"')


def blob_name(path: str | None) -> str | None:
    """`sha256-<hex>` of a model file path: the same file whatever the path it is named by."""
    if not path:
        return None
    name = Path(path).name
    return name if name.startswith("sha256") else None


def parse_command(argv: Sequence[str]) -> tuple[str | None, int | None]:
    """(model file, context per slot) from a llama-server command line."""
    blob = total = None
    parallel = 1
    for flag, value in itertools.pairwise(argv):
        if flag in ("--model", "-m"):
            blob = blob_name(value)
        elif flag in ("-c", "--ctx-size") and value.isdigit():
            total = int(value)
        elif flag in ("-np", "--parallel") and value.isdigit() and int(value) > 0:
            parallel = int(value)
    return blob, None if total is None else total // parallel


def parse_start_line(line: str) -> tuple[str | None, int | None] | None:
    """A `starting llama-server` line: (model file, context per slot); None for other lines."""
    if not _START.search(line):
        return None
    found = _CMD.search(line)
    if found is None:
        return None
    try:
        argv = shlex.split(found.group(1).replace('\\"', '"'))
    except ValueError:
        argv = found.group(1).split()
    return parse_command(argv)


def parse_exit_line(line: str) -> ExitStatus | None:
    """Ollama's `llama-server process no longer running sys=9 string="signal: killed"`."""
    if not _GONE.search(line):
        return None
    text = _STRING.search(line)
    number = _SYS.search(line)
    if text is None:
        return UNKNOWN
    described = text.group(1)
    if described.startswith("signal") and number is not None:
        return ExitStatus.from_signal(int(number.group(1)))
    code = number and int(number.group(1))
    return ExitStatus(described, code=code if isinstance(code, int) else None)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def children(pid: int) -> list[int] | None:
    """The child pids of `pid` (every thread's: Go forks from any of them); None if unknown."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found: set[int] = set()
    readable = False
    for task in tasks:
        text = _read(f"/proc/{pid}/task/{task}/children")
        if text is None:
            continue
        readable = True
        found.update(int(p) for p in text.split() if p.isdigit())
    return sorted(found) if readable else None


def zombie_status(pid: int) -> ExitStatus | None:
    """The exit status of a child that has exited but is not reaped yet (None if it runs)."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    if not fields or fields[0] != "Z":
        return None
    # Field 52 of stat (the 50th after the name) is the wait status, since Linux 3.5.
    if len(fields) >= 50 and fields[49].lstrip("-").isdigit():
        return ExitStatus.from_wait_status(int(fields[49]))
    return UNKNOWN


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process so far (/proc/<pid>/stat); None if it is gone.

    The probe's signal of progress: a runner that computes burns CPU, a wedged one is idle.
    """
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    if len(fields) < 13 or fields[0] == "Z":
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_wait_seconds(pid: int) -> float | None:
    """Time the process's threads spent runnable but waiting for a CPU, so far (the second
    field of each /proc/<pid>/task/<tid>/schedstat, in ns); None when it cannot be read.

    The other half of the probe's signal: on a machine with every core taken, a runner with
    work queued is starved, not idle, and its threads wait for a CPU; a wedged one waits for
    nothing, so it adds neither CPU time nor this.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total, read = 0, False
    for tid in tids:
        fields = (_read(f"/proc/{pid}/task/{tid}/schedstat") or "").split()
        if len(fields) >= 2 and fields[1].isdigit():
            total += int(fields[1])
            read = True
    return total / 1e9 if read else None


def process_gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie its parent has not reaped yet).

    A SIGKILL is delivered at once but takes effect only when the process next runs; until
    then it can still answer on its socket, so a request sent right after the kill may be
    served by the runner being killed.
    """
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return True
    fields = text.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] in ("Z", "X")


def find_on_host(blob: str | None) -> int | None:
    """A process on this machine running a model file (`--model .../<blob>`), for `watch` of
    an Ollama on the same host: its runners are not our children, but may be visible."""
    if blob is None:
        return None
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    found = [
        int(entry)
        for entry in entries
        if entry.isdigit()
        and (argv := _command(int(entry)))
        and parse_command(argv)[0] == blob
        and zombie_status(int(entry)) is None
    ]
    # Two processes running the same file: another Ollama on this host has the model too, and
    # which one serves ours cannot be told; never kill a runner that may not be ours.
    return found[0] if len(found) == 1 else None


def _command(pid: int) -> list[str] | None:
    text = _read(f"/proc/{pid}/cmdline")
    return None if text is None else [part for part in text.split("\0") if part]


class NoRunners:
    """A server whose processes we cannot see (`watch`): no facts, nothing to wait for."""

    store_writes = 0  # requests Ollama's log showed that may have changed the store
    # Called when Ollama's output says what is loaded may have changed (run() sets it); True
    # for a model request's access line, which may be one of the supervisor's own requests.
    on_change: Callable[[bool], None] | None = None

    def current(self) -> list[RunnerInfo]:
        return []

    def known(self) -> list[RunnerInfo]:
        return []

    def starts_since(
        self, blob: str | None, since: float, until: float = float("inf")
    ) -> list[int | None]:
        return []

    def blobs_started_since(self, since: float) -> set[str]:
        return set()

    async def appears(self, blob: str | None, within: float) -> bool:
        return False

    async def exit_status(self, since: float, within: float) -> ExitStatus | None:
        return None

    async def run(
        self,
        report: Callable[[RunnerExit], None],
        changed: Callable[[bool], None] | None = None,
    ) -> None:
        """Nothing to watch."""


class RunnerWatch(NoRunners):
    """The children of one `ollama serve` (followed across restarts) and its runner lines."""

    def __init__(self, serve_pid: Callable[[], int | None]) -> None:
        self._serve_pid = serve_pid  # the running `ollama serve`, None while there is none
        self._serve: int | None = None
        self._live: dict[int, RunnerInfo] = {}
        self._starts: deque[tuple[float, str | None, int | None]] = deque(maxlen=START_LINES_KEPT)
        self._exits: deque[tuple[float, ExitStatus]] = deque(maxlen=START_LINES_KEPT)
        self._last_start = float("-inf")
        self._pidfds: dict[int, int] = {}  # runner pid -> its pidfd, on the event loop
        self._pidfds_work = _pidfds_work()

    # Made at first use, not in __init__: `run` builds this watch before asyncio is imported
    # (launch.py spawns `ollama serve` first; deferred.py).
    @functools.cached_property
    def _line_seen(self) -> asyncio.Event:
        return asyncio.Event()

    @functools.cached_property
    def _look(self) -> asyncio.Event:
        """A start line or a runner's exit: look at once."""
        return asyncio.Event()

    # ----- Ollama's output (process.py calls this for every line it relays) -----------------

    def on_line(self, line: str) -> None:
        if line.startswith("[GIN]"):
            if _STORE_WRITE.match(line):
                self.store_writes += 1
                self._changed(request=False)
            elif _MODEL_REQUEST.match(line):
                self._changed(request=True)
            return
        started = parse_start_line(line)
        if started is not None:
            self._last_start = time.monotonic()
            self._starts.append((self._last_start, *started))
            self._line_seen.set()
            self._look.set()
            self._changed(request=False)
            return
        ended = parse_exit_line(line)
        if ended is not None:
            self._exits.append((time.monotonic(), ended))
            self._line_seen.set()

    def _changed(self, *, request: bool) -> None:
        if self.on_change is not None:
            self.on_change(request)

    # ----- facts ----------------------------------------------------------------------------

    def scan(self) -> tuple[list[RunnerInfo], list[RunnerExit]]:
        """Look at the children now: (live runners, runners gone since the last look)."""
        serve = self._serve_pid()
        if serve != self._serve:
            # A new `ollama serve`: the old one's runners went with it, which is no crash.
            self._serve, self._live = serve, {}
            for pid in list(self._pidfds):
                self._unfollow(pid)
        if serve is None:
            return [], []
        pids = children(serve)
        if pids is None:
            return list(self._live.values()), []  # the serve is gone: its watch reports that
        now = time.monotonic()
        gone: list[RunnerExit] = []
        alive = set()
        for pid in pids:
            status = zombie_status(pid)
            if status is not None:
                if pid in self._live:
                    gone.append(RunnerExit(self._live.pop(pid), status, now))
                continue
            alive.add(pid)
            known = self._live.get(pid)
            if known is None or known.blob is None:
                # Between fork and exec a child still shows `ollama serve`'s command line:
                # look again until it names its model file.
                described = self._describe(pid)
                if described is not None:
                    self._live[pid] = described
        for pid in [p for p in self._live if p not in alive]:
            gone.append(RunnerExit(self._live.pop(pid), None, now))
        for exit_ in gone:
            self._unfollow(exit_.runner.pid)
        for pid in self._live:
            self._follow(pid)
        return list(self._live.values()), gone

    # ----- pidfds: a runner's exit wakes the watch --------------------------------------------

    def _follow(self, pid: int) -> None:
        """Look again when `pid` exits: its pidfd turns readable then (no polling)."""
        if not self._pidfds_work or pid in self._pidfds:
            return
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._look.set()  # gone already: the next look reports it
            return
        except OSError:
            self._pidfds_work = False  # refused (a seccomp filter, say): poll instead
            return
        self._pidfds[pid] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, pid)

    def _exited(self, pid: int) -> None:
        # Readable stays readable: stop listening at once, or the loop would spin on it.
        self._unfollow(pid)
        self._look.set()

    def _unfollow(self, pid: int) -> None:
        fd = self._pidfds.pop(pid, None)
        if fd is None:
            return
        with contextlib.suppress(RuntimeError, ValueError):
            asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)

    def current(self) -> list[RunnerInfo]:
        """The live runners, looked at now (exits found here are reported by the next poll)."""
        serve = self._serve_pid()
        pids = (children(serve) or []) if serve is not None else []
        return [
            info
            for pid in pids
            if zombie_status(pid) is None
            for info in [self._known(pid)]
            if info is not None
        ]

    def known(self) -> list[RunnerInfo]:
        """The live runners as of the watch's last look (no look now)."""
        return list(self._live.values())

    def _known(self, pid: int) -> RunnerInfo | None:
        known = self._live.get(pid)
        return known if known is not None and known.blob is not None else self._describe(pid)

    def _describe(self, pid: int) -> RunnerInfo | None:
        argv = _command(pid)
        if not argv:
            return None
        return RunnerInfo(pid, *parse_command(argv))

    def starts_since(
        self, blob: str | None, since: float, until: float = float("inf")
    ) -> list[int | None]:
        """The context of each runner Ollama started for `blob` after `since` (up to `until`),
        oldest first (from its `starting llama-server` lines; None where the line names no
        context)."""
        if blob is None:
            return []
        return [ctx for at, started, ctx in self._starts if since < at <= until and started == blob]

    def blobs_started_since(self, since: float) -> set[str]:
        """The model files Ollama started a runner for after `since` (whose load, any)."""
        return {started for at, started, _ in self._starts if at > since and started}

    async def appears(self, blob: str | None, within: float) -> bool:
        """Is a runner for `blob` alive, or does one start within `within` seconds?"""
        if blob is None:
            return False
        since = time.monotonic()
        deadline = since + within
        while True:
            if any(r.blob == blob for r in self.current()):
                return True
            if self.starts_since(blob, since):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._line_seen.clear()
            await _wait(self._line_seen, min(FAST_POLL, left))

    async def exit_status(self, since: float, within: float) -> ExitStatus | None:
        """The exit status Ollama logs (after `since`) when a request finds its runner dead."""
        deadline = time.monotonic() + within
        while True:
            for at, status in self._exits:
                if at >= since:
                    return status
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._line_seen.clear()
            await _wait(self._line_seen, left)

    # ----- the task -------------------------------------------------------------------------

    async def run(
        self,
        report: Callable[[RunnerExit], None],
        changed: Callable[[bool], None] | None = None,
    ) -> None:
        """Look at the children when something may have changed; `report` each that exits, and
        call `changed` for each of Ollama's lines that says what is loaded may have changed.

        For a second after Ollama logs a runner start, look every FAST_POLL: a runner that dies
        soon after its start must have been seen alive to be known dead, with its pid. Then,
        with pidfds, wait for the next start line or exit; without, look every RUNNER_POLL.
        """
        self.on_change = changed
        try:
            while True:
                for exit_ in self.scan()[1]:
                    report(exit_)
                seconds: float | None = RUNNER_POLL
                if time.monotonic() < self._last_start + 1.0:
                    seconds = FAST_POLL
                elif self._pidfds_work and all(r.blob for r in self._live.values()):
                    # Every runner named and followed: sleep until a start line or an exit.
                    # (A child that has not yet named its model file is looked at again.)
                    seconds = None
                # Cleared only once seen: a line relayed before this wait still counts.
                if await _wait(self._look, seconds):
                    self._look.clear()
        finally:
            self.on_change = None
            for pid in list(self._pidfds):
                self._unfollow(pid)


def _pidfds_work() -> bool:
    """Can this system give us pidfds (Linux 5.3+, not refused by a sandbox)?"""
    try:
        fd = os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return False
    os.close(fd)
    return True


async def _wait(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for `event` at most `seconds` (None: as long as it takes); True if it was set.

    Not `asyncio.wait_for`: on Python 3.11 it can swallow a cancellation that arrives as the
    wait ends, and this runs in loops many times a second, so a stop could hang on it.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
