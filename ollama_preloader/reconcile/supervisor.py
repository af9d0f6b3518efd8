"""Owns the lifecycle: the server's task, the reconcile loop, the pull worker, signals.

Phases: startup (start the server or wait for it), main loop (observe -> plan -> act -> wait),
shutdown (stop tasks, then the server). `run` and `watch` build this same class, handed an
owned or a remote server (server/): every difference between the modes lives there. Observing
is observation.py, acting is loading.py and pulling.py; docs/architecture.md draws a cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ollama_preloader.config.reload import ModelSource
from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import (
    OllamaAPIError,
    OllamaUnavailable,
    PreloaderError,
    exit_code_for_signal,
)
from ollama_preloader.observe.health import HealthServer
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.observe.output import has_controlling_terminal
from ollama_preloader.observe.summary import log_plan, log_startup_summary
from ollama_preloader.ollama.api import LoadedModel, OllamaAPI
from ollama_preloader.reconcile.loading import Loader, apply_explicit_limit
from ollama_preloader.reconcile.observation import Observer
from ollama_preloader.reconcile.plan import Action, ActionKind, next_look, plan
from ollama_preloader.reconcile.probing import Prober
from ollama_preloader.reconcile.pulling import PullQueue
from ollama_preloader.reconcile.redeclare import Redeclarer
from ollama_preloader.reconcile.retry import fail
from ollama_preloader.reconcile.update_schedule import UpdateScheduler
from ollama_preloader.reconcile.wakes import ServerWakes
from ollama_preloader.server.base import Server
from ollama_preloader.state.board import READY_STATES, Board, State
from ollama_preloader.state.runner_facts import RunnerExit

if TYPE_CHECKING:
    from ollama_preloader.guard.proxy import Guard

log = get_logger()

# `run` wakes on Ollama's lines and runner exits, so its /api/ps timer is only a safety net
# once every model is settled; PRELOADER_WATCH_INTERVAL, when set, is used as it is.
SETTLED_INTERVAL = 5.0


class Supervisor:
    """One supervisor run. `run()` returns the exit code or raises a PreloaderError."""

    def __init__(
        self,
        settings: Settings,
        server: Server,
        *,
        api: OllamaAPI | None = None,
        env_file: Path | None = None,
        server_env: Mapping[str, str] | None = None,
        mode_defaults: Callable[[Settings], Settings] | None = None,
    ) -> None:
        """`env_file` is what SIGHUP re-reads; `server_env` the environment `ollama serve`
        was started with (`run`), to name OLLAMA_* variables edited in it (None: `watch`);
        `mode_defaults` what the command does to settings it loads (`watch`'s defaults)."""
        self.settings = settings
        self.server = server
        self.board = Board.for_specs(settings.models)
        self.api = api or OllamaAPI(
            settings.ollama_host.base_url,
            call_timeout=settings.api_timeout,
            pull_stall_timeout=settings.pull_stall_timeout,
        )
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # start the next cycle now, not a watch interval later
        self._ready = asyncio.Event()  # the server answers: the reconcile loop may run
        self._fatal: PreloaderError | None = None
        self._signals = 0
        self._hung_up = False  # the terminal went away: a stop, exit 128+SIGHUP
        self._had_terminal = False
        self._nohup = False
        self.wakes = ServerWakes(self._wake, self.api.own)  # `run`: Ollama's lines
        self.observer = Observer(settings, self.api, self.board, server)
        self.loader = Loader(
            settings,
            self.api,
            self.board,
            read_ps=self.observer.read_ps,
            store_changed=self.observer.store_changed,
            runners=server.runners,
            listed_before=self.observer.listed_before,
        )
        self.prober = Prober(settings, self.api, self.board, server, self.loader, wake=self._wake)
        self.pulls = PullQueue(
            settings,
            self.api,
            self.board,
            store_changed=self.observer.store_changed,
            wake=self._wake,
        )
        self.source = ModelSource(
            settings, env_file=env_file, server_env=server_env, mode_defaults=mode_defaults
        )
        self.changes = Redeclarer(
            settings,
            self.api,
            self.board,
            observer=self.observer,
            pulls=self.pulls,
            wake=self._wake,
        )
        self.updates = UpdateScheduler(
            settings,
            self.api,
            self.board,
            server,
            ready=self._ready,
            store_changed=self.observer.store_changed,
        )
        self.health: HealthServer | None = None
        if settings.health_port is not None:
            self.health = HealthServer(
                self.board,
                host=settings.health_host,
                port=settings.health_port,
                undeclared=lambda: self.observer.undeclared,
                liveness=self._liveness,
            )
        self.guard: Guard | None = None
        if settings.guard:
            # Imported only when on: aiohttp stays out of `health` and the idle loop otherwise.
            from ollama_preloader.guard.wiring import build_guard

            registry = self.health.registry if self.health is not None else None
            self.guard = build_guard(
                settings,
                self.board,
                registry,
                owned=server.can_see_runners,
                swap=self.updates.pull_for_client,
            )

    # ----- lifecycle -------------------------------------------------------------------------

    async def run(self) -> int:
        self._install_signal_handlers()
        log_plan(self.settings, self.board, self.server.profile)
        apply_explicit_limit(self.board, self.settings)
        if self.health is not None:
            await self.health.start()  # a taken port is a ConfigError before Ollama starts
        if self.guard is not None:
            try:
                await self.guard.start()  # the same for the guard's address
            except BaseException:
                if self.health is not None:
                    await self.health.close()
                raise
        try:
            await self.server.start(self)
            if not self._stop.is_set():
                await log_startup_summary(self.api, self.board, self.settings.pull_policy)
                await self._main_loop()
        finally:
            await self._shutdown()
        if self._fatal is not None:
            raise self._fatal
        return exit_code_for_signal(signal.SIGHUP) if self._hung_up else 0

    async def _main_loop(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._guard(lambda: self.server.supervise(self))),
                tg.create_task(self._guard(lambda: self.server.watch_runners(self))),
                tg.create_task(self._guard(self._reconcile_loop)),
                tg.create_task(self._guard(self.pulls.run)),
                tg.create_task(self._guard(self.prober.run)),
                tg.create_task(self._guard(lambda: self.source.run(self.changes.apply))),
                tg.create_task(self._guard(self.updates.run)),
            ]
            if self.health is not None:
                tasks.append(tg.create_task(self._guard(self.health.serve)))
            if self.guard is not None:
                tasks.append(tg.create_task(self._guard(self.guard.serve)))
            await self._stop.wait()
            for task in tasks:
                task.cancel()

    async def _guard(self, body: Callable[[], Awaitable[None]]) -> None:
        """A task that fails unexpectedly stops the supervisor instead of dying silently."""
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except PreloaderError as exc:
            self._fatal = self._fatal or exc
            self._stop.set()
        except Exception as exc:
            log.exception("supervisor.crashed", msg=f"Internal error: {exc!r}")
            self._fatal = self._fatal or PreloaderError(f"internal error: {exc!r}")
            self._stop.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        # SIGHUP is two things: the terminal we run in went away (a closed window, an SSH drop,
        # a tmux pane closed), or a request to re-read the model list (`docker kill -s HUP`,
        # systemd's ExecReload), which never comes with a terminal that is gone.
        self._had_terminal = has_controlling_terminal()
        self._nohup = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)

    def _on_hangup(self) -> None:
        if not self._had_terminal or has_controlling_terminal():
            self.source.request_reload()
            if self.guard is not None:
                self.guard.reload_keys()
            return
        if self._nohup or self._stop.is_set():
            return  # started under nohup: a hangup is what the user asked to survive
        self._hung_up = True
        self._signals += 1
        log.info(
            "supervisor.hangup",
            msg="The terminal hung up; stopping (exit 129)",
            signal="SIGHUP",
        )
        self._stop.set()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info(
                "supervisor.stopping",
                msg=f"Received {name}; stopping (send it again to kill at once)",
                signal=name,
            )
            self._stop.set()
            return
        self.server.force_exit(signum)

    def _liveness(self) -> str | None:
        """Why /livez fails, or None while the supervisor runs and its server is up."""
        if self._stop.is_set():
            return "the supervisor is stopping"
        return self.server.liveness()

    async def _shutdown(self) -> None:
        """Stop the server first, whatever else fails: it is what holds the memory."""
        try:
            await self.server.stop()
        finally:
            if self.guard is not None:
                await self.guard.close()
            if self.health is not None:
                await self.health.close()
            await self.api.aclose()
        log.info("supervisor.stopped", msg="Stopped")

    # ----- what the server reports (server/base.py: Link) ------------------------------------

    @property
    def stopping(self) -> asyncio.Event:
        return self._stop

    def server_lost(self) -> None:
        self._ready.clear()
        self.board.server_up = False
        if self.guard is not None:
            self.guard.server_down()  # new requests wait for the restart (PRELOADER_GUARD_HOLD)
        # Nothing is in memory while serve is away (or nothing can be told): say so per model,
        # so `status`, /status and model_pinned agree with server_up=0. The first look after
        # the return finds the ones a remote server kept and marks them pinned again.
        for status in self.board.models:
            if status.dead_runner is not None:
                # A runner of the serve that went away is no crash to repair: serve took it.
                status.dead_runner = None
                if status.state == State.LOADING:  # marked for that repair, not loading yet
                    status.state = State.PINNED  # (as before the exit) for the line below
            if status.state == State.LOADED:
                # A finite keep_alive entry is not put back (plan.py): it went with serve.
                status.state, status.reason = State.EXPIRED, "ollama serve is not answering"
                status.size = status.size_vram = status.expires_at = None
            elif status.state in READY_STATES or status.state == State.WEDGED:
                status.state, status.reason = State.EVICTED, "ollama serve is not answering"
                status.size = status.size_vram = status.expires_at = None

    def server_restarted(self) -> None:
        self.board.server_restarts += 1

    def runner_exited(self, exit_: RunnerExit) -> None:
        """Judged at once: a dead runner is reloaded within 2 s, before a client finds it."""
        self.observer.runner_exited(exit_)
        self._wake.set()

    def server_changed(self, request: bool) -> None:
        """Ollama's output says a request or a runner start may have changed what is loaded."""
        self.wakes.changed(request)

    def _next_look(self) -> float:
        settings = self.settings
        settled = settings.watch_interval
        if self.server.can_see_runners and "watch_interval" not in settings.model_fields_set:
            settled = max(settled, SETTLED_INTERVAL)
        return next_look(
            self.board.models,
            monotonic_now=time.monotonic(),
            interval=settings.watch_interval,
            settled_interval=settled,
            refresh_interval=settings.refresh_interval,
        )

    async def server_ready(self, elapsed: float, *, first: bool) -> None:
        """Ollama answers: say which version, re-read the store, let the reconcile loop run."""
        version = "unknown"
        with contextlib.suppress(OllamaAPIError):
            version = await self.api.version()
        self.board.server_up = True
        self._ready.set()
        if self.guard is not None:
            self.guard.server_up()
        self.wakes.server_ready()
        self.observer.store_changed()
        self.observer.exits.clear()  # runners of an earlier serve went with it: no crash
        for status in self.board.models:
            status.dead_runner = None  # (a load that failed meanwhile may have put one back)
        self._wake.set()
        log.info(
            "server.ready",
            msg=f"Ollama {version} is ready at {self.api.base_url} ({elapsed:.2f}s)",
            url=self.api.base_url,
            version=version,
            seconds=round(elapsed, 3),
            restart=not first,
        )

    # ----- the loop: observe -> plan -> act -> wait -------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            await self._ready.wait()
            # Cleared before the cycle, not after: a pull that ends while this cycle loads
            # another model must start the next cycle at once, not a watch interval later.
            self._wake.clear()
            try:
                await self.changes.settle()  # between cycles: no load of ours in flight
                await self._cycle()
            except OllamaUnavailable as exc:
                self.server.on_unanswered()
                log.debug("watch.unavailable", msg=f"Ollama did not answer: {exc}")
            except OllamaAPIError as exc:
                log.warning("watch.error", msg=f"Could not read Ollama's state: {exc}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_look()):
                    await self._wake.wait()

    async def _cycle(self) -> None:
        tags = await self.observer.read_tags()  # None unless the store may have changed
        loaded = await self.observer.read_ps()
        self._observe(loaded)
        if tags is not None:
            await self.observer.check_resources(tags, loaded)
        actions = plan(
            self.board.models,
            loaded,
            pull_policy=self.settings.pull_policy,
            now=datetime.now(UTC),
            monotonic_now=time.monotonic(),
            refresh_interval=self.settings.refresh_interval,
        )
        # Pulls only join the worker's queue, so they go first: each runs while this cycle's
        # loads go on, instead of waiting for them. Each group keeps its priority order.
        actions.sort(key=lambda action: action.kind != ActionKind.PULL)
        for action in actions:
            if self._stop.is_set() or not self._ready.is_set():
                return
            await self._act(action)

    def _observe(self, loaded: list[LoadedModel]) -> None:
        """The server's hook sees the look first (a remote one may infer a restart from it)."""
        if self.server.on_observed(loaded, self.board):
            self.observer.store_changed()
        self.observer.observe(loaded)

    async def _act(self, action: Action) -> None:
        status = self.board.get(action.key)
        if status is None:
            return  # removed by a live reload since this cycle's plan
        if action.kind == ActionKind.PULL:
            await self.pulls.put(status)
        elif action.kind == ActionKind.UPDATE:
            await self.pulls.put(status, background=True)
        elif action.kind == ActionKind.MISSING:
            self.observer.store_changed()
            fail(
                status,
                "not on disk and PRELOADER_PULL_POLICY=never; run `ollama pull "
                f"{status.spec.name}` or change the policy",
                max(30.0, self.settings.watch_interval),
            )
        else:
            await self.loader.load(status, action)
