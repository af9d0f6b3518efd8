"""Build-time baking (`ollama-preloader pull`): a temporary `ollama serve`, every declared model
pulled into its store, then the server stopped. Nothing is loaded.

This is what a `RUN` step of a derived image runs, so the image carries its models and the
container starts without network. The serve is the same `OwnedServer` that `run` uses (same
environment, profile and shutdown); the Baker is its `Link`, and it never supervises or restarts
it: a serve that dies mid-bake ends the bake.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ollama_preloader.config.models_file import empty_list
from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import OllamaAPIError, ServerError
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import OllamaAPI
from ollama_preloader.reconcile.pulling import failure_reason, pull_model
from ollama_preloader.server.owned import OwnedServer
from ollama_preloader.server.process import force_exit
from ollama_preloader.state.board import Board, ModelStatus

if TYPE_CHECKING:
    from ollama_preloader.state.runner_facts import RunnerExit

log = get_logger()


@dataclass
class BakeResult:
    """What `pull` did, for cli.py to turn into an exit code."""

    pulled: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already on disk, not pulled
    failed: list[tuple[str, str]] = field(default_factory=list)  # (model, reason)
    interrupted_by: int | None = None  # the signal that stopped it early


class Baker:
    """One `pull` run. `run()` returns a BakeResult or raises ServerError."""

    def __init__(self, settings: Settings, *, server_env: Mapping[str, str]) -> None:
        self.settings = settings
        self.server_env = dict(server_env)
        self.board = Board.for_specs(settings.models)
        self.result = BakeResult()
        self.server: OwnedServer | None = None
        self._stop = asyncio.Event()
        self._api: OllamaAPI | None = None
        self._ready = False

    # ----- the Link the server reports to (server/base.py) ----------------------------------

    @property
    def api(self) -> OllamaAPI:
        assert self._api is not None, "the API client exists while the server runs"
        return self._api

    @property
    def stopping(self) -> asyncio.Event:
        return self._stop

    def server_lost(self) -> None:
        """Never called: the bake does not supervise its serve (a death ends the bake)."""

    def server_restarted(self) -> None:
        """Never called: the bake never restarts its serve."""

    def runner_exited(self, exit_: RunnerExit) -> None:
        """Nothing to do: the bake loads no model, so no runner of it matters."""

    def server_changed(self, request: bool) -> None:
        """Nothing to look at: the bake pins nothing."""

    async def server_ready(self, elapsed: float, *, first: bool) -> None:
        self._ready = True
        version = "unknown"
        with contextlib.suppress(OllamaAPIError):
            version = await self.api.version()
        log.info(
            "server.ready",
            msg=f"Ollama {version} is ready at {self.api.base_url} ({elapsed:.2f}s)",
            url=self.api.base_url,
            version=version,
            seconds=round(elapsed, 3),
            restart=False,
        )

    # ----- the bake -------------------------------------------------------------------------

    async def run(self) -> BakeResult:
        models = self.board.models
        if not models:
            log.info(
                "bake.plan",
                msg=f"No models declared ({empty_list(self.settings.models_file)}); "
                "nothing to pull",
                models=0,
            )
            return self.result
        names = ", ".join(m.spec.display for m in models)
        log.info(
            "bake.plan",
            msg=f"Pulling {len(models)} models into the model store: {names}",
            models=len(models),
            pull_policy=self.settings.pull_policy,
        )
        started = time.monotonic()
        self._install_signal_handlers()
        api = OllamaAPI(
            self.settings.ollama_host.base_url,
            pull_stall_timeout=self.settings.pull_stall_timeout,
        )
        self._api = api
        try:
            await self._with_server(api)
        finally:
            if self.server is not None:
                await self.server.stop()
            await api.aclose()
            self._remove_signal_handlers()
        self._report(time.monotonic() - started)
        return self.result

    async def _with_server(self, api: OllamaAPI) -> None:
        self.server = OwnedServer(self.settings, self.server_env)
        await self.server.start(self)
        if not self._ready:
            return  # stopped by a signal before the serve answered
        server = self.server.process
        assert server is not None, "a started OwnedServer has its process"
        work = asyncio.create_task(self._pull_all(api))
        stopping = asyncio.create_task(self._stop.wait())
        exited = asyncio.create_task(server.wait())
        try:
            await asyncio.wait({work, stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopping, exited):
                task.cancel()
            if not work.done():
                # A pull cut here resumes from its partial download next time.
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if server.returncode is not None and not self._stop.is_set():
            # Pulls against a dead server would only fail one by one: say why instead.
            raise ServerError(server.exit_message(server.returncode, " during the pulls"))
        if work.done() and not work.cancelled():
            work.result()

    async def _pull_all(self, api: OllamaAPI) -> None:
        try:
            present = {m.key for m in await api.tags()}
        except OllamaAPIError as exc:
            raise ServerError(f"ollama serve could not list its models: {exc}") from None
        for status in self.board.models:
            status.present = status.key in present
            await self._one(api, status)

    async def _one(self, api: OllamaAPI, status: ModelStatus) -> None:
        display = status.spec.display
        policy = self.settings.pull_policy
        if status.present and policy != "always":
            log.info(
                "model.present",
                msg=f"✓ {display} is already in the model store; not pulling it",
                model=display,
            )
            self.result.present.append(display)
            return
        if not status.present and policy == "never":
            self._failed(
                status,
                "not on disk and PRELOADER_PULL_POLICY=never; change the policy to pull it",
            )
            return
        try:
            await pull_model(api, self.settings, status)
        except OllamaAPIError as exc:
            self._failed(status, failure_reason(exc, status.spec))
            return
        self.result.pulled.append(display)

    def _failed(self, status: ModelStatus, reason: str) -> None:
        status.fail(reason, retry_in=0.0)
        self.result.failed.append((status.spec.display, reason))
        log.error(
            "model.failed",
            msg=f"{status.spec.display}: {reason}",
            model=status.spec.display,
            reason=reason,
        )

    def _report(self, elapsed: float) -> None:
        result = self.result
        if result.interrupted_by is not None:
            return
        if result.failed:
            names = ", ".join(name for name, _ in result.failed)
            log.error(
                "bake.failed",
                msg=f"{len(result.failed)} of {len(self.board.models)} models could not be "
                f"pulled: {names}",
                failed=[name for name, _ in result.failed],
                seconds=round(elapsed, 3),
            )
            return
        log.info(
            "bake.complete",
            msg=f"✓ All {len(self.board.models)} models are in the model store "
            f"({len(result.pulled)} pulled, {len(result.present)} already there) "
            f"in {elapsed:.1f}s",
            models=len(self.board.models),
            pulled=len(result.pulled),
            present=len(result.present),
            seconds=round(elapsed, 3),
        )

    # ----- signals: the same contract as `run` ------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.result.interrupted_by is None:
            self.result.interrupted_by = signum
            log.info(
                "bake.stopping",
                msg=f"Received {name}; stopping the pull (send it again to kill at once)",
                signal=name,
            )
            self._stop.set()
            return
        if self.server is None:
            force_exit(None, signum)  # signalled before the serve was spawned
        self.server.force_exit(signum)
