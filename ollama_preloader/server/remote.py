"""The Ollama we only watch (`watch`, sidecar mode), reached at OLLAMA_HOST: waits, restarts seen.

The systemd service, a desktop app or a server on another host runs Ollama; the sidecar only
talks to its API. It never starts, stops or signals Ollama: shutdown and the second signal have
no child to touch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, NoReturn

from ollama_preloader.config.profiles import apply_profile
from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import ConfigError
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.server.process import force_exit
from ollama_preloader.server.runners import NoRunners
from ollama_preloader.server.stale import LeftoverWatch
from ollama_preloader.state.backoff import backoff_seconds
from ollama_preloader.state.board import READY_STATES

if TYPE_CHECKING:
    from ollama_preloader.ollama.api import LoadedModel
    from ollama_preloader.server.base import Link
    from ollama_preloader.state.board import Board

log = get_logger()

WHAT_TO_CHECK = (
    "check that Ollama is running there (`systemctl status ollama`, or the desktop app) and "
    "that OLLAMA_HOST is the address it listens on"
)


# Without a process view a dead runner stays listed, and only a refresh (the same load request
# again, a few milliseconds on a loaded model: README "Crashed runners") makes Ollama find it.
WATCH_REFRESH_INTERVAL = 60.0


def sidecar_settings(settings: Settings) -> Settings:
    """`watch`'s own defaults: PRELOADER_REFRESH_INTERVAL 60 s unless the user set it."""
    if "refresh_interval" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"refresh_interval": WATCH_REFRESH_INTERVAL})


def check_sidecar_settings(settings: Settings) -> None:
    """ConfigError for settings that cannot work without our own `ollama serve`."""
    if not settings.models and settings.models_file is not None:
        raise ConfigError(
            f"PRELOADER_MODELS_FILE={settings.models_file} lists no model: `watch` has no "
            "model to keep loaded; add an entry to the file (one a line)"
        )
    if not settings.models:
        raise ConfigError(
            "OLLAMA_PRELOAD_MODELS is empty: `watch` has no model to keep loaded; set it (for "
            "systemd, in the EnvironmentFile /etc/ollama-preloader.env), or name a models "
            "file in PRELOADER_MODELS_FILE"
        )
    if settings.ollama_host.host == "ollama.com":
        raise ConfigError(
            f"OLLAMA_HOST={settings.ollama_host.given!r} is Ollama's cloud, where models cannot "
            "be pinned; set it to the address of your Ollama server"
        )
    # Profiles work through the environment of the `ollama serve` that `run` starts.
    if settings.profile != "auto":
        raise ConfigError(
            f"PRELOADER_PROFILE={settings.profile!r} sets variables of an `ollama serve` that "
            "`watch` does not start; set them on your Ollama server instead (the profile table is "
            "in docs/configuration.md), and remove PRELOADER_PROFILE"
        )
    if settings.quantization is not None:
        raise ConfigError(
            f"PRELOADER_QUANTIZATION={settings.quantization!r} sets OLLAMA_KV_CACHE_TYPE of an "
            "`ollama serve` that `watch` does not start; set that on your Ollama server "
            "instead, and remove PRELOADER_QUANTIZATION"
        )


class RemoteServer:
    """`watch`: a server someone else runs; wait for it whenever it is away."""

    can_see_runners = False  # its runners are another machine's, or another user's, processes
    runners = NoRunners()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.ollama_host.base_url
        # The memory figures are this machine's: they say nothing about a server elsewhere.
        self.memory_is_local = settings.ollama_host.is_loopback
        # No environment to pass on (there is no child): the profile is always "auto" here.
        self.profile = apply_profile({}, settings.profile, settings.quantization)
        self.environment = self.profile.env
        self._up = False  # it answered since it was last lost
        self._seen_away = False  # a probe saw the server go away; its return says so already
        self._suspect = asyncio.Event()  # /api/ps went unanswered: is the server still there?
        self.leftovers = LeftoverWatch(settings.watch_interval)

    async def start(self, link: Link, *, first: bool = True) -> None:
        """Nothing to start: wait until the server answers (health endpoints already do)."""
        if first:
            log.info(
                "server.external",
                msg=f"Keeping models loaded on the Ollama at {link.api.base_url}; it is never "
                "started, stopped or signalled from here",
                url=link.api.base_url,
            )
        waited = await self._wait_reachable(link)
        if waited is None:
            return
        if not first:
            link.server_restarted()  # here: times it came back after going away
            self.leftovers.look_now()  # a serve that died may have left its runners
        self._suspect.clear()  # an unanswered /api/ps from before it came back says nothing
        await link.server_ready(waited, first=first)
        self._up = True

    async def supervise(self, link: Link) -> None:
        """Watch the server; when it goes away, wait for it again (and again)."""
        while await self._watch_reachable(link):
            link.server_lost()
            self._up = False
            self._seen_away = True
            await self.start(link, first=False)

    async def restart(self, reason: str) -> bool:
        """Not ours to restart."""
        return False

    async def watch_runners(self, link: Link) -> None:
        """A dead runner there is found by the periodic refresh. On this host, runners of its
        store that no live serve owns are reported (never stopped: they are not ours)."""
        if self.memory_is_local:
            await self.leftovers.run(link)

    def liveness(self) -> str | None:
        """Live while the server it watches answers."""
        if not self._up:
            return f"Ollama at {self.url} is not answering; the sidecar waits for it"
        return None

    def on_unanswered(self) -> None:
        """A read that got no answer makes `_watch_reachable` look."""
        self._suspect.set()

    def on_observed(self, loaded: list[LoadedModel], board: Board) -> bool:
        """Ollama restarted between two looks (or cleared every runner, e.g. after an
        out-of-memory error): the store may have changed too, so read it again. With one
        model this is indistinguishable from an eviction, which model.evicted reports."""
        ready = [m for m in board.models if m.state in READY_STATES]
        lost = not loaded and len(ready) >= 2 and not self._seen_away
        if lost:
            self.leftovers.look_now()  # the serve that went may have left its runners
            log.warning(
                "server.models_lost",
                msg=f"All {len(ready)} loaded models left /api/ps at once (Ollama restarted, "
                "or unloaded everything); loading every declared model again",
                models=len(ready),
            )
        self._seen_away = False
        return lost

    def compute_lines(self) -> list[str]:
        return []  # its output is not ours to read

    async def stop(self) -> None:
        """Nothing to stop: the server is not ours."""

    def force_exit(self, signum: int) -> NoReturn:
        force_exit(None, signum)

    async def _wait_reachable(self, link: Link) -> float | None:
        """Probe `GET /` every watch interval until it answers; report the wait with backoff.

        Returns the seconds waited, or None when stopping. Never gives up: Ollama may be
        restarting, booting, or on a host that is down for a while.
        """
        started = time.monotonic()
        reports = 0
        next_report = started + backoff_seconds(self.settings, 1)
        while not link.stopping.is_set():
            reason = await link.api.unreachable_reason()
            if reason is None:
                return time.monotonic() - started
            now = time.monotonic()
            if now >= next_report:
                reports += 1
                gap = backoff_seconds(self.settings, reports + 1)
                next_report = now + gap
                log.warning(
                    "server.unreachable",
                    msg=f"Ollama at {link.api.base_url} is not answering ({reason}) after "
                    f"{now - started:.0f}s; {WHAT_TO_CHECK}. Still waiting",
                    url=link.api.base_url,
                    error=reason,
                    waited=round(now - started, 1),
                    next_report_in=round(gap, 1),
                )
            await self._pause(link, self.settings.watch_interval)
        return None

    async def _watch_reachable(self, link: Link) -> bool:
        """Return True once the server is gone, False when stopping.

        No probe while /api/ps answers: Ollama logs every request, and the reconcile loop
        already reads it every watch interval. Only when that read fails is `GET /` asked, twice
        (one lost answer on a busy or remote link is not an outage).
        """
        stop = asyncio.create_task(link.stopping.wait())
        try:
            while True:
                suspect = asyncio.create_task(self._suspect.wait())
                await asyncio.wait({stop, suspect}, return_when=asyncio.FIRST_COMPLETED)
                suspect.cancel()
                if link.stopping.is_set():
                    return False
                self._suspect.clear()
                reason = await link.api.unreachable_reason()
                if reason is not None:
                    reason = await link.api.unreachable_reason()
                if reason is not None:
                    log.warning(
                        "server.lost",
                        msg=f"Ollama at {link.api.base_url} stopped answering ({reason}); "
                        "waiting for it to come back, then loading again every model it lost",
                        url=link.api.base_url,
                        error=reason,
                    )
                    return True
        finally:
            stop.cancel()

    async def _pause(self, link: Link, seconds: float) -> bool:
        """Wait between probes; True when the supervisor is stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await link.stopping.wait()
        return link.stopping.is_set()
