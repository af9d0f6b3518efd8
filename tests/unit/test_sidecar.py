"""Sidecar pieces without a server: why Ollama is unreachable, remote URLs, restart detection."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import ConfigError
from ollama_preloader.observe.resources import MemoryFigures
from ollama_preloader.ollama.api import LoadedModel, LocalModel, OllamaAPI
from ollama_preloader.ollama.host import parse_ollama_host
from ollama_preloader.reconcile.supervisor import Supervisor
from ollama_preloader.server.owned import OwnedServer
from ollama_preloader.server.remote import RemoteServer, check_sidecar_settings, sidecar_settings
from ollama_preloader.state.board import State

Handler = Callable[[httpx.Request], httpx.Response]


def make_api(handler: Handler, base_url: str = "http://127.0.0.1:11434") -> OllamaAPI:
    api = OllamaAPI(base_url)
    transport = httpx.MockTransport(handler)
    api._probe = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=2.0)
    for client in (api._quick, api._load, api._pull):
        client._client = httpx.AsyncClient(base_url=base_url, transport=transport)
    return api


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def chained(outer: httpx.HTTPError, cause: BaseException) -> httpx.HTTPError:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            chained(
                httpx.ConnectError("All connection attempts failed"),
                ConnectionRefusedError(111, "Connect call failed"),
            ),
            "connection refused (nothing listens on that port)",
        ),
        (
            chained(
                httpx.ConnectError("[Errno -2] Name or service not known"),
                socket.gaierror(-2, "Name or service not known"),
            ),
            "cannot resolve the host name (Name or service not known)",
        ),
        (
            httpx.ConnectTimeout(""),
            "no answer to a connection within 2s (host down, or a firewall)",
        ),
        (httpx.ReadTimeout(""), "connected, but no answer within 2s"),
        (
            chained(httpx.ConnectError("unreachable"), OSError(113, "No route to host")),
            "no route to host",
        ),
    ],
)
async def test_unreachable_reason_names_the_cause(exc: httpx.HTTPError, reason: str) -> None:
    """Refused, unknown host, timeouts and routing each get their own words; probe says False."""
    api = make_api(raising(exc))
    assert await api.unreachable_reason() == reason
    assert await api.probe() is False
    await api.aclose()


@pytest.mark.parametrize(
    ("status", "fragment"),
    [
        (403, "refused the host name"),
        (404, "HTTP 404 on GET http://gpu-box:11434/ollama/: this is not Ollama"),
        (502, "a proxy in front of Ollama could not reach it"),
    ],
)
async def test_unreachable_reason_for_wrong_answers(status: int, fragment: str) -> None:
    """Something answers, but not Ollama's 200: the host check, or a wrong path."""
    api = make_api(lambda r: httpx.Response(status), "http://gpu-box:11434/ollama")
    reason = await api.unreachable_reason()
    assert reason is not None
    assert fragment in reason
    await api.aclose()


async def test_remote_base_url_with_a_path_prefixes_every_request() -> None:
    """OLLAMA_HOST=https://gpu-box/ollama (behind a proxy): the probe and the API use the path."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path.endswith("/api/ps"):
            return httpx.Response(200, json={"models": []})
        return httpx.Response(200, text="Ollama is running")

    base = parse_ollama_host("https://gpu-box/ollama").base_url
    api = make_api(handler, base)
    assert await api.unreachable_reason() is None
    assert await api.ps() == []
    assert seen == ["https://gpu-box/ollama/", "https://gpu-box/ollama/api/ps"]
    await api.aclose()


def settings(models: str, host: str = "127.0.0.1:11434") -> Settings:
    return Settings(OLLAMA_PRELOAD_MODELS=models, OLLAMA_HOST=host, _env_file=None)  # type: ignore[call-arg]


def watching(settings: Settings) -> tuple[Supervisor, RemoteServer]:
    """The supervisor `watch` builds: the shared one, handed a remote server."""
    server = RemoteServer(settings)
    return Supervisor(settings, server), server


def test_sidecar_refuses_settings_it_cannot_work_with() -> None:
    """No models, or Ollama's cloud as the server: configuration errors naming the variable."""
    with pytest.raises(ConfigError, match="OLLAMA_PRELOAD_MODELS is empty"):
        check_sidecar_settings(settings(""))
    empty_file = settings("").model_copy(update={"models_file": Path("/etc/models.txt")})
    with pytest.raises(ConfigError, match=r"^PRELOADER_MODELS_FILE=/etc/models\.txt lists no"):
        check_sidecar_settings(empty_file)
    with pytest.raises(ConfigError, match=r"OLLAMA_HOST='ollama\.com'"):
        check_sidecar_settings(settings("llama3.2", host="ollama.com"))
    with pytest.raises(ConfigError, match="PRELOADER_PROFILE='gpu'"):
        check_sidecar_settings(settings("llama3.2").model_copy(update={"profile": "gpu"}))
    with pytest.raises(ConfigError, match="PRELOADER_QUANTIZATION='q8_0'"):
        check_sidecar_settings(settings("llama3.2").model_copy(update={"quantization": "q8_0"}))
    check_sidecar_settings(settings("llama3.2", host="https://gpu-box.example:8443/ollama"))


@pytest.mark.parametrize(
    ("host", "checked"),
    [("127.0.0.1:11434", True), ("0.0.0.0:11434", True), ("http://10.0.0.5:11434", False)],
)
async def test_memory_check_only_for_a_server_on_this_machine(
    monkeypatch: pytest.MonkeyPatch, host: str, checked: bool
) -> None:
    """This machine's memory says nothing about a remote server: the estimate is skipped."""
    calls: list[object] = []

    async def figures(env: object, compute: object) -> MemoryFigures:
        calls.append(env)
        return MemoryFigures(system=None)

    monkeypatch.setattr("ollama_preloader.reconcile.observation.gather_figures", figures)
    sidecar, _ = watching(settings("llama3.2", host=host))
    await sidecar.observer.check_resources([LocalModel("llama3.2:latest", "d" * 64, 2 * 10**9)], [])
    assert bool(calls) is checked
    await sidecar.api.aclose()


def pinned(name: str) -> LoadedModel:
    forever = datetime.now(UTC) + timedelta(days=365 * 292)
    return LoadedModel(name, "d" * 64, 1, 0, forever, 4096)


def test_every_model_leaving_ps_at_once_is_noticed() -> None:
    """Two pinned models gone in one look: one server.models_lost, and the store is re-read."""
    sidecar, _ = watching(settings("llama3.2,devstral"))
    sidecar._observe([pinned("llama3.2:latest"), pinned("devstral:latest")])
    assert [m.state for m in sidecar.board.models] == [State.PINNED, State.PINNED]
    sidecar.observer.tags_dirty = False
    with capture_logs() as logs:
        sidecar._observe([])
    events = [e["event"] for e in logs]
    assert events.count("server.models_lost") == 1
    assert events.count("model.evicted") == 2
    assert sidecar.observer.tags_dirty


def test_one_model_leaving_is_an_eviction_not_a_restart() -> None:
    """A single pinned model gone is reported as evicted only."""
    sidecar, _ = watching(settings("llama3.2"))
    sidecar._observe([pinned("llama3.2:latest")])
    with capture_logs() as logs:
        sidecar._observe([])
    assert [e["event"] for e in logs] == ["model.evicted"]


def test_an_outage_already_seen_is_not_reported_twice() -> None:
    """After the probes saw the server go away, the empty /api/ps on its return is expected."""
    sidecar, server = watching(settings("llama3.2,devstral"))
    sidecar._observe([pinned("llama3.2:latest"), pinned("devstral:latest")])
    server._seen_away = True
    with capture_logs() as logs:
        sidecar._observe([])
    assert "server.models_lost" not in [e["event"] for e in logs]


def test_the_two_servers_state_what_can_be_checked() -> None:
    """`run` and `watch` differ only in the server: its facts and its liveness reason."""
    owned = OwnedServer(settings("llama3.2"), {"PATH": "/bin"})
    remote = RemoteServer(settings("llama3.2", host="http://10.0.0.5:11434"))
    assert (owned.memory_is_local, owned.can_see_runners) == (True, True)
    assert (remote.memory_is_local, remote.can_see_runners) == (False, False)
    assert owned.liveness() == "ollama serve is not running (the supervisor is restarting it)"
    assert remote.liveness() == (
        "Ollama at http://10.0.0.5:11434 is not answering; the sidecar waits for it"
    )


def test_watch_refreshes_every_minute_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`watch` cannot see runners: its default refresh is 60 s; a value the user set wins."""
    from ollama_preloader.config.settings import load_settings

    monkeypatch.delenv("PRELOADER_REFRESH_INTERVAL", raising=False)
    assert load_settings(None).refresh_interval == 300.0  # `run` keeps its default
    assert sidecar_settings(load_settings(None)).refresh_interval == 60.0
    monkeypatch.setenv("PRELOADER_REFRESH_INTERVAL", "5m")
    assert sidecar_settings(load_settings(None)).refresh_interval == 300.0
