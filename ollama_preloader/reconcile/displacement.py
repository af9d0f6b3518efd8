"""What a load displaced, and who gives way.

After each load (and each load Ollama refused) /api/ps is read again: a declared model that
vanished was evicted by it, and capacity.py's rules decide which one gives way; this marks the
board. A model that gives way is `failed` for capacity with a long backoff, or until room frees.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable

from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import OllamaAPIError
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import LoadedModel, OllamaAPI
from ollama_preloader.reconcile import capacity, evictions
from ollama_preloader.reconcile.plan import find_loaded
from ollama_preloader.reconcile.retry import fail
from ollama_preloader.server.runners import NoRunners, blob_name
from ollama_preloader.state.board import READY_STATES, Board, ModelStatus, State

log = get_logger()


class Displacement:
    """The declared models a load pushed out, and the model that gives way for it."""

    def __init__(
        self,
        settings: Settings,
        api: OllamaAPI,
        board: Board,
        runners: NoRunners,
        *,
        read_ps: Callable[[], Awaitable[list[LoadedModel]]],
        listed_before: Callable[[], set[str]],
    ) -> None:
        self.settings = settings
        self.api = api
        self.board = board
        self.runners = runners  # the server's runner processes, if visible
        self._read_ps = read_ps  # /api/ps as the loop reads it (shared runners resolved)
        self._listed_before = listed_before  # keys listed at the read before the last one

    def rivals(self, status: ModelStatus, since: float) -> tuple[str, ...]:
        """Declared models not ours to keep (gave way, or failed) whose runner someone else
        started since `since`: a client loading one pushed `status` out, before any look at
        /api/ps could list it (`run` only: it sees Ollama's runner starts)."""
        return tuple(
            m.spec.display
            for m in self.board.models
            if m is not status
            and m.state not in READY_STATES
            and self.runners.starts_since(blob_name(m.blob), max(since, m.last_load_at))
        )

    async def _evicted_by(
        self, status: ModelStatus
    ) -> tuple[list[ModelStatus], int, list[str], tuple[str, ...]] | None:
        """Declared pinned models that vanished while `status` loaded, the runner count, the
        undeclared models listed, and the other declared models (not ours to keep: a client
        loaded them) that were listed before the load and are gone."""
        try:
            loaded = await self._read_ps()
        except OllamaAPIError:
            return None
        before = self._listed_before()
        displaced = tuple(
            m.spec.display
            for m in self.board.models
            if m is not status
            and m.state not in READY_STATES
            and m.key in before
            and find_loaded(m, loaded) is None
        )
        gone = [
            m
            for m in self.board.models
            if m is not status
            and m.spec.pinned
            and m.state in READY_STATES
            and find_loaded(m, loaded) is None
        ]
        return gone, len(loaded), evictions.undeclared(self.board.models, loaded), displaced

    async def check(self, status: ModelStatus, pushed_by: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Did this load push a declared model out? Then one of them gives way, by priority.
        Returns the declared models it pushed out that a client had loaded.

        Coexist first: Ollama's out-of-memory path unloads every other model and retries, so
        a first eviction shows no conflict; the models it pushed out are loaded back. Only an
        eviction seen while loading one back (`pushed_by`: who pushed `status` out) proves
        one, and the pusher, later in the list, gives way. The storm guard bounds the rest."""
        found = await self._evicted_by(status)
        if found is None:
            return ()
        gone, runners, others, displaced = found
        if gone and others:
            # An undeclared model holds a slot: it, not `status`, left no room. Put the declared
            # ones back (that unloads the undeclared one) and name it.
            for other in gone:
                other.state, other.reason, other.pushed_by = State.EVICTED, "evicted", ()
                evictions.warn_undeclared(other, others, time.monotonic())
            return displaced
        if gone and not pushed_by:
            for other in gone:
                other.state, other.reason = State.EVICTED, "evicted"
                other.pushed_by = (status.spec.display,)
            return displaced
        pushers = [
            m
            for m in self.board.models
            if m.spec.display in pushed_by and m.spec.priority > status.spec.priority
        ]
        if gone and pushers:
            for pusher in pushers:
                proof = capacity.judge_eviction(pusher, [status])
                assert proof is not None
                log.error(
                    "capacity.conflict",
                    msg=proof.message,
                    losers=[pusher.spec.display],
                    keep=[status.spec.display],
                )
                with contextlib.suppress(OllamaAPIError):
                    await self.api.unload(pusher.spec.name)
                self.give_way(pusher, proof.message, runners=runners)
            for other in gone:
                other.state, other.reason, other.pushed_by = State.EVICTED, "evicted", ()
            return displaced
        verdict = capacity.judge_eviction(status, gone)
        if verdict is None:
            return displaced
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
            self.give_way(loser, verdict.message, runners=runners)
        for kept in verdict.keep:
            if kept is not status:
                kept.state, kept.reason = State.EVICTED, "evicted"
                kept.pushed_by = (status.spec.display,)
        return displaced

    async def refused(self, status: ModelStatus, exc: OllamaAPIError) -> bool:
        """A load Ollama refused. One that ran out of memory, or cleared others, is capacity:
        `status` gives way and this is True; False for any other failure (the caller's)."""
        found = await self._evicted_by(status)
        gone, runners, _, _ = found if found is not None else ([], 0, [], ())
        oom = capacity.is_out_of_memory(str(exc))
        if oom or gone:
            for other in gone:
                other.state, other.reason = State.EVICTED, "evicted"
                other.pushed_by = (status.spec.display,)
            retry_in = None
            if oom:
                status.oom_times.append(time.monotonic())
                retry_in = capacity.oom_retry(
                    status, gone, first=self.settings.oom_retry, cap=self.settings.capacity_backoff
                )
            message = capacity.oom_message(status, gone, str(exc), oom=oom)
            self.give_way(status, message, runners=runners, retry_in=retry_in)
            return True
        return False

    def give_way(
        self,
        status: ModelStatus,
        reason: str,
        *,
        runners: int | None,
        retry_in: float | None = None,
    ) -> None:
        """Mark a model `failed` for capacity: long backoff unless `retry_in` says otherwise, or
        earlier when room frees up."""
        if retry_in is None:
            retry_in = capacity.give_way_backoff(self.settings.capacity_backoff, status.failures)
        status.capacity_loaded = runners
        fail(status, reason, retry_in, summary=f"{status.spec.display} gives way")
