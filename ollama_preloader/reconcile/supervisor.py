"""Owns the lifecycle: the server's task, the reconcile loop, the pull worker, signals.

Phases: startup (start the server or wait for it), main loop (observe -> plan -> act -> wait),
shutdown (stop tasks, then the server). `run` and `watch` build this same class, handed an
owned or a remote server (server/): every difference between the modes lives there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import (
    OllamaAPIError,
    OllamaUnavailable,
    PreloaderError,
)
from ollama_preloader.observe.health import HealthServer
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.observe.resources import (
    ModelSize,
    assess,
    describe_figures,
    gather_figures,
    held_by_runners,
)
from ollama_preloader.observe.summary import log_startup_summary, note_all_ready
from ollama_preloader.ollama.api import LoadedModel, LocalModel, OllamaAPI
from ollama_preloader.reconcile.drift import check_context
from ollama_preloader.reconcile.loading import Loader, apply_explicit_limit
from ollama_preloader.reconcile.plan import Action, ActionKind, find_loaded, plan
from ollama_preloader.reconcile.pulling import failure_reason, is_not_found, pull_model
from ollama_preloader.reconcile.retry import backoff_seconds, fail
from ollama_preloader.reconcile.status import READY_STATES, Board, ModelStatus, State
from ollama_preloader.server.base import Server

log = get_logger()

NOT_FOUND_BACKOFF = 600.0  # a name the registry does not know will not appear soon


class Supervisor:
    """One supervisor run. `run()` returns the exit code or raises a PreloaderError."""

    def __init__(self, settings: Settings, server: Server, *, api: OllamaAPI | None = None) -> None:
        self.settings = settings
        self.server = server
        self.board = Board.for_specs(settings.models)
        self.api = api or OllamaAPI(
            settings.ollama_host.base_url,
            call_timeout=settings.api_timeout,
            pull_stall_timeout=settings.pull_stall_timeout,
        )
        self.undeclared: list[LoadedModel] = []
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._pulls: asyncio.PriorityQueue[tuple[int, str]] = asyncio.PriorityQueue()
        self._queued: set[str] = set()
        self._tags_dirty = True
        self._tags_read_at = 0.0
        self._fatal: PreloaderError | None = None
        self._signals = 0
        # Model file of each runner /api/ps lists, by (name, digest): resolves shared runners.
        self._blobs: dict[tuple[str, str], str | None] = {}
        self._sizes_checked: tuple[ModelSize, ...] | None = None
        self._resources_warned: tuple[str, tuple[str, ...]] | None = None
        self.loader = Loader(
            settings,
            self.api,
            self.board,
            read_ps=self._read_ps,
            store_changed=self._store_changed,
        )
        self.health: HealthServer | None = None
        if settings.health_port is not None:
            self.health = HealthServer(
                self.board,
                host=settings.health_host,
                port=settings.health_port,
                undeclared=lambda: self.undeclared,
                liveness=self._liveness,
            )

    # ----- lifecycle -------------------------------------------------------------------------

    async def run(self) -> int:
        self._install_signal_handlers()
        self._log_plan()
        apply_explicit_limit(self.board, self.settings)
        if self.health is not None:
            await self.health.start()  # a taken port is a ConfigError before Ollama starts
        try:
            await self.server.start(self)
            if not self._stop.is_set():
                await log_startup_summary(self.api, self.board, self.settings.pull_policy)
                await self._main_loop()
        finally:
            await self._shutdown()
        if self._fatal is not None:
            raise self._fatal
        return 0

    async def _main_loop(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._guard(lambda: self.server.supervise(self))),
                tg.create_task(self._guard(self._reconcile_loop)),
                tg.create_task(self._guard(self._pull_worker)),
            ]
            if self.health is not None:
                tasks.append(tg.create_task(self._guard(self.health.serve)))
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
        if self.health is not None:
            await self.health.close()
        await self.server.stop()
        await self.api.aclose()
        log.info("supervisor.stopped", msg="Stopped")

    # ----- what the server reports (server/base.py: Link) ----------------------------------

    @property
    def stopping(self) -> asyncio.Event:
        return self._stop

    def server_lost(self) -> None:
        self._ready.clear()
        self.board.server_up = False

    def server_restarted(self) -> None:
        self.board.server_restarts += 1

    async def server_ready(self, elapsed: float, *, first: bool) -> None:
        """Ollama answers: say which version, re-read the store, let the reconcile loop run."""
        version = "unknown"
        with contextlib.suppress(OllamaAPIError):
            version = await self.api.version()
        self.board.server_up = True
        self._ready.set()
        self._tags_dirty = True
        self._wake.set()
        log.info(
            "server.ready",
            msg=f"Ollama {version} is ready at {self.api.base_url} ({elapsed:.2f}s)",
            url=self.api.base_url,
            version=version,
            seconds=round(elapsed, 3),
            restart=not first,
        )

    # ----- reconcile ---------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            await self._ready.wait()
            # Cleared before the cycle, not after: a pull that ends while this cycle loads
            # another model must start the next cycle at once, not a watch interval later.
            self._wake.clear()
            try:
                await self._cycle()
            except OllamaUnavailable as exc:
                self.server.on_unanswered()
                log.debug("watch.unavailable", msg=f"Ollama did not answer: {exc}")
            except OllamaAPIError as exc:
                log.warning("watch.error", msg=f"Could not read Ollama's state: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.watch_interval)

    async def _cycle(self) -> None:
        tags: list[LocalModel] | None = None
        if time.monotonic() - self._tags_read_at > self.settings.refresh_interval:
            self._tags_dirty = True  # notice re-pulls and deletions made by hand, now and then
        if self._tags_dirty:
            self._tags_read_at = time.monotonic()
            tags = await self.api.tags()
            on_disk = {m.key: m for m in tags}
            for status in self.board.models:
                local = on_disk.get(status.key)
                status.present = local is not None
                status.digest = local.digest if local else None
            self._tags_dirty = False
        loaded = await self._read_ps()
        self._observe(loaded)
        if tags is not None:
            await self._check_resources(tags, loaded)
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

    def _store_changed(self) -> None:
        self._tags_dirty = True

    async def _read_ps(self) -> list[LoadedModel]:
        return await self._with_blobs(await self.api.ps())

    async def _with_blobs(self, loaded: list[LoadedModel]) -> list[LoadedModel]:
        """Fill in each runner's model file, but only when a declared model is not listed under
        its own name: then it may be served by a runner loaded under another name (§9.3)."""
        names = {m.key for m in loaded}
        if not any(s.blob and s.key not in names for s in self.board.models):
            return loaded
        out = []
        for entry in loaded:
            cache_key = (entry.key, entry.digest)
            if cache_key not in self._blobs:
                try:
                    self._blobs[cache_key] = (await self.api.show(entry.name)).blob
                except OllamaAPIError:
                    out.append(entry)  # not cached: try again next cycle
                    continue
            out.append(dataclasses.replace(entry, blob=self._blobs[cache_key]))
        return out

    def _warn_once(
        self, status: ModelStatus, key: str, event: str, msg: str, **fields: Any
    ) -> None:
        if key not in status.warned:
            status.warned.add(key)
            log.warning(event, msg=msg, model=status.spec.display, **fields)

    def _observe_runner(
        self, status: ModelStatus, entry: LoadedModel, loaded: list[LoadedModel]
    ) -> None:
        """One-off warnings about how a declared model is being served."""
        spec = status.spec
        if entry.key != status.key:
            status.shared_with = entry.name
            self._warn_once(
                status,
                f"shared:{entry.key}",
                "model.shared_runner",
                f"{spec.display} shares its model file with {entry.name} and is served by its "
                "runner; it counts as pinned while that runner is",
                shared_with=entry.name,
            )
            other = self.board.get(entry.key)
            if other is not None and other.spec.options != spec.options:
                self._warn_once(
                    status,
                    f"shared-options:{entry.key}",
                    "model.shared_options",
                    f"{spec.display} and {other.spec.display} share a model file but have "
                    "different options, so requests for one reload the other; give them the "
                    "same options",
                    shared_with=other.spec.display,
                )
        else:
            status.shared_with = None
        digests = {m.digest for m in loaded if m.key == status.key}
        if status.digest and (len(digests) > 1 or entry.digest != status.digest):
            # A re-pull brought a new file; the old runner stays until it is evicted (§9.4).
            self._warn_once(
                status,
                f"stale:{status.digest}",
                "model.stale_runner",
                f"{spec.display} is pinned with an older download ({entry.digest[:12]}); the "
                f"new one ({status.digest[:12]}) is used after ollama serve restarts or the "
                "old runner is unloaded (`ollama stop` the model)",
                loaded_digest=entry.digest[:12],
                disk_digest=status.digest[:12],
            )

    def _observe(self, loaded: list[LoadedModel]) -> None:
        if self.server.on_observed(loaded, self.board):
            self._tags_dirty = True
        now = datetime.now(UTC)
        mono = time.monotonic()
        keys = set()
        for status in self.board.models:
            entry = find_loaded(status, loaded)
            if entry is not None:
                keys.add(entry.key)
                self._observe_runner(status, entry, loaded)
                status.size, status.size_vram = entry.size, entry.size_vram
                status.context_length, status.expires_at = entry.context_length, entry.expires_at
                check_context(status, entry.context_length)
            else:
                status.size = status.size_vram = status.context_length = status.expires_at = None
            if status.state in (State.PULLING, State.LOADING):
                continue
            if status.retry_at > mono:
                continue  # gave way (capacity) or failed: leave it alone until its retry
            if entry is not None and status.state not in (State.PINNED, State.LOADED):
                if status.spec.pinned and entry.is_pinned(now):
                    # Already pinned before we asked (another run of ours, or a sidecar restart).
                    status.state, status.reason = State.PINNED, None
                    status.ever_loaded, status.last_load_at = True, mono
                    log.info(
                        "model.pinned",
                        msg=f"✓ {status.spec.display} is already loaded and pinned",
                        model=status.spec.display,
                        already=True,
                    )
            elif entry is None and status.state == State.PINNED:
                status.state, status.reason = State.EVICTED, "evicted"
                log.warning(
                    "model.evicted",
                    msg=f"{status.spec.display} was unloaded (evicted or stopped); "
                    "loading it again",
                    model=status.spec.display,
                )
        self.undeclared = [m for m in loaded if m.key not in keys]
        self.board.observed_restarts = self.board.server_restarts
        self._note_capacity_freed(len(loaded))
        note_all_ready(self.board)

    def _note_capacity_freed(self, runners: int) -> None:
        """A model that gave way is retried early once fewer runners are loaded than when it
        gave way, and every model before it in the list is resident."""
        for status in self.board.models:
            if status.capacity_loaded is None or runners >= status.capacity_loaded:
                continue
            before = [m for m in self.board.models if m.spec.priority < status.spec.priority]
            if all(m.state in READY_STATES for m in before):
                status.capacity_loaded, status.retry_at = None, 0.0
                log.info(
                    "capacity.freed",
                    msg=f"Fewer models are loaded now; trying {status.spec.display} again",
                    model=status.spec.display,
                    runners=runners,
                )

    async def _check_resources(self, tags: list[LocalModel], loaded: list[LoadedModel]) -> None:
        """Warn, before loading, when the pinned models clearly cannot all fit; an estimate.

        Sizes come from /api/tags, so a model is counted once it is pulled: this runs again
        whenever the sizes known change. It never stops anything.
        """
        if not self.server.memory_is_local:
            return  # this machine's memory says nothing about a server elsewhere
        on_disk = {m.key: m for m in tags}
        sizes = tuple(
            ModelSize(
                s.spec.display,
                on_disk[s.key].size if s.key in on_disk else None,
                on_disk[s.key].digest if s.key in on_disk else "",
            )
            for s in self.board.models
            if s.spec.pinned  # a finite keep_alive lets the model go again
        )
        if not sizes or sizes == self._sizes_checked:
            return
        self._sizes_checked = sizes
        figures = await gather_figures(self.server.environment, self.server.compute_lines())
        held_system, held_gpu = held_by_runners(
            [(m.size, m.size_vram) for m in loaded], has_gpus=bool(figures.gpus)
        )
        findings = assess(sizes, figures, held_system=held_system, held_gpu=held_gpu)
        log.debug(
            "resources.checked",
            msg=f"Memory for the models: {describe_figures(figures)}",
            models=sum(1 for m in sizes if m.size is not None),
            needed=sum(m.size or 0 for m in sizes),
            fits=not findings,
        )
        for finding in findings:
            key = (finding.scope, finding.over)
            if key == self._resources_warned:
                continue
            self._resources_warned = key
            system, gpus = figures.system, figures.gpus
            log.warning(
                "resources.warning",
                msg=finding.message,
                estimate=True,
                scope=finding.scope,
                models=list(finding.models),
                over=list(finding.over),
                unknown=list(finding.unknown),
                needed=finding.needed,
                available=finding.available,
                held=finding.held,
                system_total=system.total if system else None,
                system_available=system.available if system else None,
                gpu_total=sum(g.total for g in gpus) if gpus else None,
                gpu_free=sum(g.free for g in gpus) if gpus else None,
                gpu_source=figures.gpu_source,
            )

    async def _act(self, action: Action) -> None:
        status = self.board.get(action.key)
        assert status is not None
        if action.kind == ActionKind.PULL:
            if status.key not in self._queued:
                self._queued.add(status.key)
                status.state = State.PULLING
                await self._pulls.put((status.spec.priority, status.key))
        elif action.kind == ActionKind.MISSING:
            self._tags_dirty = True
            fail(
                status,
                "not on disk and PRELOADER_PULL_POLICY=never; run `ollama pull "
                f"{status.spec.name}` or change the policy",
                max(30.0, self.settings.watch_interval),
            )
        else:
            await self.loader.load(status, action)

    # ----- pulling -----------------------------------------------------------------------------

    async def _pull_worker(self) -> None:
        """Pulls one model at a time, highest priority first, while loads go on."""
        while True:
            _, key = await self._pulls.get()
            status = self.board.get(key)
            assert status is not None
            try:
                await self._pull(status)
            finally:
                self._queued.discard(key)
                self._wake.set()

    async def _pull(self, status: ModelStatus) -> None:
        try:
            await pull_model(self.api, self.settings, status)
        except OllamaAPIError as exc:
            self._pull_failed(
                status, failure_reason(exc), NOT_FOUND_BACKOFF if is_not_found(exc) else None
            )
            return
        self._tags_dirty = True  # the new model's size, for the memory check
        status.state = State.EVICTED if status.ever_loaded else State.PENDING
        status.failures = 0

    def _pull_failed(self, status: ModelStatus, reason: str, retry_in: float | None) -> None:
        delay = retry_in or backoff_seconds(
            self.settings, status.failures + 1, floor=self.settings.retry_max
        )
        self._tags_dirty = True
        fail(status, reason, delay)

    # ----- reporting ---------------------------------------------------------------------------

    def _log_plan(self) -> None:
        for warning in self.settings.parse_warnings:
            log.warning("config.warning", msg=warning)
        log.info(
            "server.profile",
            msg=self.server.profile.describe(),
            profile=self.server.profile.profile,
            quantization=self.server.profile.quantization,
            env=self.server.profile.effective,
            kept=list(self.server.profile.kept),
        )
        models = self.board.models
        if not models:
            log.info(
                "preload.plan",
                msg="No models to preload (OLLAMA_PRELOAD_MODELS is empty); supervising "
                "ollama serve only",
                models=0,
            )
            return
        names = ", ".join(m.spec.display for m in models)
        log.info(
            "preload.plan",
            msg=f"Preloading {len(models)} models in priority order: {names}",
            models=len(models),
            pull_policy=self.settings.pull_policy,
        )

    def snapshot(self) -> dict[str, Any]:
        """What `/status` and `status --json` show."""
        return self.board.document(self.undeclared, live_reason=self._liveness())
