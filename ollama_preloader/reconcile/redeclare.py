"""Applying a live reload to the running loop: the new set on the Board, the removed models.

`Redeclarer.apply` is what the ModelSource task hands each result to (config/reload.py): a
failed one leaves the set in force and shows its error in /status; a good one replaces the
Board's set at once (so /status, /readyz and /metrics follow it), logs what changed, and wakes
the loop, which pulls and pins the added models and loads the changed ones like any other.

A removed model is acted on (PRELOADER_ON_REMOVE) by `settle`, which the loop calls between
cycles: never while one of its loads is in flight, since a load of the model still running
would pin it again after a release.
"""

from __future__ import annotations

import asyncio
import math

from ollama_preloader.config.durations import format_seconds
from ollama_preloader.config.reload import Reloaded, ReloadResult
from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import OllamaAPIError, OllamaUnavailable
from ollama_preloader.observe.logs import get_logger, set_level
from ollama_preloader.ollama.api import LoadedModel, OllamaAPI
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.reconcile.loading import apply_explicit_limit
from ollama_preloader.reconcile.observation import Observer
from ollama_preloader.reconcile.plan import find_loaded
from ollama_preloader.reconcile.pulling import PullQueue
from ollama_preloader.state.board import Board, ModelStatus, State

log = get_logger()


class Redeclarer:
    """Turns each reload result into a new declared set, and releases what left it."""

    def __init__(
        self,
        settings: Settings,
        api: OllamaAPI,
        board: Board,
        *,
        observer: Observer,
        pulls: PullQueue,
        wake: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.api = api
        self.board = board
        self.observer = observer
        self.pulls = pulls
        self._wake = wake
        self._removed: list[ModelStatus] = []  # to release or unload at the next `settle`

    async def apply(self, result: ReloadResult) -> None:
        """The ModelSource callback: one result, applied whole before the next is read."""
        if not isinstance(result, Reloaded):
            self.board.config_error = result.message
            log.error(
                "config.reload_failed",
                msg=f"The new model list was not applied: {result.message}; the models "
                "declared before stay as they are",
                **result.fields(),
            )
            return
        self.board.config_error = None
        for warning in result.warnings:
            log.warning("config.warning", msg=warning)
        restart = result.restart_message()
        if restart is not None:
            log.warning("config.restart_needed", msg=restart, variables=list(result.restart_needed))
        if result.log_level is not None:
            set_level(result.log_level)
        change = self.board.redeclare(result.specs)
        log.info(
            "config.reloaded",
            msg=f"Model list reloaded ({result.trigger}): {result.changes.summary()}",
            **result.fields(),
        )
        if change.removed:
            self.pulls.forget({m.key for m in change.removed})
            for status in change.removed:
                if self.settings.on_remove == "keep":
                    self._log_removed(status, "it stays as it is, no longer watched")
                else:
                    self._removed.append(status)
        if not result.changes.empty:
            self.observer.declared_changed()
            self._recheck_explicit_limit()
        self._wake.set()

    async def settle(self) -> None:
        """Release or unload the models removed since the last call (the loop calls this
        between cycles). One that cannot be reached now is logged and left: Ollama's own
        keep-alive or a restart ends it, and the loop no longer pins it."""
        if not self._removed:
            return
        removed, self._removed = self._removed, []
        try:
            loaded = await self.observer.read_ps()
        except OllamaUnavailable:
            self._removed = removed + self._removed  # the loop retries once Ollama answers
            raise
        for status in removed:
            if self.board.get(status.key) is not None:
                continue  # declared again since: the new entry owns the runner now
            try:
                await self._let_go(status, loaded)
            except OllamaAPIError as exc:
                log.warning(
                    "model.release_failed",
                    msg=f"Could not {self.settings.on_remove} {status.spec.display}, which is "
                    f"no longer declared: {exc}; it is no longer pinned by the supervisor",
                    model=status.spec.display,
                    on_remove=self.settings.on_remove,
                    error=str(exc),
                )

    # ----- inside --------------------------------------------------------------------------

    async def _let_go(self, status: ModelStatus, loaded: list[LoadedModel]) -> None:
        entry = find_loaded(status, loaded)
        if entry is None:
            self._log_removed(status, "it was not loaded", loaded=False)
            return
        users = await self._sharers(status, entry, loaded)
        if entry.key != status.key or users:
            # One runner serves several names that share a model file: releasing it would
            # un-pin a model still declared.
            holder = ", ".join(users) or entry.name
            self._log_removed(status, f"its runner also serves {holder}, so it stays as it is")
            return
        spec = status.spec
        if self.settings.on_remove == "unload":
            await self.api.unload(spec.name)
            self._log_removed(status, "unloaded")
            return
        keep_alive = self.settings.ollama_keep_alive
        kind = status.kind or (await self.api.show(spec.name)).kind
        # The options it was loaded with: other runner options would reload it, not release it.
        if kind == ModelKind.EMBEDDING:
            await self.api.load_embedding(spec.name, keep_alive, spec.options_dict())
        else:
            await self.api.load_completion(spec.name, keep_alive, spec.options_dict())
        until = "stays until evicted" if keep_alive < 0 else f"expires {format_seconds(keep_alive)}"
        self._log_removed(
            status,
            f"released: it {until} after its last use (OLLAMA_KEEP_ALIVE)",
            keep_alive=keep_alive,
        )

    async def _sharers(
        self, status: ModelStatus, entry: LoadedModel, loaded: list[LoadedModel]
    ) -> list[str]:
        """The declared names `entry` serves. A name declared by this same reload was never
        loaded nor read from the store yet, so its model file is asked for now: an alias swap
        (`ollama cp`) must not unload the runner the new name is about to use."""
        for model in [status, *self.board.models]:
            if model.blob is None:
                try:
                    model.blob = (await self.api.show(model.spec.name)).blob
                except OllamaAPIError:
                    continue  # not on disk (yet): it cannot share a runner
        return [
            m.spec.display
            for m in self.board.models
            if find_loaded(m, loaded) == entry or (m.blob is not None and m.blob == status.blob)
        ]

    def _log_removed(
        self, status: ModelStatus, what: str, *, loaded: bool = True, **fields: object
    ) -> None:
        log.info(
            "model.removed",
            msg=f"{status.spec.display} is no longer declared; {what}",
            model=status.spec.display,
            on_remove=self.settings.on_remove,
            loaded=loaded,
            **fields,
        )

    def _recheck_explicit_limit(self) -> None:
        """Who fits under an explicit OLLAMA_MAX_LOADED_MODELS depends on the whole set: the
        models it kept out get another chance, then the check runs on the new set."""
        if self.settings.ollama_max_loaded_models is None:
            return
        self.pulls.release_limit_holds()
        for status in self.board.models:
            if status.state == State.FAILED and math.isinf(status.retry_at):
                status.state = State.EVICTED if status.ever_loaded else State.PENDING
                status.reason, status.retry_at, status.failures = None, 0.0, 0
        apply_explicit_limit(self.board, self.settings)
