"""The supervisor's update task: PRELOADER_UPDATE=check|apply every PRELOADER_UPDATE_INTERVAL
(±10 % jitter, so replicas do not all ask at once), applying only inside
PRELOADER_UPDATE_WINDOW; and, in every mode, the removal of holds a killed swap left."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from datetime import datetime

from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import OllamaAPIError
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import OllamaAPI
from ollama_preloader.ollama.registry import (
    PUBLIC_REGISTRIES,
    RegistryClient,
    blob_checker,
    store_dir,
)
from ollama_preloader.reconcile.update_check import announce, check_model, count_check
from ollama_preloader.reconcile.updating import (
    SwapFailed,
    SwapLock,
    fits_beside,
    remove_leftover_holds,
    swap,
)
from ollama_preloader.server.base import Server
from ollama_preloader.state.board import Board, ModelStatus
from ollama_preloader.state.updates import UpdateState

log = get_logger()

JITTER = 0.1
SHORT_INTERVAL = 3600.0  # below this, checking a public registry looks like abuse


def in_window(window: tuple[int, int] | None, now: datetime) -> bool:
    """Is local time `now` inside HH:MM-HH:MM (a window may wrap past midnight)?"""
    if window is None:
        return True
    start, end = window
    minute = now.hour * 60 + now.minute
    return start <= minute < end if start < end else minute >= start or minute < end


class UpdateScheduler:
    def __init__(
        self,
        settings: Settings,
        api: OllamaAPI,
        board: Board,
        server: Server,
        *,
        ready: asyncio.Event,
        store_changed: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.api = api
        self.board = board
        self.server = server
        self._ready = ready
        self._store_changed = store_changed
        self.lock = SwapLock(settings.state_dir, settings.ollama_host.base_url)

    async def run(self) -> None:
        await self._ready.wait()
        with contextlib.suppress(OllamaAPIError):
            for name in await remove_leftover_holds(self.api, self.lock):
                log.info(
                    "update.hold_removed",
                    msg=f"Removed {name}, left by an update that was interrupted",
                    hold=name,
                )
                self._store_changed()
        if self.settings.update == "off":
            return
        self._warn_short_interval()
        registry = RegistryClient()
        try:
            while True:
                await self._ready.wait()
                await self._round(registry)
                jitter = random.uniform(1 - JITTER, 1 + JITTER)
                await asyncio.sleep(self.settings.update_interval * jitter)
        finally:
            await registry.aclose()

    def _warn_short_interval(self) -> None:
        if self.settings.update_interval >= SHORT_INTERVAL:
            return
        public = sorted(
            {s.ref.host for s in self.settings.models if s.ref.host.lower() in PUBLIC_REGISTRIES}
        )
        if public:
            log.warning(
                "update.short_interval",
                msg=f"PRELOADER_UPDATE_INTERVAL={self.settings.update_interval:g}s checks "
                f"{', '.join(public)} more than once an hour; these tags change rarely, use "
                "6h or more",
                interval=self.settings.update_interval,
                registries=public,
            )

    async def _round(self, registry: RegistryClient) -> None:
        have = blob_checker(store_dir(self.server.environment))
        for status in list(self.board.models):
            if status.swapping:
                continue
            result = await check_model(registry, status, have)
            if result is not None:
                count_check(self.board, result)
            announce(status)
        if self.settings.update != "apply" or not in_window(
            self.settings.update_window, datetime.now().astimezone()
        ):
            return
        for status in list(self.board.models):
            if status.update.state == UpdateState.AVAILABLE and status in self.board.models:
                await self.apply(status)

    async def apply(self, status: ModelStatus) -> None:
        """One swap, under the lock `update` takes too; the model stays pinned throughout."""
        with self.lock.held() as mine:
            if not mine:
                log.info(
                    "update.busy",
                    msg=f"{status.spec.display}: another update (pid {self.lock.holder()}) is "
                    "running; trying at the next check",
                    model=status.spec.display,
                )
                return
            info = status.update
            status.swapping, info.state = True, UpdateState.UPDATING
            try:
                result = await swap(
                    self.api,
                    status,
                    download_bytes=info.download_bytes or 0,
                    store=store_dir(self.server.environment),
                    fits_beside=self._fits,
                )
            except (SwapFailed, OllamaAPIError) as exc:
                info.state, info.reason = UpdateState.FAILED, str(exc)
                self._count("failed")
                log.warning(
                    "update.failed",
                    msg=f"The update of {status.spec.display} failed: {exc}",
                    model=status.spec.display,
                    stage="apply",
                    reason=str(exc),
                )
                info.announced = UpdateState.FAILED
                return
            finally:
                status.swapping = False
                self._store_changed()
            info.state, info.reason, info.download_bytes = UpdateState.CURRENT, None, 0
            info.announced = UpdateState.CURRENT
            status.stale_runner = None
            self._count("applied")
            log.info(
                "update.applied",
                msg=f"✓ {status.spec.display} updated: {result.old_digest[:12]} -> "
                f"{result.new_digest[:12]} in {result.seconds:.1f}s"
                + (
                    " (the old copy was unloaded first: both did not fit)"
                    if result.unloaded_first
                    else ""
                ),
                model=status.spec.display,
                old_digest=result.old_digest,
                new_digest=result.new_digest,
                seconds=round(result.seconds, 3),
                unloaded_first=result.unloaded_first,
            )

    async def _fits(self, size: int) -> bool | None:
        if not self.server.memory_is_local:
            return None
        return await fits_beside(self.server.environment, self.server.compute_lines(), size)

    def _count(self, result: str) -> None:
        self.board.update_results[result] = self.board.update_results.get(result, 0) + 1
