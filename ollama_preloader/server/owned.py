"""The `ollama serve` we own (`run`): spawned, probed until ready, restarted with backoff.

One `OllamaServer` (process.py) is one run of the child; this module decides when to start the
next one, what a crash means (PRELOADER_ON_SERVER_EXIT), and stops the group at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Protocol

from ollama_preloader.config.profiles import Profile, Quantization, apply_profile
from ollama_preloader.config.values import ServerExitPolicy, StaleRunnerPolicy
from ollama_preloader.errors import ConfigError, ServerError, ServerExited
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.server.process import OllamaServer, force_exit, signal_name
from ollama_preloader.server.runners import RunnerWatch
from ollama_preloader.server.stale import handle_stale

if TYPE_CHECKING:
    from ollama_preloader.ollama.api import LoadedModel
    from ollama_preloader.ollama.host import OllamaHost
    from ollama_preloader.server.base import Link
    from ollama_preloader.state.board import Board

log = get_logger()

# A serve that ran this long resets the restart backoff: the backoff is for a crash loop (a
# serve that dies as it starts, a bad library, a GPU it cannot init), not for a serve killed
# now and then after serving (the fault mix kills it every 50 s; a 5-minute reset let the
# delay grow to 16 s and more, with every model down meanwhile).
HEALTHY_RUN = 30.0
RESTART_BACKOFF_MAX = 60.0


def restart_delay(ran: float, failures: int) -> tuple[int, float]:
    """(failures in a row, seconds to wait) before restarting a serve that ran `ran` seconds.

    A serve that ran HEALTHY_RUN is restarted at once: every model is down until it is back,
    and one death is no crash loop. Quick deaths in a row wait 1 s, 2 s, 4 s ... up to
    RESTART_BACKOFF_MAX.
    """
    failures = 0 if ran > HEALTHY_RUN else failures + 1
    return failures, 0.0 if failures == 0 else min(RESTART_BACKOFF_MAX, 2.0 ** (failures - 1))


def check_owned_host(host: OllamaHost) -> None:
    """ConfigError for an OLLAMA_HOST the `ollama serve` we start can never answer at."""
    if host.scheme != "http" or host.path:
        raise ConfigError(
            f"OLLAMA_HOST={host.given!r}: `run` starts `ollama "
            "serve` on plain HTTP at /, so a scheme other than http:// or a path can never "
            "answer; set it to host:port (https:// and paths are for `watch` behind a proxy)"
        )


class ServeSettings(Protocol):
    """What the owned server reads of the settings (`Settings` has all of it)."""

    @property
    def ollama_command(self) -> str: ...
    @property
    def log_polls(self) -> bool: ...
    @property
    def stale_runners(self) -> StaleRunnerPolicy: ...
    @property
    def profile(self) -> Profile: ...
    @property
    def quantization(self) -> Quantization | None: ...
    @property
    def ready_timeout(self) -> float: ...
    @property
    def on_server_exit(self) -> ServerExitPolicy: ...
    @property
    def shutdown_grace(self) -> float: ...


class OwnedServer:
    """`ollama serve` as our child, in its own process group with its runners."""

    can_see_runners = True
    memory_is_local = True

    def __init__(self, settings: ServeSettings, env: Mapping[str, str]) -> None:
        self.settings = settings
        # Profiles act only through the child's environment, never through request options.
        self.profile = apply_profile(env, settings.profile, settings.quantization)
        self.environment = self.profile.env
        self.process: OllamaServer | None = None
        self.runners = RunnerWatch(self._serve_pid)
        self._restart_reason: str | None = None  # a restart we asked for (a wedged model)
        self._spawned_at: float | None = None  # a child `spawn` started, `start` not claimed

    def _serve_pid(self) -> int | None:
        """The `ollama serve` running now; None between a crash and its restart."""
        process = self.process
        if process is None or process.returncode is not None:
            return None
        return process.pid

    def _store(self) -> Path:
        env = self.environment
        home = env.get("HOME", "~")
        return Path(env.get("OLLAMA_MODELS") or os.path.join(home, ".ollama", "models"))

    def _spawn_process(self) -> OllamaServer:
        process = OllamaServer(
            self.settings.ollama_command,
            self.environment,
            quiet_polls=not self.settings.log_polls,
            on_line=self.runners.on_line,
        )
        self.process = process
        process.spawn()
        self._spawned_at = time.monotonic()
        return process

    def spawn_now(self) -> None:
        """Spawn `ollama serve` before the event loop exists (ServerError if it cannot).

        `run` calls this as soon as the settings are valid: Ollama's GPU discovery starts only
        with the child, so the supervisor's imports are done while it runs. `attach` then
        relays its output, and `start` waits on this child instead of spawning another.
        """
        handle_stale(self._store(), self.settings.stale_runners)
        self._spawn_process()

    async def attach(self) -> None:
        """Relay the output of the child `spawn_now` started, and watch for its exit."""
        if self.process is not None:
            await self.process.attach()

    async def spawn(self, *, first: bool = True) -> None:
        """Spawn `ollama serve` from the event loop, without waiting for it to answer."""
        if first:
            await asyncio.to_thread(handle_stale, self._store(), self.settings.stale_runners)
        await self._spawn_process().attach()

    async def start(self, link: Link, *, first: bool = True) -> None:
        """Spawn `ollama serve` (unless `spawn_now` did; `run` then attached it) and poll `GET /`
        until it answers."""
        spawned_at, self._spawned_at = self._spawned_at, None
        if spawned_at is None or not first:
            await self.spawn(first=first)
            spawned_at, self._spawned_at = self._spawned_at, None
        process = self.process
        assert process is not None
        assert spawned_at is not None
        ready = await process.wait_ready(
            link.api.probe,
            url=link.api.base_url,
            within=self.settings.ready_timeout,
            stopping=link.stopping,
        )
        if not ready:
            return
        await link.server_ready(time.monotonic() - spawned_at, first=first)

    async def supervise(self, link: Link) -> None:
        """Wait for the child to exit; then exit too, or restart it with a growing backoff."""
        failures = 0
        while True:
            process = self.process
            assert process is not None
            started = time.monotonic()
            code = await process.wait()
            if link.stopping.is_set():
                return
            link.server_lost()
            reason, self._restart_reason = self._restart_reason, None
            if reason is not None:
                # Stopped by us to repair a model (restart()): start it again at once,
                # whatever PRELOADER_ON_SERVER_EXIT says about crashes.
                link.server_restarted()
                try:
                    await self.start(link, first=False)
                except ServerError as exc:
                    log.error("server.restart_failed", msg=str(exc))
                continue
            message = process.exit_message(code)
            log.error("server.exited", msg=message, returncode=code, signal=signal_name(code))
            await process.stop(0)  # kill runners left in its group, holding GPU memory
            if self.settings.on_server_exit == "exit":
                raise ServerExited(f"{message}; exiting too (PRELOADER_ON_SERVER_EXIT=exit)", code)
            failures, delay = restart_delay(time.monotonic() - started, failures)
            log.info(
                "server.restarting",
                msg=f"Restarting ollama serve in {delay:g}s",
                delay=delay,
                attempt=failures + 1,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await link.stopping.wait()
                return
            link.server_restarted()
            try:
                await self.start(link, first=False)
            except ServerError as exc:
                log.error("server.restart_failed", msg=str(exc))
            if link.stopping.is_set():
                return

    async def restart(self, reason: str) -> bool:
        """Stop `ollama serve` (and its runners); `supervise` starts it again at once."""
        process = self.process
        if process is None or process.returncode is not None:
            return False
        self._restart_reason = reason
        log.warning("server.restarting", msg=f"Restarting ollama serve: {reason}", reason=reason)
        await process.stop(self.settings.shutdown_grace)
        return True

    async def watch_runners(self, link: Link) -> None:
        """Our serve's runners are our grandchildren: a dead one is seen as it exits (a pidfd),
        and Ollama's lines for client requests and runner starts ask for a look at /api/ps."""
        await self.runners.run(link.runner_exited, link.server_changed)

    def liveness(self) -> str | None:
        if self.process is None or self.process.returncode is not None:
            return "ollama serve is not running (the supervisor is restarting it)"
        return None

    def on_unanswered(self) -> None:
        """Nothing to do: a crash of our child is seen by `supervise` directly."""

    def on_observed(self, loaded: list[LoadedModel], board: Board) -> bool:
        """A restart of our own child is seen directly, never guessed from /api/ps."""
        return False

    def compute_lines(self) -> list[str]:
        return self.process.compute_lines() if self.process is not None else []

    async def stop(self) -> None:
        """SIGTERM the child's group, SIGKILL it after PRELOADER_SHUTDOWN_GRACE."""
        if self.process is not None:
            code = await self.process.stop(self.settings.shutdown_grace)
            log.info("server.stopped", msg="ollama serve stopped", returncode=code)

    def stop_now(self) -> None:
        """The last resort, without an event loop: the supervisor is leaving on an unexpected
        exception and `stop` may not have run. TERM, PRELOADER_SHUTDOWN_GRACE, KILL."""
        if self.process is not None and self.process.returncode is None:
            self.process.stop_now(self.settings.shutdown_grace)

    def force_exit(self, signum: int) -> NoReturn:
        force_exit(self.process, signum)
