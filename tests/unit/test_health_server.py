"""The HTTP endpoints' server on its own: routing, methods, HEAD, bind errors, real sockets."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from fake_ollama.harness import free_port

from ollama_preloader.config.modelspec import parse_entry
from ollama_preloader.errors import ConfigError
from ollama_preloader.observe.health import HealthServer, _parse_head
from ollama_preloader.ollama.api import LoadedModel
from ollama_preloader.reconcile.drift import check_context, note_runner_start
from ollama_preloader.reconcile.pulling import _count_bytes
from ollama_preloader.state.board import Board, ModelStatus, State


def server(board: Board, live: str | None = None, port: int = 0) -> HealthServer:
    none: list[LoadedModel] = []
    return HealthServer(
        board, host="127.0.0.1", port=port, undeclared=lambda: none, liveness=lambda: live
    )


def pinned_board() -> Board:
    b = Board.for_specs((parse_entry("llama3.2", 0),))
    b.models[0].state = State.PINNED
    b.server_up, b.observed_restarts = True, 0
    return b


def test_routes_and_methods() -> None:
    """GET/HEAD on the four endpoints; 405 (with Allow) for other methods; 404 elsewhere."""
    s = server(pinned_board())
    ready = s.respond("GET", "/readyz", {})
    assert (ready.status, json.loads(ready.body)["ready"]) == (200, True)
    assert s.respond("HEAD", "/livez", {}).status == 200
    assert s.respond("GET", "/status", {}).status == 200
    metrics = s.respond("GET", "/metrics", {})
    assert metrics.content_type.startswith("text/plain; version=0.0.4")
    refused = s.respond("POST", "/readyz", {})
    assert refused.status == 405
    assert ("Allow", "GET, HEAD") in refused.headers
    assert s.respond("DELETE", "/metrics", {}).status == 405
    assert s.respond("GET", "/api/ps", {}).status == 404


def test_not_ready_and_not_live_are_503_with_a_reason() -> None:
    """A model loading: /readyz 503 naming it; a dead `ollama serve`: /livez 503."""
    b = pinned_board()
    b.models[0].state = State.LOADING
    s = server(b, live="ollama serve is not running (the supervisor is restarting it)")
    ready = s.respond("GET", "/readyz", {})
    assert ready.status == 503
    assert json.loads(ready.body) == {"ready": False, "reason": "llama3.2:latest loading"}
    live = s.respond("GET", "/livez", {})
    assert live.status == 503
    assert "not running" in json.loads(live.body)["reason"]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", ("GET", "/readyz", {"host": "x"})),
        (b"get /metrics?x=1 HTTP/1.0\r\n\r\n", ("GET", "/metrics", {})),
        (b"GET /status/ HTTP/1.1\r\nAccept: a/b\r\n\r\n", ("GET", "/status", {"accept": "a/b"})),
        (b"GET http://h:1/livez HTTP/1.1\r\n\r\n", ("GET", "/livez", {})),
        (b"garbage\r\n\r\n", ("", "", {})),
    ],
)
def test_parse_head(head: bytes, expected: tuple[str, str, dict[str, str]]) -> None:
    """Request line and headers; the query, a trailing slash and an absolute form are ignored."""
    assert _parse_head(head) == expected


async def raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def test_serves_over_a_real_socket() -> None:
    """Bound by start(), served by serve() in a task, closed by close(); HEAD has no body."""
    port = free_port()
    s = server(pinned_board(), port=port)
    await s.start()
    task = asyncio.create_task(s.serve())
    try:
        answer = await raw(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"Connection: close" in head
        assert json.loads(body)["ready"] is True
        answer = await raw(port, b"HEAD /readyz HTTP/1.1\r\n\r\n")
        assert answer.endswith(b"\r\n\r\n")
        answer = await raw(port, b"POST /readyz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed")
        answer = await raw(port, b"nonsense\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
    finally:
        task.cancel()
        await s.close()
    with pytest.raises(ConnectionRefusedError):
        await raw(port, b"GET /readyz HTTP/1.1\r\n\r\n")


async def test_port_in_use_is_a_config_error() -> None:
    """A taken port: ConfigError naming PRELOADER_HEALTH_PORT and what to do."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^PRELOADER_HEALTH_PORT={port}: .*already in use"):
            await server(pinned_board(), port=port).start()


async def test_unknown_host_is_a_config_error() -> None:
    """A host that is not an address of this machine: ConfigError naming PRELOADER_HEALTH_HOST."""
    s = HealthServer(
        pinned_board(),
        host="203.0.113.7",  # TEST-NET-3: never a local address
        port=free_port(),
        undeclared=list,
        liveness=lambda: None,
    )
    with pytest.raises(ConfigError, match=r"^PRELOADER_HEALTH_HOST='203.0.113.7'"):
        await s.start()


def status(loads: int, state: State = State.PINNED, entry: str = "llama3.2") -> ModelStatus:
    m = ModelStatus(spec=parse_entry(entry, 0), state=state)
    m.loads = loads
    return m


def test_context_drift_once_per_change() -> None:
    """The first look after our load records; another value warns once; back to ours resets."""
    m = status(loads=1)
    assert check_context(m, 4096) is None  # recorded as what we loaded
    assert check_context(m, 4096) is None
    assert check_context(m, 8192) == 4096  # a client reloaded it
    assert check_context(m, 8192) is None  # same change, no second warning
    assert check_context(m, 16384) == 4096  # another change
    assert m.context_drifts == 2
    assert check_context(m, 4096) is None
    assert check_context(m, 8192) == 4096  # changed again after coming back
    m.loads = 2  # our own reload: its context is the new reference
    assert check_context(m, 8192) is None
    assert check_context(m, 8192) is None
    assert m.context_drifts == 3
    loading = status(loads=1, state=State.LOADING)
    assert check_context(loading, 4096) is None
    assert loading.loaded_context is None


def test_pull_bytes_count_each_byte_once() -> None:
    """Progress lines add what arrived since the last one; a layer already on disk adds
    nothing; a download resumed after a failed attempt continues its count."""
    m = status(loads=0)
    _count_bytes(m, "sha256:a", 0, 1000)
    _count_bytes(m, "sha256:a", 400, 1000)
    _count_bytes(m, "sha256:b", 50, 50)  # on disk already
    assert m.pull_bytes == 400
    _count_bytes(m, "sha256:a", 600, 1000)  # next attempt resumes at 600 (200 unseen before)
    _count_bytes(m, "sha256:a", 1000, 1000)
    _count_bytes(m, "sha256:b", 50, 50)
    assert m.pull_bytes == 1000


def test_an_empty_health_host_is_shown_as_every_interface() -> None:
    """PRELOADER_HEALTH_HOST="" binds every interface; the log line names a usable URL."""
    health = HealthServer(
        Board.for_specs([]), host="", port=12120, undeclared=list, liveness=lambda: None
    )
    assert health._shown_host() == "0.0.0.0"


def test_our_own_runner_start_does_not_reset_the_drift_warning() -> None:
    """A client reloaded with 8192 (warned); our load puts 4096 back and its start line is read;
    the next look still lists the client's runner, about to go: no second warning."""
    m = status(loads=1, entry="llama3.2?num_ctx=4096")
    assert check_context(m, 4096) is None
    assert check_context(m, 8192) == 4096
    note_runner_start(m, 4096)  # ours, replacing the client's
    assert check_context(m, 8192) is None
    assert m.context_drifts == 1
    assert check_context(m, 4096) is None  # a look that lists ours: the mark is cleared
    note_runner_start(m, 8192)  # a client's new reload, seen by its start line
    assert m.context_drifts == 2
