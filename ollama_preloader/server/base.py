"""The one interface between the supervisor and an Ollama server, owned (`run`) or remote (`watch`).

The supervisor hands a server a `Link` (itself) and never asks which kind it has: every
difference between the two modes lives behind `Server`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn, Protocol

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Mapping

    from ollama_preloader.config.profiles import ProfileResult
    from ollama_preloader.ollama.api import LoadedModel, OllamaAPI
    from ollama_preloader.server.runners import NoRunners
    from ollama_preloader.state.board import Board
    from ollama_preloader.state.runner_facts import RunnerExit


class Link(Protocol):
    """What a server may use of the supervisor: the API client, the stop event, the board (what a
    server finds of its own, e.g. leftover runners), and reports."""

    @property
    def api(self) -> OllamaAPI: ...

    @property
    def stopping(self) -> asyncio.Event: ...

    @property
    def board(self) -> Board: ...

    def server_lost(self) -> None:
        """The server stopped answering: pause the reconcile loop until it is ready again."""

    def server_restarted(self) -> None:
        """Count one restart (or, for a remote server, one return) on the board."""

    async def server_ready(self, elapsed: float, *, first: bool) -> None:
        """The server answers after `elapsed` seconds: re-read the store, run the loop."""

    def runner_exited(self, exit_: RunnerExit) -> None:
        """A runner process of the server exited: look at what it served, now."""

    def server_changed(self, request: bool) -> None:
        """The server's output says what is loaded may have changed: look at /api/ps soon.
        `request`: a model request's access line, which may be one of our own requests."""


class Server(Protocol):
    """An Ollama server the supervisor keeps models on."""

    # Facts about where the server runs, which decide what the supervisor can check.
    @property
    def memory_is_local(self) -> bool:
        """Its memory is this machine's, so the memory estimate means something."""

    @property
    def can_see_runners(self) -> bool:
        """Its runner processes are ours to see (children of a serve we own)."""

    @property
    def runners(self) -> NoRunners:
        """Its runner processes, as far as we can see them (`watch`: not at all)."""

    @property
    def profile(self) -> ProfileResult:
        """The performance profile applied to its environment."""

    @property
    def environment(self) -> Mapping[str, str]:
        """The variables it runs with, as far as we know them."""

    async def start(self, link: Link) -> None:
        """Startup: start it or wait for it; `link.server_ready` once it answers."""

    async def supervise(self, link: Link) -> None:
        """A main-loop task: notice it going away and bring it back (or wait for it)."""

    async def restart(self, reason: str) -> bool:
        """Restart it (all models are then pinned again); False when it is not ours to."""

    async def watch_runners(self, link: Link) -> None:
        """A main-loop task: `link.runner_exited` for each runner that exits (if we can see)."""

    def liveness(self) -> str | None:
        """Why /livez fails because of the server, or None while it is up."""

    def on_unanswered(self) -> None:
        """A reconcile cycle got no answer from the server."""

    def on_observed(self, loaded: list[LoadedModel], board: Board) -> bool:
        """One look at /api/ps; True when the store may have changed and must be read again."""

    def compute_lines(self) -> list[str]:
        """Ollama's `inference compute` lines, when we can read its output; else empty."""

    async def stop(self) -> None:
        """Shutdown: stop what we own (nothing, for a server we only watch)."""

    def force_exit(self, signum: int) -> NoReturn:
        """A second stop signal: kill what we own at once and leave with 128+N."""
