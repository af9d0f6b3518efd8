"""The API layer against httpx.MockTransport: typed results, typed errors, exact requests."""

import asyncio
import contextlib
import json
from collections.abc import Callable

import httpx
import pytest

from ollama_preloader.errors import (
    ModelNotFound,
    NotSupported,
    OllamaUnavailable,
    PullStreamError,
    ServerBusy,
)
from ollama_preloader.ollama.api import OllamaAPI
from ollama_preloader.ollama.kinds import ModelKind

Handler = Callable[[httpx.Request], httpx.Response]


def make_api(handler: Handler) -> OllamaAPI:
    api = OllamaAPI("http://127.0.0.1:11434")
    transport = httpx.MockTransport(handler)
    api._probe = httpx.AsyncClient(base_url=api.base_url, transport=transport)
    for client in (api._quick, api._load, api._pull, api._warm):
        client._client = httpx.AsyncClient(base_url=api.base_url, transport=transport)
    return api


async def test_probe_and_ps() -> None:
    """GET / answers; /api/ps parses expires_at, sizes and context into LoadedModel."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/":
            return httpx.Response(200, text="Ollama is running")
        body = {
            "models": [
                {
                    "name": "devstral:latest",
                    "model": "devstral:latest",
                    "size": 15000000000,
                    "digest": "a" * 64,
                    "details": {"format": "gguf", "families": None},
                    "expires_at": "2319-03-04T01:28:17.852141718Z",
                    "size_vram": 7000000000,
                    "context_length": 4096,
                },
                {
                    "name": "llama3.2:latest",
                    "model": "llama3.2:latest",
                    "size": 3,
                    "digest": "b" * 64,
                    "details": {},
                    "expires_at": "2026-11-22T12:05:00.5-07:00",
                    "size_vram": 0,
                    "context_length": 8192,
                },
            ]
        }
        return httpx.Response(200, json=body)

    api = make_api(handler)
    assert await api.probe()
    pinned, temporary = await api.ps()
    assert pinned.is_pinned()
    assert not temporary.is_pinned()
    assert (pinned.size_vram, pinned.context_length) == (7000000000, 4096)
    await api.aclose()


async def test_load_sends_number_minus_one_and_options() -> None:
    """Loads send keep_alive as a number (never the string "-1") and the spec's options."""
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"model": "m", "done": True, "done_reason": "load"})

    api = make_api(handler)
    await api.load_completion("m", -1, {"num_ctx": 8192})
    assert seen[0]["keep_alive"] == -1
    assert isinstance(seen[0]["keep_alive"], float | int)
    assert seen[0]["options"] == {"num_ctx": 8192}
    assert "prompt" not in seen[0] or seen[0]["prompt"] in ("", None)
    await api.aclose()


async def test_embedding_falls_back_to_legacy_endpoint() -> None:
    """An old server without /api/embed (gin's text 404) gets /api/embeddings instead."""
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/api/embed":
            return httpx.Response(404, text="404 page not found")
        return httpx.Response(200, json={"embedding": []})

    api = make_api(handler)
    await api.load_embedding("nomic-embed-text", -1, {})
    assert paths == ["/api/embed", "/api/embeddings"]
    await api.aclose()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, {"error": "model 'x' not found"}, ModelNotFound),
        (400, {"error": '"x" does not support generate'}, NotSupported),
        (
            503,
            {"error": "server busy, please try again.  maximum pending requests exceeded"},
            ServerBusy,
        ),
    ],
)
async def test_error_statuses_map_to_types(status: int, body: dict[str, str], error: type) -> None:
    """Status codes become the project's error types; httpx/ollama exceptions never escape."""
    api = make_api(lambda _r: httpx.Response(status, json=body))
    with pytest.raises(error):
        await api.load_completion("x", -1, {})
    await api.aclose()


async def test_connection_refused_is_unavailable() -> None:
    """A refused connection is OllamaUnavailable (transient)."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    api = make_api(handler)
    with pytest.raises(OllamaUnavailable) as info:
        await api.ps()
    assert info.value.transient
    assert not await api.probe()
    await api.aclose()


async def test_pull_stream_error_line() -> None:
    """An error line inside a 200 stream raises PullStreamError after the progress lines."""
    lines = [
        {"status": "pulling manifest"},
        {"status": "pulling abc", "digest": "sha256:" + "a" * 64, "total": 100, "completed": 50},
        {"error": "max retries exceeded: unexpected EOF"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    api = make_api(lambda _r: httpx.Response(200, text=text))
    seen: list[int] = []

    async def consume() -> None:
        async for progress in api.pull("m"):
            seen.append(progress.completed)

    with pytest.raises(PullStreamError) as info:
        await consume()
    assert seen == [0, 50]
    assert info.value.transient
    await api.aclose()


async def test_show_detects_kind() -> None:
    """capabilities decide the kind; without them, `<arch>.pooling_type` marks embeddings."""

    def handler(request: httpx.Request) -> httpx.Response:
        name = json.loads(request.content)["model"]
        info = {"general.architecture": "nomic-bert", "nomic-bert.pooling_type": 1}
        if name == "old-embed":
            return httpx.Response(200, json={"model_info": info})
        return httpx.Response(200, json={"model_info": {}, "capabilities": ["completion"]})

    api = make_api(handler)
    assert (await api.show("old-embed")).kind is ModelKind.EMBEDDING
    assert (await api.show("chat")).kind is ModelKind.COMPLETION
    await api.aclose()


async def test_a_look_after_the_settled_interval_reuses_its_connection() -> None:
    """Looks 5 s apart (the settled watch interval) go over one kept-alive connection: httpx's
    default expiry (5 s) made every look connect again, a quarter of the idle CPU."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        body = b'{"models": []}'
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    api = OllamaAPI(f"http://127.0.0.1:{port}")
    try:
        assert await api.ps() == []
        await asyncio.sleep(5.5)
        assert await api.ps() == []
    finally:
        await api.aclose()
        server.close()
    assert connections == 1
