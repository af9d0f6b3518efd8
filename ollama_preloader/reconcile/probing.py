"""Pinned is not serving: one real request per pinned model, and the repair of a wedged one.

`/api/ps` lists a model pinned, and a load-only request answers, even when every real request
for it hangs (ollama-behaviour.md §9.5a: a dropped stream can leave the runner's only slot held
inside `ollama serve`). So every PRELOADER_PROBE_INTERVAL each pinned model gets the smallest
real request clients could send, with its pinned options and keep_alive -1 (it never reloads or
un-pins the model). A probe that is not answered within PRELOADER_PROBE_TIMEOUT is judged by
the runner's CPU time over the wait: a runner that computes (the probe queued behind real work)
is busy, never wedged; one that stays idle while a request waits for it is wedged.

Repairs, as measured on the real server: killing the model's runner makes Ollama start a new
one at the next request (then it is pinned again here); wedged again soon after, or a runner we
cannot signal, and `run` restarts `ollama serve`. `watch` signals the runner when it can see it
on this host, else unloads and re-pins through the API; wedged again, it reports and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import OllamaAPIError, OllamaUnavailable
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.observe.summary import note_all_ready
from ollama_preloader.ollama.api import OllamaAPI
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.reconcile.loading import Loader
from ollama_preloader.server.base import Server
from ollama_preloader.server.runners import (
    blob_name,
    cpu_seconds,
    cpu_wait_seconds,
    find_on_host,
    process_gone,
)
from ollama_preloader.state.board import Board, ModelStatus, State

log = get_logger()

# Runner CPU seconds (plus seconds its threads waited for a CPU) over the probe's wait that
# count as progress. An idle llama-server uses none (0.00 s over 5 s measured); one evaluating
# a prompt uses a core or more, or waits for one on a machine with every core taken.
PROGRESS_CPU = 0.05
# Wedged again within this of the last wedge: the runner kill did not hold; escalate.
REWEDGE_WINDOW = 300.0
# Without a progress signal (`watch`, runner not visible): unanswered probes in a row before
# the model counts as wedged, so one long generation ahead of a probe is not taken for one.
BLIND_TIMEOUTS = 3
# A killed runner is gone within milliseconds; re-pinning before it is would let the dying
# runner answer the load (CI saw it under load), so the repair waits for the exit, this long.
KILL_WAIT = 5.0
KILL_POLL = 0.02

# A guard client dropped a declared model's answer: its probe comes this long after (the
# cancelled request has ended by then; a burst of drops is one probe), not at the interval.
DROP_DELAY = 2.0

KILL_RUNNER = "kill-runner"
RESTART_SERVE = "restart-serve"
UNLOAD_REPIN = "unload-repin"
NO_REPAIR = "none"


@dataclass(frozen=True)
class Probe:
    """One probe's outcome: answered, and if not, what the runner did meanwhile."""

    answered: bool
    waited: float
    pid: int | None  # the runner looked at, if any could be seen
    cpu: float | None  # its CPU seconds over the wait; None: no signal
    cpu_wait: float | None = None  # seconds its threads waited for a CPU; None: not readable

    @property
    def progress(self) -> float | None:
        """Work over the wait: CPU time, plus the time spent waiting for a CPU to do it."""
        return None if self.cpu is None else self.cpu + (self.cpu_wait or 0.0)

    def progress_text(self) -> str:
        if self.cpu is None:
            return "unknown"
        if self.cpu_wait is None:
            return f"{self.cpu:.2f}s CPU"
        return f"{self.cpu:.2f}s CPU, {self.cpu_wait:.2f}s waiting for one"


class Prober:
    """The probe task of one supervisor run (started only when the interval is not `off`)."""

    def __init__(
        self,
        settings: Settings,
        api: OllamaAPI,
        board: Board,
        server: Server,
        loader: Loader,
        *,
        wake: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.api = api
        self.board = board
        self.server = server
        self.loader = loader
        self._wake = wake
        self._probed_at: dict[str, float] = {}  # model key: when its last probe started

    async def run(self) -> None:
        interval = self.settings.probe_interval
        if interval is None:
            return
        drops = self.board.drops
        next_round = time.monotonic() + interval  # the first one an interval after start
        while True:
            dropped = await drops.wait(next_round - time.monotonic())
            if time.monotonic() >= next_round:
                next_round = time.monotonic() + interval
                for status in list(self.board.models):
                    if self._due(status):
                        await self.check(status)
            elif dropped:
                await self._after_drops()

    async def _after_drops(self) -> None:
        """A guard client went away mid-answer: to Ollama a cancellation, which can wedge the
        runner (§9.5a). Probe those models DROP_DELAY later (a burst of drops is one probe),
        each at most once per PRELOADER_PROBE_TIMEOUT; the interval's schedule stays."""
        await asyncio.sleep(DROP_DELAY)
        keys = self.board.drops.take()
        spacing = max(self.settings.probe_timeout, DROP_DELAY)
        for status in list(self.board.models):
            last = self._probed_at.get(status.key)
            if status.key not in keys or not self._due(status):
                continue
            if last is not None and time.monotonic() - last < spacing:
                self.board.drops.note(status.key)  # probed just now: its turn comes later
                continue
            await self.check(status)

    def _due(self, status: ModelStatus) -> bool:
        """Pinned by us (or wedged, to see it serve again); never while pulled or loaded."""
        return (
            self.board.server_up
            and self.board.observed
            and status.spec.pinned
            and (
                status.state == State.PINNED
                or (status.state == State.WEDGED and not status.wedge_repin)
            )
        )

    async def check(self, status: ModelStatus) -> None:
        """Probe one model and act on the answer."""
        before = status.state
        try:
            result = await self._probe(status)
        except OllamaUnavailable:
            return  # serve is away: the server's own watch handles that
        except OllamaAPIError as exc:
            # 400 (an option it rejects), 404 (deleted): answered, so not wedged; the
            # reconcile loop's states and reasons say what is wrong.
            log.debug(
                "model.probe_error",
                msg=f"The probe of {status.spec.display} failed: {exc}",
                model=status.spec.display,
                error=str(exc),
            )
            return
        if status.state != before or self.board.get(status.key) is not status:
            return  # evicted, re-loaded or removed meanwhile: the loop's look decides
        status.probe_durations.observe(result.waited)
        if result.answered:
            status.probe_timeouts = 0
            if status.state == State.WEDGED:
                self._serving_again(status, result)
            return
        progress = result.progress
        if result.cpu is not None and progress is not None and progress >= PROGRESS_CPU:
            status.probe_timeouts = 0
            log.info(
                "model.probe_busy",
                msg=f"{status.spec.display} did not answer the probe within "
                f"{result.waited:.1f}s, but its runner is working ({result.progress_text()}): "
                "busy, not wedged",
                model=status.spec.display,
                waited=round(result.waited, 3),
                cpu_seconds=round(result.cpu, 3),
                cpu_wait_seconds=None if result.cpu_wait is None else round(result.cpu_wait, 3),
            )
            return
        if result.cpu is None and result.pid is None:
            status.probe_timeouts += 1
            if status.probe_timeouts < BLIND_TIMEOUTS:
                return
        status.probe_timeouts = 0
        if status.state == State.WEDGED and self._recent(status):
            return  # reported, nothing more to try for now: /readyz stays false
        await self._wedged(status, result)

    @staticmethod
    def _recent(status: ModelStatus) -> bool:
        at = status.last_wedge_at
        return at is not None and time.monotonic() - at < REWEDGE_WINDOW

    async def _probe(self, status: ModelStatus) -> Probe:
        self._probed_at[status.key] = time.monotonic()
        kind = await self._kind(status)
        pid = await self._runner_pid(status)
        cpu_before = cpu_seconds(pid) if pid is not None else None
        wait_before = cpu_wait_seconds(pid) if pid is not None else None
        started = time.monotonic()
        answered = True
        try:
            async with asyncio.timeout(self.settings.probe_timeout):
                await self.api.probe_model(
                    status.spec.name, kind, -1, self.loader.pinned_options(status)
                )
        except TimeoutError:
            answered = False
        waited = time.monotonic() - started
        cpu_after = cpu_seconds(pid) if pid is not None else None
        wait_after = cpu_wait_seconds(pid) if pid is not None else None
        cpu = cpu_wait = None
        if cpu_before is not None and cpu_after is not None:
            cpu = cpu_after - cpu_before
        if wait_before is not None and wait_after is not None:
            cpu_wait = max(0.0, wait_after - wait_before)  # a thread that ended takes its share
        return Probe(answered, waited, pid, cpu, cpu_wait)

    async def _kind(self, status: ModelStatus) -> ModelKind:
        if status.kind is None or status.blob is None:
            details = await self.api.show(status.spec.name)
            status.kind = status.kind or details.kind
            status.blob = status.blob or details.blob
        assert status.kind is not None
        return status.kind

    async def _runner_pid(self, status: ModelStatus) -> int | None:
        """The model's runner: our serve's child in `run`; in `watch` a process on this host
        running its model file, when Ollama listens on loopback."""
        blob = blob_name(status.blob)
        if self.server.can_see_runners:
            return next((r.pid for r in self.server.runners.current() if r.blob == blob), None)
        if self.settings.ollama_host.is_loopback:
            return await asyncio.to_thread(find_on_host, blob)
        return None

    async def _wedged(self, status: ModelStatus, result: Probe) -> None:
        again = self._recent(status)
        status.last_wedge_at = time.monotonic()
        status.wedges += 1
        repair = self._choose(status, result, again=again)
        status.last_wedge_repair = repair
        status.wedge_repairs[repair] = status.wedge_repairs.get(repair, 0) + 1
        status.state = State.WEDGED
        status.reason = (
            f"a request waited {result.waited:.1f}s unanswered, runner idle "
            f"({result.progress_text()})"
        )
        note_all_ready(self.board)
        what = {
            KILL_RUNNER: f"killing its runner (pid {result.pid}) and pinning it again",
            RESTART_SERVE: "restarting ollama serve"
            + (" (wedged again soon after a repair)" if again else ""),
            UNLOAD_REPIN: "unloading and pinning it again",
            NO_REPAIR: "nothing more to try for now; /readyz stays false until it answers",
        }[repair]
        log.error(
            "model.wedged",
            msg=f"{status.spec.display} is listed pinned but does not serve: {status.reason}; "
            f"{what}",
            model=status.spec.display,
            waited=round(result.waited, 3),
            progress=None if result.progress is None else round(result.progress, 3),
            pid=result.pid,
            repair=repair,
            again=again,
        )
        await self._repair(status, repair, result)

    def _choose(self, status: ModelStatus, result: Probe, *, again: bool) -> str:
        if again and status.last_wedge_repair in (RESTART_SERVE, NO_REPAIR):
            return NO_REPAIR  # even a new serve did not help: report; tried again later
        # A runner of another user is visible in /proc but not ours to kill: the repair is
        # chosen without trying (model.wedged names the one done, counted once).
        killable = result.pid is not None and _may_signal(result.pid)
        if self.server.can_see_runners:  # `run`: the serve is ours
            return RESTART_SERVE if again or not killable else KILL_RUNNER
        if again:
            return NO_REPAIR
        return KILL_RUNNER if killable else UNLOAD_REPIN

    async def _repair(self, status: ModelStatus, repair: str, result: Probe) -> None:
        status.wedge_repin = False
        if repair == KILL_RUNNER and result.pid is not None:
            try:
                os.kill(result.pid, signal.SIGKILL)
                problem = (
                    None
                    if await _exited(result.pid)
                    else f"still running {KILL_WAIT:.0f}s after SIGKILL"
                )
            except OSError as exc:
                problem = str(exc.strerror or exc)
            if problem is not None:
                # Not ours to signal after all, or it does not die: the next best repair.
                fallback = RESTART_SERVE if self.server.can_see_runners else UNLOAD_REPIN
                log.warning(
                    "model.wedge_repair",
                    msg=f"Could not stop the runner of {status.spec.display} "
                    f"(pid {result.pid}): {problem}; {fallback} instead",
                    model=status.spec.display,
                    repair=fallback,
                )
                status.wedge_repairs[fallback] = status.wedge_repairs.get(fallback, 0) + 1
                status.last_wedge_repair = fallback
                await self._repair(status, fallback, Probe(False, result.waited, None, None))
                return
            status.wedge_repin = True
        elif repair == RESTART_SERVE:
            # Every model is pinned again after the restart, this one with them.
            status.state, status.reason = State.EVICTED, "wedged; ollama serve restarted"
            if await self.server.restart(f"{status.spec.display} is wedged"):
                return
            status.state = State.WEDGED
        elif repair == UNLOAD_REPIN:
            with contextlib.suppress(OllamaAPIError):
                await self.api.unload(status.spec.name)
            status.wedge_repin = True
        self._wake.set()

    def _serving_again(self, status: ModelStatus, result: Probe) -> None:
        status.state, status.reason = State.PINNED, None
        log.info(
            "model.pinned",
            msg=f"✓ {status.spec.display} serves again (the probe answered in "
            f"{result.waited:.2f}s)",
            model=status.spec.display,
            reason="probe answered",
            seconds=round(result.waited, 3),
        )
        note_all_ready(self.board)


async def _exited(pid: int) -> bool:
    """Wait (up to KILL_WAIT) for a signalled process to exit; False if it still runs."""
    deadline = time.monotonic() + KILL_WAIT
    while not process_gone(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(KILL_POLL)
    return True


def _may_signal(pid: int) -> bool:
    """Whether we may signal `pid` (signal 0 checks the permission and sends nothing)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return False
    except OSError:
        return True  # gone already: the kill says so, and the fallback repairs
    return True
