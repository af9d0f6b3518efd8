"""The health endpoints' address: how it is shown, why binding it failed, and a check before
`ollama serve` starts.

Stdlib only: `run` checks the port before it spawns `ollama serve`, and imports the health
server itself (with prometheus-client and the Ollama client) only after the spawn.
"""

from __future__ import annotations

import errno
import socket

from ollama_preloader.errors import ConfigError


def shown_host(host: str) -> str:
    if not host:
        return "0.0.0.0"  # an empty host binds every interface; `http://:PORT` is no URL
    return f"[{host}]" if ":" in host else host


def bind_error(host: str, port: int, exc: OSError) -> str:
    """The one-line reason the health endpoints cannot listen on host:port, with the fix."""
    where = f"{shown_host(host)}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"PRELOADER_HEALTH_PORT={port}: the port is already in use on {where} "
            "(another program, or another ollama-preloader); set PRELOADER_HEALTH_PORT to "
            "a free port, or to off to turn the health endpoints off"
        )
    if exc.errno == errno.EACCES:
        return (
            f"PRELOADER_HEALTH_PORT={port}: not allowed to listen on {where} "
            "(ports below 1024 need root); choose another PRELOADER_HEALTH_PORT"
        )
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"PRELOADER_HEALTH_HOST={host!r}: cannot listen on that address "
            f"({exc.strerror or exc}); use 0.0.0.0 (all interfaces) or an address of this "
            "host"
        )
    return f"cannot listen on {where} for the health endpoints: {exc.strerror or exc}"


def check_free(host: str, port: int) -> None:
    """ConfigError when host:port cannot be listened on, found by binding it the way
    asyncio.start_server will (every address of the host, SO_REUSEADDR) and letting go.

    Another program could take the port between this and the real bind: then that bind's
    ConfigError still ends the run, only after `ollama serve` started.
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ConfigError(bind_error(host, port, exc)) from None
    for family, kind, proto, _, address in dict.fromkeys(infos):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            continue  # asyncio skips a family this host cannot open (IPv6 turned off) too
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ConfigError(bind_error(host, port, exc)) from None
