"""Loading one model: the load request, its outcome, the storm guard and warm-up.

Its kind comes from kinds.py; what the load displaced and who gives way, from displacement.py.
Failures are retried with backoff (retry.py); a load that fails for capacity waits longer, or
until room frees up.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ollama_preloader.config.durations import format_seconds
from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import (
    ModelNotFound,
    NotSupported,
    OllamaAPIError,
    OllamaUnavailable,
    ServerBusy,
)
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.observe.summary import note_all_ready
from ollama_preloader.ollama.api import LoadedModel, OllamaAPI
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.reconcile import capacity, evictions
from ollama_preloader.reconcile.displacement import Displacement
from ollama_preloader.reconcile.drift import adopts_context, note_loaded, watching_context
from ollama_preloader.reconcile.kinds import (
    detect_kind,
    refuted_kind,
    send_load_detecting,
    wrong_kind_reason,
)
from ollama_preloader.reconcile.plan import Action, ActionKind
from ollama_preloader.reconcile.retry import fail
from ollama_preloader.reconcile.runner_events import log_unpinned, mark_client_reload, report_exit
from ollama_preloader.server.runners import NoRunners, blob_name
from ollama_preloader.state.backoff import backoff_seconds
from ollama_preloader.state.board import Board, ModelStatus, Seen, State
from ollama_preloader.state.runner_facts import UNKNOWN, RunnerExit

log = get_logger()

# Before loading back a model that left /api/ps with no runner left: how long a new runner
# for its file may take to appear (a client's reload stops the old runner and starts the new
# one within milliseconds). Only `run` waits: `watch` cannot see runners.
RELOAD_GRACE = 0.15
# How long a reload of a dead runner waits for Ollama's line with its exit status.
EXIT_LINE_WAIT = 2.0


class Loader:
    """Loads declared models for the supervisor's loop, one `load` per plan action."""

    def __init__(
        self,
        settings: Settings,
        api: OllamaAPI,
        board: Board,
        *,
        read_ps: Callable[[], Awaitable[list[LoadedModel]]],
        store_changed: Callable[[], None],
        runners: NoRunners | None = None,
        listed_before: Callable[[], set[str]] = set,
    ) -> None:
        self.settings = settings
        self.api = api
        self.board = board
        self.runners = runners or NoRunners()  # the server's runner processes, if visible
        self._exits_reported: set[int] = set()  # runner pids whose exit was logged
        self._kinds_checked: set[tuple[str, ModelKind | None]] = set()  # kind= entries checked
        self._store_changed = store_changed  # the model is gone from disk: read /api/tags again
        self.displacement = Displacement(
            settings,
            api,
            board,
            self.runners,
            read_ps=read_ps,
            listed_before=listed_before,
        )

    async def _request(
        self,
        status: ModelStatus,
        kind: ModelKind,
        options: dict[str, Any],
        dead: RunnerExit | None,
    ) -> ModelKind:
        """The load request, watched for a client's context; for a dead runner, the exit
        status Ollama logs once the request finds it, reported as `model.runner_exited`."""
        sent = time.monotonic()
        load = asyncio.ensure_future(
            watching_context(
                self.api,
                status,
                send_load_detecting(self.api, status, kind, options),
                self.settings.watch_interval,
            )
        )
        try:
            if dead is not None and dead.runner.pid not in self._exits_reported:
                shown = dead.status or await self.runners.exit_status(sent, EXIT_LINE_WAIT)
                self._exits_reported.add(dead.runner.pid)
                report_exit(status, dead, shown or UNKNOWN, sent - dead.at)
            return await load
        finally:
            load.cancel()  # only has an effect when we are cancelled ourselves

    def _options(self, status: ModelStatus, action: Action) -> dict[str, Any]:
        """The entry's options; for an entry without any, the context the runner there runs
        with, so that re-pinning (or reloading a dead runner) never changes it.

        num_ctx is left out when it is what no num_ctx gives: Ollama caps that default at the
        model's own context length, and an explicit num_ctx of the capped value would differ
        from the request the runner was loaded with (the real server then reloads it).
        """
        options = status.spec.options_dict()
        keeps_runner = action.kind != ActionKind.LOAD or action.reason in (
            "runner exited",
            "wedged",
        )
        context = status.context_length
        if options or not keeps_runner or context is None:
            return options
        default = status.default_context
        if context == default or (default is None and context == status.trained_context):
            return {}
        return {"num_ctx": context}

    def pinned_options(self, status: ModelStatus) -> dict[str, Any]:
        """The options a re-pin sends now: what a probe must send, or it would reload."""
        return self._options(status, Action(ActionKind.REPIN, status.key, "probe"))

    async def load(self, status: ModelStatus, action: Action) -> None:
        """Load, re-pin or refresh one model; each outcome leaves a state and one event."""
        spec = status.spec
        previous = status.state
        refresh = action.kind == ActionKind.REFRESH
        try:
            kind = await detect_kind(self.api, status)
        except ModelNotFound:
            status.present = False
            self._store_changed()
            return
        except OllamaUnavailable:
            return
        except OllamaAPIError as exc:
            # Worded as a failed load (the documented reason) with or without ?kind=: Ollama
            # reads the model the same way for /api/show as for a load.
            self._load_failed(status, f"load failed: {exc} (reading the model for /api/show)")
            return
        if (
            action.kind == ActionKind.LOAD
            and action.reason == "evicted"
            and adopts_context(spec)
            and await self.runners.appears(blob_name(status.blob), RELOAD_GRACE)
        ):
            mark_client_reload(status)  # a client's request is loading it: re-pin that one
            return
        if action.reason in evictions.REPAIRS and self._repair_later(status, action):
            return
        options = self._options(status, action)
        dead, status.dead_runner = status.dead_runner, None
        if refresh:
            log.debug("model.refresh", msg=f"Refreshing {spec.display}", model=spec.display)
        else:
            if action.kind == ActionKind.REPIN:
                log_unpinned(status, {r.pid for r in self.runners.current()})
            status.state = State.LOADING
            log.info(
                "model.loading",
                msg=f"Loading {spec.display} ({kind.value}, "
                f"keep_alive {format_seconds(spec.keep_alive)})",
                model=spec.display,
                kind=kind.value,
                reason=action.reason,
                options=options or None,
            )
        started = time.monotonic()
        try:
            kind = await self._request(status, kind, options, dead)
        except ModelNotFound:
            # Deleted by hand since the last look: the next cycle pulls it (policy permitting).
            status.state, status.present = previous, False
            self._store_changed()
            log.warning(
                "model.missing", msg=f"{spec.display} is no longer on disk", model=spec.display
            )
            return
        except (OllamaUnavailable, ServerBusy) as exc:
            # Transient: Ollama is restarting or its queue is full. Try again soon.
            status.state, status.dead_runner = previous, dead
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
        except NotSupported:
            # kind=completion on an embedding model (a 400 for generate): bad input, no retry.
            status.state = previous
            self._wrong_kind(status, wrong_kind_reason(status, ModelKind.EMBEDDING))
            return
        except OllamaAPIError as exc:
            status.state = previous
            if not await self.displacement.refused(status, exc):
                self._load_failed(status, f"load failed: {exc}")
            return
        elapsed = time.monotonic() - started
        if not refresh and (reason := await self._kind_refuted(status)):
            self._wrong_kind(status, reason)
            return
        now = time.monotonic()
        since, status.last_load_at = status.last_load_at, now
        status.reason, status.failures, status.retry_at = None, 0, 0.0
        status.replaced = None
        status.state = State.PINNED if spec.pinned else State.LOADED
        if status.spec is spec:
            # Loaded with the entry in force; a reload during the load leaves the mark set,
            # so the new request is sent next cycle.
            status.respec = False
        if refresh:
            status.refreshes += 1
            log.debug(
                "model.refreshed",
                msg=f"{spec.display} answered its refresh",
                model=spec.display,
                seconds=round(elapsed, 3),
            )
            return
        await self._loaded(status, action, kind, elapsed, now, options=options, since=since)

    async def _loaded(
        self,
        status: ModelStatus,
        action: Action,
        kind: ModelKind,
        elapsed: float,
        now: float,
        *,
        options: dict[str, Any],
        since: float,
    ) -> None:
        """A load (not a refresh) succeeded: count it, say so, then see what it cost.
        `since`: when it was loaded before."""
        spec = status.spec
        status.loads += 1
        status.reloads += action.reason == "evicted"
        status.repins += action.kind == ActionKind.REPIN
        status.load_seconds, status.ever_loaded = elapsed, True
        status.load_durations.observe(elapsed)
        await note_loaded(self.api, status, with_options="num_ctx" in options)
        if spec.pinned:
            blob = blob_name(status.blob)
            pid = next((r.pid for r in self.runners.current() if r.blob == blob), None)
            status.last_pinned = Seen(pid, status.context_length, status.expires_at)
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
        pushed_by, status.pushed_by = status.pushed_by, ()
        displaced = await self.displacement.check(status, pushed_by)
        by = pushed_by or displaced or self.displacement.rivals(status, since)
        if by and action.reason in evictions.REPAIRS and status.state != State.FAILED:
            # Put back after declared models took its place, or pushing out declared models a
            # client had loaded: declared models that cannot coexist, the storm to stop.
            status.reload_times.append(now)
            if capacity.is_thrashing(status.reload_times, now):
                status.reload_times.clear()
                with contextlib.suppress(OllamaAPIError):
                    await self.api.unload(spec.name)  # it gives way: as `status` will say
                self.displacement.give_way(
                    status, capacity.thrash_message(status, by), runners=None
                )
                return
        # A re-pin leaves the runner as it was (warm); a load starts a cold one.
        if (
            self.settings.warmup
            and action.kind != ActionKind.REPIN
            and status.state in (State.PINNED, State.LOADED)
        ):
            await self._warm_up(status, kind, options)
        note_all_ready(self.board)

    def _repair_later(self, status: ModelStatus, action: Action) -> bool:
        """Count a repair; True when it comes too soon after the last ones and must wait."""
        now = time.monotonic()
        wait = evictions.repair_wait(status, now, self.settings)
        if wait > 0:
            status.retry_at = now + wait
            evictions.log_repair_wait(status, wait, action.reason)
            return True
        status.repair_times.append(now)
        return False

    async def _warm_up(self, status: ModelStatus, kind: ModelKind, options: dict[str, Any]) -> None:
        """One tiny request so the first real one does not pay first-token costs.

        It sends the load's keep_alive and options unchanged (a different runner option would
        reload the model); a failure is only reported: the model stays pinned.
        """
        spec = status.spec
        started = time.monotonic()
        try:
            if kind == ModelKind.EMBEDDING:
                await self.api.warm_embedding(spec.name, spec.keep_alive_value, options)
            else:
                await self.api.warm_completion(spec.name, spec.keep_alive_value, options)
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

    async def _kind_refuted(self, status: ModelStatus) -> str | None:
        """The first load of an entry with kind=: is the model of that kind? (kinds.py)"""
        checked = (status.key, status.spec.kind)
        if status.spec.kind is None or checked in self._kinds_checked:
            return None
        self._kinds_checked.add(checked)
        reason = await refuted_kind(self.api, status)
        if reason is not None:
            with contextlib.suppress(OllamaAPIError):
                await self.api.unload(status.spec.name)
        return reason

    def _wrong_kind(self, status: ModelStatus, reason: str) -> None:
        """Bad input: failed until the entry changes (a live reload clears it)."""
        self._kinds_checked.discard((status.key, status.spec.kind))
        fail(status, reason, math.inf)

    def _load_failed(self, status: ModelStatus, reason: str) -> None:
        delay = backoff_seconds(
            self.settings, status.failures + 1, floor=self.settings.watch_interval
        )
        fail(status, reason, delay)


def apply_explicit_limit(board: Board, settings: Settings) -> None:
    """With an explicit OLLAMA_MAX_LOADED_MODELS below the pinned list, loading the rest
    would only evict the first ones: they give way before anything is loaded."""
    limit = settings.ollama_max_loaded_models
    over = capacity.over_explicit_limit(board.models, limit)
    if not over or limit is None:
        return
    fits = [m for m in board.models if m.spec.pinned and m not in over]
    message = capacity.limit_message(limit, fits, over)
    log.warning("capacity.warning", msg=message, limit=limit, declared=len(fits) + len(over))
    for status in over:
        # Ollama fixes the limit for the life of the process: no retry would succeed.
        fail(status, message, math.inf, summary=f"{status.spec.display} is not loaded")
