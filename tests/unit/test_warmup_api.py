"""Warm-up calls against httpx.MockTransport: one small request, the load's exact options."""

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ollama_preloader.errors import OllamaResponseError, OllamaUnavailable
from ollama_preloader.ollama.api import OllamaAPI

Handler = Callable[[httpx.Request], httpx.Response]


def make_api(handler: Handler) -> OllamaAPI:
    api = OllamaAPI("http://127.0.0.1:11434")
    transport = httpx.MockTransport(handler)
    for client in (api._quick, api._load, api._pull, api._warm):
        client._client = httpx.AsyncClient(base_url=api.base_url, transport=transport)
    return api


def recorder(reply: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], Handler]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json=reply)

    return seen, handler


async def test_completion_warmup_is_one_token_with_the_load_options() -> None:
    """One /api/generate: a short prompt, num_predict 1, the spec's options, keep_alive -1."""
    seen, handler = recorder({"model": "m", "response": "Hi", "done": True})
    api = make_api(handler)
    await api.warm_completion("m", -1, {"num_ctx": 8192, "num_gpu": 20})
    assert len(seen) == 1
    path, body = seen[0]
    assert path == "/api/generate"
    assert body["model"] == "m"
    assert body["prompt"]
    assert len(body["prompt"]) < 20
    assert body["keep_alive"] == -1
    assert body["options"] == {"num_ctx": 8192, "num_gpu": 20, "num_predict": 1}
    assert body.get("stream") is False
    await api.aclose()


async def test_completion_warmup_without_options_sends_no_runner_option() -> None:
    """With no per-model options, the warm-up adds nothing that could reload the model."""
    seen, handler = recorder({"model": "m", "response": "Hi", "done": True})
    api = make_api(handler)
    await api.warm_completion("m", -1, {})
    assert seen[0][1]["options"] == {"num_predict": 1}
    await api.aclose()


async def test_embedding_warmup_is_one_short_input() -> None:
    """One /api/embed with a non-empty short input, keep_alive -1 and the spec's options."""
    seen, handler = recorder({"model": "e", "embeddings": [[0.1, 0.2]]})
    api = make_api(handler)
    await api.warm_embedding("e", -1, {"num_ctx": 2048})
    assert [path for path, _ in seen] == ["/api/embed"]
    body = seen[0][1]
    assert body["input"]
    assert body["keep_alive"] == -1
    assert body["options"] == {"num_ctx": 2048}
    await api.aclose()


async def test_embedding_warmup_falls_back_to_legacy_endpoint() -> None:
    """A server without /api/embed (gin's text 404) is warmed through /api/embeddings."""
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/api/embed":
            return httpx.Response(404, text="404 page not found")
        assert json.loads(request.content)["prompt"]
        return httpx.Response(200, json={"embedding": [0.1]})

    api = make_api(handler)
    await api.warm_embedding("e", -1, {})
    assert paths == ["/api/embed", "/api/embeddings"]
    await api.aclose()


async def test_warmup_errors_are_typed() -> None:
    """A failing warm-up raises the project's errors, never httpx's or the client's."""
    api = make_api(lambda _r: httpx.Response(500, json={"error": "llama runner crashed"}))
    with pytest.raises(OllamaResponseError) as info:
        await api.warm_completion("m", -1, {})
    assert info.value.status == 500
    await api.aclose()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    api = make_api(refuse)
    with pytest.raises(OllamaUnavailable):
        await api.warm_embedding("e", -1, {})
    await api.aclose()
