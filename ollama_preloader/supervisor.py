"""Owns the lifecycle: the `ollama serve` child, the reconcile loop, the pull worker, signals.

Phases: startup (spawn, wait for `GET /`), main loop (observe -> plan -> act -> wait), shutdown
(stop tasks, SIGTERM the child's group, SIGKILL after the grace period).

The server side is pluggable: `_start_server` (startup), `_supervise_server` (a main-loop task)
and `_liveness` own `ollama serve` here; sidecar.py overrides them for a server it does not own.
Everything else (reconcile, pulls, loads, signals, status) is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ollama_preloader import capacity
from ollama_preloader.drift import check_context, note_loaded, watching_context
from ollama_preloader.durations import format_seconds
from ollama_preloader.errors import (
    ModelNotFound,
    NotSupported,
    OllamaAPIError,
    OllamaUnavailable,
    PreloaderError,
    ServerBusy,
    ServerError,
    ServerExited,
)
from ollama_preloader.health import HealthServer
from ollama_preloader.logs import get_logger
from ollama_preloader.modelspec import ModelKind
from ollama_preloader.ollama_api import LoadedModel, LocalModel, OllamaAPI
from ollama_preloader.process import OllamaServer, force_exit
from ollama_preloader.profiles import apply_profile
from ollama_preloader.pulling import failure_reason, permanent_backoff, pull_model
from ollama_preloader.reconcile import Action, ActionKind, find_loaded, plan
from ollama_preloader.resources import (
    ModelSize,
    assess,
    describe_figures,
    gather_figures,
    held_by_runners,
)
from ollama_preloader.retry import backoff_seconds
from ollama_preloader.settings import Settings
from ollama_preloader.status import READY_STATES, Board, ModelStatus, State
from ollama_preloader.summary import log_startup_summary

log = get_logger()

HEALTHY_RUN = 300.0  # a serve that ran this long resets the restart backoff
RESTART_BACKOFF_MAX = 60.0


class Supervisor:
    """One supervisor run. `run()` returns the exit code or raises a PreloaderError."""

    def __init__(
        self,
        settings: Settings,
        *,
        server_env: Mapping[str, str],
        api: OllamaAPI | None = None,
    ) -> None:
        self.settings = settings
        self.board = Board.for_specs(settings.models)
        self.api = api or OllamaAPI(
            settings.ollama_host.base_url,
            call_timeout=settings.api_timeout,
            pull_stall_timeout=settings.pull_stall_timeout,
        )
        # Profiles act only through the child's environment, never through request options.
        self.profile = apply_profile(server_env, settings.profile, settings.quantization)
        self.server_env = self.profile.env
        self.server: OllamaServer | None = None
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
        self._apply_explicit_limit()
        if self.health is not None:
            await self.health.start()  # a taken port is a ConfigError before Ollama starts
        try:
            await self._start_server(first=True)
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
                tg.create_task(self._guard(self._supervise_server)),
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
        force_exit(self.server, signum)

    def _liveness(self) -> str | None:
        """Why /livez fails, or None while the supervisor runs and so does `ollama serve`."""
        if self._stop.is_set():
            return "the supervisor is stopping"
        if self.server is None or self.server.returncode is not None:
            return "ollama serve is not running (the supervisor is restarting it)"
        return None

    async def _shutdown(self) -> None:
        if self.health is not None:
            await self.health.close()
        if self.server is not None:
            code = await self.server.stop(self.settings.shutdown_grace)
            log.info("server.stopped", msg="ollama serve stopped", returncode=code)
        await self.api.aclose()
        log.info("supervisor.stopped", msg="Stopped")

    # ----- the child -------------------------------------------------------------------------

    async def _start_server(self, *, first: bool) -> None:
        server = OllamaServer(
            self.settings.ollama_command,
            self.server_env,
            quiet_polls=not self.settings.log_polls,
        )
        self.server = server
        await server.start()
        started = time.monotonic()
        ready = await self._wait_ready(server)
        if not ready:
            return
        await self._server_ready(time.monotonic() - started, first=first)

    async def _server_ready(self, elapsed: float, *, first: bool) -> None:
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

    async def _wait_ready(self, server: OllamaServer) -> bool:
        """Poll `GET /` until it answers 200; ServerError if the child exits or time runs out."""
        return await server.wait_ready(
            self.api.probe,
            url=self.api.base_url,
            within=self.settings.ready_timeout,
            stopping=self._stop,
        )

    async def _supervise_server(self) -> None:
        failures = 0
        while True:
            server = self.server
            assert server is not None
            started = time.monotonic()
            code = await server.wait()
            if self._stop.is_set():
                return
            self._ready.clear()
            self.board.server_up = False
            log.error(
                "server.exited",
                msg=f"ollama serve exited unexpectedly with code {code}: "
                f"{server.last_error_line()}",
                returncode=code,
            )
            await server.stop(0)  # kill runners left in its group, holding GPU memory
            if self.settings.on_server_exit == "exit":
                raise ServerExited(
                    f"ollama serve exited with code {code} and PRELOADER_ON_SERVER_EXIT=exit",
                    code,
                )
            failures = 1 if time.monotonic() - started > HEALTHY_RUN else failures + 1
            delay = min(RESTART_BACKOFF_MAX, 2.0 ** (failures - 1))
            log.info(
                "server.restarting",
                msg=f"Restarting ollama serve in {delay:g}s",
                delay=delay,
                attempt=failures,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
                return
            self.board.server_restarts += 1
            try:
                await self._start_server(first=False)
            except ServerError as exc:
                log.error("server.restart_failed", msg=str(exc))
            if self._stop.is_set():
                return

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
        loaded = await self._with_blobs(await self.api.ps())
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
        self._note_all_ready()

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
        compute = self.server.compute_lines() if self.server is not None else []
        figures = await gather_figures(self.server_env, compute)
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

    def _note_all_ready(self) -> None:
        if self.board.models and self.board.all_ready and self.board.all_pinned_after is None:
            elapsed = time.monotonic() - self.board.started_at
            self.board.all_pinned_after = elapsed
            log.info(
                "preload.complete",
                msg=f"✓ Preloading complete: all {len(self.board.models)} models loaded "
                f"and pinned in {elapsed:.1f}s",
                models=len(self.board.models),
                seconds=round(elapsed, 3),
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
            self._fail(
                status,
                "not on disk and PRELOADER_PULL_POLICY=never; run `ollama pull "
                f"{status.spec.name}` or change the policy",
                max(30.0, self.settings.watch_interval),
            )
        else:
            await self._load(status, action)

    # ----- loading -----------------------------------------------------------------------------

    async def _detect_kind(self, status: ModelStatus) -> ModelKind:
        if status.kind is not None:
            return status.kind
        details = await self.api.show(status.spec.name)
        status.kind, status.blob = details.kind, details.blob
        log.info(
            "model.kind",
            msg=f"{status.spec.display} is a {status.kind.value} model",
            model=status.spec.display,
            kind=status.kind.value,
            source="capabilities" if details.capabilities is not None else "pooling_type",
        )
        return status.kind

    async def _send_load(self, status: ModelStatus, kind: ModelKind) -> None:
        spec = status.spec
        if kind == ModelKind.EMBEDDING:
            await self.api.load_embedding(spec.name, spec.keep_alive_value, spec.options_dict())
        else:
            await self.api.load_completion(spec.name, spec.keep_alive_value, spec.options_dict())

    async def _send_load_detecting(self, status: ModelStatus, kind: ModelKind) -> ModelKind:
        spec = status.spec
        try:
            await self._send_load(status, kind)
        except NotSupported:
            if spec.kind is not None or kind == ModelKind.EMBEDDING:
                raise
            # The server refused generate: it is an embedding model after all.
            status.kind = kind = ModelKind.EMBEDDING
            log.info(
                "model.kind",
                msg=f"{spec.display} does not support generate; loading it as an embedding model",
                model=spec.display,
                kind=kind.value,
                source="generate refused",
            )
            await self._send_load(status, kind)
        return kind

    async def _load(self, status: ModelStatus, action: Action) -> None:
        spec = status.spec
        previous = status.state
        refresh = action.kind == ActionKind.REFRESH
        try:
            kind = await self._detect_kind(status)
        except ModelNotFound:
            status.present, self._tags_dirty = False, True
            return
        except OllamaUnavailable:
            return
        except OllamaAPIError as exc:
            self._load_failed(status, f"could not inspect the model: {exc}")
            return
        if refresh:
            log.debug("model.refresh", msg=f"Refreshing {spec.display}", model=spec.display)
        else:
            if action.kind == ActionKind.REPIN:
                log.warning(
                    "model.unpinned",
                    msg=f"{spec.display} is loaded but no longer pinned (a client changed its "
                    "keep_alive); pinning it again",
                    model=spec.display,
                    expires_at=status.expires_at.isoformat() if status.expires_at else None,
                )
            status.state = State.LOADING
            log.info(
                "model.loading",
                msg=f"Loading {spec.display} ({kind.value}, "
                f"keep_alive {format_seconds(spec.keep_alive)})",
                model=spec.display,
                kind=kind.value,
                reason=action.reason,
                options=spec.options_dict() or None,
            )
        started = time.monotonic()
        try:
            kind = await watching_context(
                self.api,
                status,
                self._send_load_detecting(status, kind),
                self.settings.watch_interval,
            )
        except ModelNotFound:
            # Deleted by hand since the last look: the next cycle pulls it (policy permitting).
            status.state, status.present, self._tags_dirty = previous, False, True
            log.warning(
                "model.missing", msg=f"{spec.display} is no longer on disk", model=spec.display
            )
            return
        except (OllamaUnavailable, ServerBusy) as exc:
            # Transient: Ollama is restarting or its queue is full. Try again soon.
            status.state = previous
            status.failures += 1
            delay = backoff_seconds(
                self.settings, status.failures, floor=self.settings.watch_interval
            )
            status.retry_at = time.monotonic() + delay
            log.warning(
                "model.load.retry",
                msg=f"Loading {spec.display}: {exc}; trying again in {delay:.1f}s",
                model=spec.display,
                error=str(exc),
                wait=round(delay, 2),
            )
            return
        except OllamaAPIError as exc:
            status.state = previous
            await self._load_error(status, exc)
            return
        elapsed = time.monotonic() - started
        now = time.monotonic()
        status.last_load_at = now
        status.reason, status.failures, status.retry_at = None, 0, 0.0
        status.state = State.PINNED if spec.pinned else State.LOADED
        if refresh:
            status.refreshes += 1
            log.debug(
                "model.refreshed",
                msg=f"{spec.display} answered its refresh",
                model=spec.display,
                seconds=round(elapsed, 3),
            )
            return
        status.loads += 1
        status.reloads += action.reason == "evicted"
        status.repins += action.kind == ActionKind.REPIN
        status.load_seconds, status.ever_loaded = elapsed, True
        status.load_durations.observe(elapsed)
        await note_loaded(self.api, status)
        verb = "Re-pinned" if action.kind == ActionKind.REPIN else "Loaded"
        if spec.pinned and action.kind != ActionKind.REPIN:
            verb = "Loaded and pinned"
        log.info(
            "model.pinned" if spec.pinned else "model.loaded",
            msg=f"✓ {verb} {spec.display} ({kind.value}) in {elapsed:.2f}s",
            model=spec.display,
            kind=kind.value,
            seconds=round(elapsed, 3),
            reason=action.reason,
        )
        if action.reason in ("evicted", "unpinned"):
            status.reload_times.append(now)
            if capacity.is_thrashing(status.reload_times, now):
                status.reload_times.clear()
                self._give_way(status, capacity.thrash_message(status), runners=None)
                return
        await self._check_evictions(status)
        # A re-pin leaves the runner as it was (warm); a load starts a cold one.
        if (
            self.settings.warmup
            and action.kind != ActionKind.REPIN
            and status.state == State.PINNED
        ):
            await self._warm_up(status, kind)
        self._note_all_ready()

    async def _evicted_by(self, status: ModelStatus) -> tuple[list[ModelStatus], int] | None:
        """Declared pinned models that vanished while `status` loaded, and the runner count."""
        try:
            loaded = await self._with_blobs(await self.api.ps())
        except OllamaAPIError:
            return None
        gone = [
            m
            for m in self.board.models
            if m is not status
            and m.spec.pinned
            and m.state in READY_STATES
            and find_loaded(m, loaded) is None
        ]
        return gone, len(loaded)

    async def _check_evictions(self, status: ModelStatus) -> None:
        """Did this load push a declared model out? Then one of them gives way, by priority."""
        found = await self._evicted_by(status)
        if found is None:
            return
        gone, runners = found
        verdict = capacity.judge_eviction(status, gone)
        if verdict is None:
            return
        log.error(
            "capacity.conflict",
            msg=verdict.message,
            losers=[m.spec.display for m in verdict.losers],
            keep=[m.spec.display for m in verdict.keep],
        )
        if status in verdict.losers:
            with contextlib.suppress(OllamaAPIError):
                await self.api.unload(status.spec.name)  # free the slot for the kept models
            runners -= 1
        runners += sum(1 for m in verdict.keep if m is not status)
        for loser in verdict.losers:
            self._give_way(loser, verdict.message, runners=runners)
        for kept in verdict.keep:
            if kept is not status:
                kept.state, kept.reason = State.EVICTED, "evicted"

    async def _load_error(self, status: ModelStatus, exc: OllamaAPIError) -> None:
        """A load Ollama refused. One that ran out of memory, or cleared others, is capacity."""
        found = await self._evicted_by(status)
        gone, runners = found if found is not None else ([], 0)
        if capacity.is_out_of_memory(str(exc)) or gone:
            for other in gone:
                other.state, other.reason = State.EVICTED, "evicted"
            self._give_way(status, capacity.oom_message(status, gone, str(exc)), runners=runners)
            return
        self._load_failed(status, f"load failed: {exc}")

    def _give_way(self, status: ModelStatus, reason: str, *, runners: int | None) -> None:
        """Mark a model `failed` for capacity: long backoff, or earlier when room frees up."""
        delay = self.settings.capacity_backoff * min(8, 2**status.failures)
        status.capacity_loaded = runners
        self._fail(status, reason, delay, summary=f"{status.spec.display} gives way")

    async def _warm_up(self, status: ModelStatus, kind: ModelKind) -> None:
        """One tiny request so the first real one does not pay first-token costs.

        It sends the load's keep_alive and options unchanged (a different runner option would
        reload the model); a failure is only reported: the model stays pinned.
        """
        spec = status.spec
        started = time.monotonic()
        try:
            if kind == ModelKind.EMBEDDING:
                await self.api.warm_embedding(spec.name, spec.keep_alive_value, spec.options_dict())
            else:
                await self.api.warm_completion(
                    spec.name, spec.keep_alive_value, spec.options_dict()
                )
        except OllamaAPIError as exc:
            log.warning(
                "model.warmup_failed",
                msg=f"Warm-up of {spec.display} failed ({exc}); it stays loaded",
                model=spec.display,
                kind=kind.value,
                error=str(exc),
            )
            return
        elapsed = time.monotonic() - started
        status.warmup_seconds = elapsed
        log.info(
            "model.warmup",
            msg=f"✓ Warmed up {spec.display} ({kind.value}) in {elapsed:.2f}s",
            model=spec.display,
            kind=kind.value,
            seconds=round(elapsed, 3),
        )

    def _load_failed(self, status: ModelStatus, reason: str) -> None:
        delay = backoff_seconds(
            self.settings, status.failures + 1, floor=self.settings.watch_interval
        )
        self._fail(status, reason, delay)

    def _fail(
        self, status: ModelStatus, reason: str, retry_in: float, *, summary: str | None = None
    ) -> None:
        """The one way a model becomes `failed`: its state, its reason, one log event."""
        status.fail(reason, retry_in=retry_in)
        never = math.isinf(retry_in)
        later = "not retried" if never else f"retrying in {format_seconds(retry_in)}"
        log.error(
            "model.failed",
            msg=f"{summary or status.spec.display}: {reason}; {later}",
            model=status.spec.display,
            reason=reason,
            retry_in=None if never else round(retry_in, 1),
        )

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
            self._pull_failed(status, failure_reason(exc), permanent_backoff(exc))
            return
        self._tags_dirty = True  # the new model's size, for the memory check
        status.state = State.EVICTED if status.ever_loaded else State.PENDING
        status.failures = 0

    def _pull_failed(self, status: ModelStatus, reason: str, retry_in: float | None) -> None:
        delay = retry_in or backoff_seconds(
            self.settings, status.failures + 1, floor=self.settings.retry_max
        )
        self._tags_dirty = True
        self._fail(status, reason, delay)

    # ----- reporting ---------------------------------------------------------------------------

    def _log_plan(self) -> None:
        for warning in self.settings.parse_warnings:
            log.warning("config.warning", msg=warning)
        log.info(
            "server.profile",
            msg=self.profile.describe(),
            profile=self.profile.profile,
            quantization=self.profile.quantization,
            env=self.profile.effective,
            kept=list(self.profile.kept),
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

    def _apply_explicit_limit(self) -> None:
        """With an explicit OLLAMA_MAX_LOADED_MODELS below the pinned list, loading the rest
        would only evict the first ones: they give way before anything is loaded."""
        limit = self.settings.ollama_max_loaded_models
        over = capacity.over_explicit_limit(self.board.models, limit)
        if not over or limit is None:
            return
        fits = [m for m in self.board.models if m.spec.pinned and m not in over]
        message = capacity.limit_message(limit, fits, over)
        log.warning("capacity.warning", msg=message, limit=limit, declared=len(fits) + len(over))
        for status in over:
            # Ollama fixes the limit for the life of the process: no retry would succeed.
            self._fail(status, message, math.inf, summary=f"{status.spec.display} is not loaded")

    def snapshot(self) -> dict[str, Any]:
        """What `/status` and `status --json` show."""
        return self.board.document(self.undeclared, live_reason=self._liveness())
