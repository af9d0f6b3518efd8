"""Where the guard sits in each mode, checked before anything starts (exit 2 on a bad address)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import ConfigError
from ollama_preloader.guard.keys import ApiKeys
from ollama_preloader.guard.loop import use_fast_loop
from ollama_preloader.guard.metrics import GuardMetrics
from ollama_preloader.guard.proxy import Guard
from ollama_preloader.guard.pulls import PullHook, Swap
from ollama_preloader.guard.rewrite import Policy
from ollama_preloader.ollama.host import OllamaHost
from ollama_preloader.state.board import Board

LISTEN = "PRELOADER_GUARD_LISTEN"
UPSTREAM = "PRELOADER_GUARD_UPSTREAM"


def _overlap(a: OllamaHost, b: OllamaHost) -> bool:
    """Could a connection meant for one reach the other (same port, and a wildcard or the same
    host, or both loopback)?"""
    if a.port != b.port:
        return False
    wildcard = ("", "0.0.0.0", "::")
    return (
        a.host in wildcard
        or b.host in wildcard
        or a.connect_host == b.connect_host
        or (a.is_loopback and b.is_loopback)
    )


def for_run(settings: Settings, env: Mapping[str, str]) -> tuple[Settings, dict[str, str]]:
    """`run` with the guard: it takes OLLAMA_HOST's address, `ollama serve` and the supervisor
    move to the upstream. Returns the settings and the child's environment to use."""
    listen, upstream = settings.ollama_host, settings.guard_upstream
    if not upstream.is_loopback or upstream.host in ("", "0.0.0.0", "::"):
        raise ConfigError(
            f"{UPSTREAM}={upstream.listen!r}: must be a loopback address (like "
            "127.0.0.1:11433) so clients cannot go around the guard"
        )
    if upstream.scheme != "http" or upstream.path:
        raise ConfigError(f"{UPSTREAM}={upstream.listen!r}: use host:port, no scheme or path")
    if _overlap(listen, upstream):
        raise ConfigError(
            f"{UPSTREAM}={upstream.listen!r} is the address the guard listens on (OLLAMA_HOST="
            f"{listen.listen!r}); choose another port for `ollama serve`, like 127.0.0.1:11433"
        )
    child = {**env, "OLLAMA_HOST": upstream.listen}
    use_fast_loop()  # every client request passes through the loop now (guard/loop.py)
    return moved_behind(settings), child


def moved_behind(settings: Settings) -> Settings:
    """What for_run does to `run`'s settings, unchecked: the supervisor talks to the upstream
    and the guard has OLLAMA_HOST's address. A SIGHUP's re-read settings go through it too, so
    the OLLAMA_HOST they read is not taken for a change that needs a restart."""
    if not settings.guard:
        return settings
    return settings.model_copy(
        update={"ollama_host": settings.guard_upstream, "guard_listen": settings.ollama_host}
    )


def for_watch(settings: Settings) -> Settings:
    """`watch` with the guard: PRELOADER_GUARD_LISTEN is required and is not the server."""
    listen = settings.guard_listen
    if listen is None:
        raise ConfigError(
            f"{LISTEN} is not set: `watch` with PRELOADER_GUARD=on needs the address clients "
            "will use (like 0.0.0.0:11435); OLLAMA_HOST names the server it forwards to"
        )
    if listen.scheme != "http" or listen.path:
        raise ConfigError(f"{LISTEN}={listen.listen!r}: use host:port, no scheme or path")
    server = settings.ollama_host
    if server.is_loopback and _overlap(listen, server):
        raise ConfigError(
            f"{LISTEN}={listen.listen!r} is the address of the server (OLLAMA_HOST="
            f"{server.listen!r}); the guard needs a port of its own"
        )
    use_fast_loop()  # every client request passes through the loop now (guard/loop.py)
    return settings


def build_guard(
    settings: Settings,
    board: Board,
    registry: CollectorRegistry | None,
    *,
    owned: bool,
    swap: Swap | None = None,
) -> Guard:
    """The guard for checked settings (for_run or for_watch applied); `swap`: the updater a
    client's pull of a declared model is handed to (guard/pulls.py)."""
    assert settings.guard_listen is not None
    guard = Guard(
        board,
        listen=settings.guard_listen,
        upstream=settings.ollama_host,
        policy=Policy(
            keep_alive=settings.guard_keep_alive,
            options=settings.guard_options,
            undeclared_cap=settings.guard_undeclared_keep_alive,
        ),
        hold=settings.guard_hold,
        listen_variable="OLLAMA_HOST" if owned else LISTEN,
        metrics=GuardMetrics(registry),
        keys=ApiKeys(settings.guard_api_keys_file) if settings.guard_api_keys_file else None,
    )
    guard.pulls = PullHook(board, swap) if swap is not None else None
    return guard
