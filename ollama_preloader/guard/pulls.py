"""A client's `POST /api/pull` of a declared model, done as the update swap.

A plain re-pull of a loaded model leaves its old runner serving the old copy under a name that
no longer reaches it (ollama-behaviour.md §9.4). So `ollama pull NAME` through the guard, for a
model the supervisor declares and has on disk, is handed to the updater (reconcile/, passed in
as `swap`: the guard sits below it): the new copy is pulled, loaded and pinned beside the old
one, then the old one is unloaded. The client sees the pull's progress in Ollama's shape, then
`success` once the new copy is pinned, or an `error` line. Any other pull passes through as is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from ollama_preloader.guard.rewrite import fold
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import PullProgress
from ollama_preloader.ollama.names import name_key
from ollama_preloader.state.board import Board, ModelStatus

log = get_logger()

PATH = "/api/pull"
# The updater: swap `status` to the registry's copy, calling back with each pull line, with
# the client's `insecure`; None when done, else the error for the client.
Swap = Callable[
    [ModelStatus, Callable[[PullProgress], None], bool], Coroutine[Any, Any, str | None]
]


def _fields(raw: bytes) -> dict[str, Any] | None:
    """The body's top-level fields as Go binds them: keys folded, the last duplicate wins."""
    try:
        pairs = json.loads(raw, object_pairs_hook=list)
    except (ValueError, RecursionError):
        return None
    if not isinstance(pairs, list) or (pairs and not isinstance(pairs[0], tuple)):
        return None
    return {fold(k): v for k, v in pairs}


def progress_line(progress: PullProgress) -> dict[str, Any]:
    """Ollama's ProgressResponse: digest, total and completed are omitted when empty."""
    line: dict[str, Any] = {"status": progress.status}
    if progress.digest:
        line["digest"] = progress.digest
    if progress.total:
        line["total"] = progress.total
    if progress.completed:
        line["completed"] = progress.completed
    return line


def _ndjson(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class PullHook:
    """Answers the pulls it claims (`handle` returns None for the others)."""

    def __init__(self, board: Board, swap: Swap) -> None:
        self.board = board
        self.swap = swap
        # The swaps under way: one outlives a client that goes away (the update is the
        # supervisor's from then on, and the hold must not be left behind half-done).
        self._tasks: set[asyncio.Task[str | None]] = set()

    @staticmethod
    def wants(request: web.Request) -> bool:
        return request.method == "POST" and request.path == PATH

    def _claim(self, raw: bytes) -> tuple[ModelStatus, bool, bool] | None:
        body = _fields(raw)
        if body is None:
            return None
        model = body.get("model") or body.get("name")
        if not isinstance(model, str) or not model:
            return None
        key = name_key(model)
        status = next((s for s in self.board.models if s.key == key), None)
        if status is None or not status.present:
            return None  # not ours, or not on disk yet: the ordinary pull is right
        return status, body.get("stream") is not False, body.get("insecure") is True

    async def handle(self, request: web.Request, raw: bytes) -> web.StreamResponse | None:
        claimed = self._claim(raw)
        if claimed is None:
            return None
        status, stream, insecure = claimed
        client = request.remote or "?"
        log.info(
            "guard.pull.swap",
            msg=f"A pull of {status.spec.display} from {client}: done as an update (the new "
            "copy is pinned before the old one is unloaded)",
            model=status.spec.display,
            client=client,
        )
        lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        task = asyncio.create_task(
            self.swap(status, lambda p: lines.put_nowait(progress_line(p)), insecure)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not stream:
            error = await asyncio.shield(task)
            if error is not None:
                return _json(500, {"error": error})
            return _json(200, {"status": "success"})
        response = web.StreamResponse(status=200)
        response.content_type = "application/x-ndjson"
        await response.prepare(request)
        while True:
            waiter = asyncio.ensure_future(lines.get())
            done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                line = waiter.result()
                if line.get("status") != "success":  # `success` only once the new copy is pinned
                    await response.write(_ndjson(line))
                continue
            waiter.cancel()
            break
        while not lines.empty():
            line = lines.get_nowait()
            if line.get("status") != "success":
                await response.write(_ndjson(line))
        error = task.result()
        await response.write(_ndjson({"error": error} if error else {"status": "success"}))
        await response.write_eof()
        return response


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )
