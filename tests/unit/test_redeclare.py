"""Redeclarer: a reload result applied to the Board, and what is sent for removed models,
against httpx.MockTransport (the paths the integration tests do not reach)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from structlog.testing import capture_logs

from ollama_preloader.config.changes import diff_models
from ollama_preloader.config.modelspec import parse_model_list
from ollama_preloader.config.reload import Reloaded, ReloadFailed
from ollama_preloader.config.settings import Settings
from ollama_preloader.ollama.api import OllamaAPI
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.reconcile.observation import Observer
from ollama_preloader.reconcile.pulling import PullQueue
from ollama_preloader.reconcile.redeclare import Redeclarer
from ollama_preloader.server.remote import RemoteServer
from ollama_preloader.state.board import Board, State

FOREVER = "2318-01-01T00:00:00Z"
BASE = "http://127.0.0.1:11434"
BLOB = "/models/blobs/sha256-same"


class Fake:
    """/api/ps lists `loaded`; every other request is recorded and answered done."""

    def __init__(self, loaded: list[str], *, one_file: frozenset[str] = frozenset()) -> None:
        self.loaded = loaded
        self.one_file = one_file  # names whose model file is BLOB; each other has its own
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/ps":
            models = [
                {"name": n, "model": n, "digest": "d" * 64, "size": 1, "size_vram": 0}
                | {"expires_at": FOREVER, "context_length": 4096}
                for n in self.loaded
            ]
            return httpx.Response(200, json={"models": models})
        body = json.loads(request.content or b"{}")
        if request.url.path == "/api/show":
            blob = BLOB if body["model"] in self.one_file else f"{BLOB}-{body['model']}"
            return httpx.Response(
                200, json={"modelfile": f"FROM {blob}\n", "model_info": {}, "capabilities": []}
            )
        self.sent.append((request.url.path, body))
        if request.url.path == "/api/embed":
            return httpx.Response(200, json={"model": body["model"], "embeddings": []})
        return httpx.Response(200, json={"model": body["model"], "response": "", "done": True})


def setup(fake: Fake, declared: str, **fields: Any) -> tuple[Redeclarer, Board, Settings]:
    """A Redeclarer over a Board of `declared`; `fields` are Settings fields or aliases."""
    settings = Settings(OLLAMA_PRELOAD_MODELS=declared, _env_file=None, **fields)  # type: ignore[call-arg]
    api = OllamaAPI(BASE)
    transport = httpx.MockTransport(fake)
    for client in (api._quick, api._load, api._pull):
        client._client = httpx.AsyncClient(base_url=BASE, transport=transport)
    board = Board.for_specs(settings.models)
    wake = asyncio.Event()
    observer = Observer(settings, api, board, RemoteServer(settings))
    pulls = PullQueue(settings, api, board, store_changed=observer.store_changed, wake=wake)
    return (
        Redeclarer(settings, api, board, observer=observer, pulls=pulls, wake=wake),
        board,
        settings,
    )


def reloaded(settings: Settings, board: Board, raw: str) -> Reloaded:
    specs = parse_model_list(raw).specs
    return Reloaded("file", specs, diff_models([m.spec for m in board.models], specs))


async def test_release_sends_the_default_keep_alive_with_the_loaded_options() -> None:
    """An embedding model removed: one /api/embed with OLLAMA_KEEP_ALIVE and its options."""
    fake = Fake(["llama3.2:latest", "all-minilm:latest"])
    changes, board, settings = setup(
        fake, "llama3.2,all-minilm?num_ctx=512", OLLAMA_KEEP_ALIVE="10m"
    )
    board.models[1].kind = ModelKind.EMBEDDING  # detected when it was loaded
    await changes.apply(reloaded(settings, board, "llama3.2"))
    assert [m.spec.display for m in board.models] == ["llama3.2:latest"]
    assert fake.sent == []  # nothing until the loop settles, between cycles
    await changes.settle()
    assert fake.sent == [
        (
            "/api/embed",
            {"model": "all-minilm", "input": [], "keep_alive": 600.0, "options": {"num_ctx": 512}},
        )
    ]


async def test_removed_then_declared_again_before_settling_is_left_alone() -> None:
    """Re-added before the loop got to it: the new entry owns the runner; nothing is sent."""
    fake = Fake(["llama3.2:latest", "devstral:latest"])
    changes, board, settings = setup(fake, "llama3.2,devstral", on_remove="unload")
    await changes.apply(reloaded(settings, board, "llama3.2"))
    await changes.apply(reloaded(settings, board, "llama3.2,devstral"))
    await changes.settle()
    assert fake.sent == []


async def test_a_runner_shared_with_a_declared_name_is_not_released() -> None:
    """Two names for one model file, one removed: its runner serves the other, so it stays."""
    fake = Fake(["llama3.2:latest"])
    changes, board, settings = setup(fake, "llama3.2,my-llama", on_remove="unload")
    for status in board.models:
        status.blob, status.state = BLOB, State.PINNED
    await changes.apply(reloaded(settings, board, "my-llama"))
    with capture_logs() as logs:
        await changes.settle()
    assert fake.sent == []
    (removed,) = [e for e in logs if e["event"] == "model.removed"]
    assert "also serves my-llama:latest" in removed["msg"]


async def test_an_alias_swap_keeps_the_runner_the_new_name_shares() -> None:
    """Issue 26 item 5: the entry swapped for another name of its file (a just-added entry,
    never loaded, model file unknown): the runner is left as it is, nothing unloaded."""
    fake = Fake(["llama3.2:latest"], one_file=frozenset({"llama3.2", "my-llama"}))
    changes, board, settings = setup(fake, "llama3.2", on_remove="unload")
    board.models[0].blob, board.models[0].state = BLOB, State.PINNED
    await changes.apply(reloaded(settings, board, "my-llama"))
    assert board.models[0].blob is None  # the new entry: nothing known about it yet
    with capture_logs() as logs:
        await changes.settle()
    assert fake.sent == []
    (removed,) = [e for e in logs if e["event"] == "model.removed"]
    assert "also serves my-llama:latest" in removed["msg"]


async def test_a_failed_reload_keeps_the_set_and_shows_the_error() -> None:
    """ReloadFailed: config_error set, the Board unchanged; the next good result clears it."""
    fake = Fake([])
    changes, board, settings = setup(fake, "llama3.2")
    with capture_logs() as logs:
        await changes.apply(ReloadFailed("file", "models.txt, line 2: bad"))
    assert board.config_error == "models.txt, line 2: bad"
    assert [m.spec.display for m in board.models] == ["llama3.2:latest"]
    assert [e["event"] for e in logs] == ["config.reload_failed"]
    await changes.apply(reloaded(settings, board, "llama3.2,devstral"))
    assert board.config_error is None
    assert [m.spec.display for m in board.models] == ["llama3.2:latest", "devstral:latest"]
