"""The supervisor's update task: PRELOADER_UPDATE=check|apply every PRELOADER_UPDATE_INTERVAL
(±10 % jitter, so replicas do not all ask at once), applying only inside
PRELOADER_UPDATE_WINDOW; and, in every mode, the removal of holds a killed swap left."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from datetime import datetime

from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import OllamaAPIError
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import OllamaAPI, PullProgress
from ollama_preloader.ollama.registry import (
    PUBLIC_REGISTRIES,
    RegistryCheckError,
    RegistryClient,
    blob_checker,
)
from ollama_preloader.reconcile.update_check import announce, check_model, count_check
from ollama_preloader.reconcile.update_notice import server_store
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
LOCK_WAIT = 600.0  # a client's pull waits this long for a swap of the `update` command
LOCK_POLL = 0.5
CLIENT_CHECK_TIMEOUT = 5.0  # the size lookup before a client's pull: the pull itself says more


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
        have = blob_checker(server_store(self.server.environment))
        for status in list(self.board.models):
            if status.swapping:
                continue
            result = await check_model(registry, status, have)
            if result is not None:
                count_check(self.board, result)
            info = status.update
            failure = info.apply_failure
            if (
                info.state == UpdateState.AVAILABLE
                and failure
                and failure[0] == info.registry_digest
            ):
                info.state, info.reason = UpdateState.FAILED, failure[1]  # already said
            announce(status)
        if self.settings.update != "apply" or not in_window(
            self.settings.update_window, datetime.now().astimezone()
        ):
            return
        for status in list(self.board.models):
            info = status.update
            retry = info.state == UpdateState.FAILED and info.apply_failure is not None
            if (info.state == UpdateState.AVAILABLE or retry) and status in self.board.models:
                await self.apply(status)

    async def apply(
        self,
        status: ModelStatus,
        *,
        on_progress: Callable[[PullProgress], None] | None = None,
        lock_wait: float = 0.0,
        via: str = "schedule",
        insecure: bool = False,
    ) -> str | None:
        """One swap, under the lock `update` takes too; the model stays pinned throughout.
        None when it was applied, else why not (the lock stayed taken, or the failure)."""
        deadline = time.monotonic() + lock_wait
        while True:
            with self.lock.held() as mine:
                if mine:
                    return await self._swap(status, on_progress, via, insecure)
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(LOCK_POLL)
        busy = f"another update (pid {self.lock.holder()}) is running"
        log.info(
            "update.busy",
            msg=f"{status.spec.display}: {busy}; "
            + ("trying at the next check" if via == "schedule" else "try again later"),
            model=status.spec.display,
            via=via,
        )
        return busy

    async def pull_for_client(
        self,
        status: ModelStatus,
        on_progress: Callable[[PullProgress], None],
        insecure: bool = False,
    ) -> str | None:
        """A client's `POST /api/pull` of a declared model (through the guard), done as the
        swap: None when done, else the error for the client. The registry is asked first for
        what will download, for the disk-space check; when it cannot tell, Ollama's pull says."""
        with contextlib.suppress(RegistryCheckError, OSError):
            registry = RegistryClient(timeout=CLIENT_CHECK_TIMEOUT)
            try:
                manifest = await registry.manifest(
                    status.spec.ref, insecure=status.spec.insecure or insecure
                )
            finally:
                await registry.aclose()
            if manifest is not None:
                have = blob_checker(server_store(self.server.environment))
                status.update.download_bytes = manifest.download_bytes(have)
        return await self.apply(
            status, on_progress=on_progress, lock_wait=LOCK_WAIT, via="guard", insecure=insecure
        )

    async def _swap(
        self,
        status: ModelStatus,
        on_progress: Callable[[PullProgress], None] | None,
        via: str,
        insecure: bool,
    ) -> str | None:
        info = status.update
        status.swapping, info.state = True, UpdateState.UPDATING
        try:
            result = await swap(
                self.api,
                status,
                download_bytes=info.download_bytes or 0,
                store=server_store(self.server.environment),
                fits_beside=self._fits,
                on_progress=on_progress,
                insecure=insecure,
            )
        except (SwapFailed, OllamaAPIError) as exc:
            info.state, info.reason = UpdateState.FAILED, str(exc)
            self._count("failed")
            again = info.apply_failure is not None and info.apply_failure[0] == info.registry_digest
            info.apply_failure = (info.registry_digest, str(exc))
            if again and via == "schedule":
                log.debug("update.still_failing", model=status.spec.display, reason=str(exc))
                return str(exc)
            log.warning(
                "update.failed",
                msg=f"The update of {status.spec.display} failed: {exc}",
                model=status.spec.display,
                stage="apply",
                reason=str(exc),
                via=via,
            )
            info.announced = UpdateState.FAILED
            return str(exc)
        finally:
            status.swapping = False
            self._store_changed()
        info.state, info.reason, info.download_bytes = UpdateState.CURRENT, None, 0
        info.apply_failure = None
        info.registry_digest = result.new_digest  # what the registry served to this pull
        info.announced = UpdateState.CURRENT
        status.stale_runner = None
        if result.new_digest == result.old_digest:
            log.info(
                "update.current",
                msg=f"{status.spec.display} is current: the pull brought nothing new",
                model=status.spec.display,
                digest=result.new_digest,
                via=via,
            )
            return None
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
            via=via,
        )
        return None

    async def _fits(self, size: int) -> bool | None:
        if not self.server.memory_is_local:
            return None
        loaded = sum(m.size_vram for m in await self.api.ps())
        return await fits_beside(
            self.server.environment, self.server.compute_lines(), size, loaded_vram=loaded
        )

    def _count(self, result: str) -> None:
        self.board.update_results[result] = self.board.update_results.get(result, 0) + 1
