"""The supervisor's read-only HTTP endpoints: /livez, /readyz, /status (JSON) and /metrics.

A small HTTP/1.1 server on asyncio streams (one request per connection, GET and HEAD only):
probes and scrapers send a handful of tiny requests, and this keeps it inside the
supervisor's event loop and TaskGroup without another framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ollama_preloader.errors import ConfigError
from ollama_preloader.observe import output
from ollama_preloader.observe.listen import bind_error, shown_host
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.observe.metrics import build_registry, render
from ollama_preloader.ollama.api import LoadedModel
from ollama_preloader.state.board import Board

log = get_logger()

READ_TIMEOUT = 10.0  # a client that sends no complete request head in this time is dropped
HEAD_LIMIT = 16384  # bytes of request line and headers we accept
ENDPOINTS = ("/livez", "/readyz", "/status", "/metrics")
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False).encode() + b"\n")


class HealthServer:
    """Answers from the Board. `start()` binds (ConfigError when the port is taken), `serve()`
    is the TaskGroup's task, `close()` stops it."""

    def __init__(
        self,
        board: Board,
        *,
        host: str,
        port: int,
        undeclared: Callable[[], Sequence[LoadedModel]],
        liveness: Callable[[], str | None],
    ) -> None:
        self.board = board
        self.host = host
        self.port = port
        self.undeclared = undeclared
        self.liveness = liveness
        self.registry = build_registry(board, undeclared)
        self._server: asyncio.Server | None = None

    # ----- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start answering, before `ollama serve` starts: probes see the start too."""
        try:
            self._server = await asyncio.start_server(
                self._handle, host=self.host or None, port=self.port, limit=HEAD_LIMIT
            )
        except OSError as exc:
            raise ConfigError(self._bind_error(exc)) from None
        log.info(
            "health.listening",
            msg=f"Health endpoints on http://{self._shown_host()}:{self.port} "
            f"({' '.join(ENDPOINTS)})",
            host=self.host,
            port=self.port,
        )

    def _shown_host(self) -> str:
        return shown_host(self.host)

    def _bind_error(self, exc: OSError) -> str:
        return bind_error(self.host, self.port, exc)

    async def serve(self) -> None:
        """Keep serving until cancelled (the supervisor's TaskGroup owns this task)."""
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await server.wait_closed()

    # ----- HTTP ------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                await self._send(writer, "GET", _json(431, {"error": "request head too large"}))
                return
            method, path, headers = _parse_head(head)
            if not method:
                await self._send(writer, "GET", _json(400, {"error": "bad request"}))
                return
            await _discard_body(reader, headers)
            try:
                response = self.respond(method, path, headers)
            except Exception as exc:
                log.exception("health.error", msg=f"Answering {method} {path} failed: {exc!r}")
                response = _json(500, {"error": "internal error"})
            await self._send(writer, method, response)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, method: str, response: Response) -> None:
        reason = HTTPStatus(response.status).phrase
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{k}: {v}" for k, v in response.headers),
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if method != "HEAD":
            data += response.body
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()

    def respond(self, method: str, path: str, headers: dict[str, str]) -> Response:
        """The answer to one request. Read-only: nothing here changes the supervisor."""
        known = (*ENDPOINTS, "/")
        if path not in known:
            return _json(404, {"error": f"not found; endpoints: {', '.join(ENDPOINTS)}"})
        if method not in ("GET", "HEAD"):
            allow = (("Allow", "GET, HEAD"),)
            return Response(405, b'{"error": "method not allowed"}\n', JSON_TYPE, allow)
        if path == "/livez":
            reason = self.liveness()
            if reason is None:
                return _json(200, {"live": True, "message": "supervisor and ollama serve are up"})
            return _json(503, {"live": False, "reason": reason})
        if path == "/readyz":
            if self.board.ready:
                return _json(200, {"ready": True, "message": self.board.ready_message()})
            return _json(503, {"ready": False, "reason": self.board.not_ready_reason()})
        if path == "/status":
            document = self.board.document(self.undeclared(), live_reason=self.liveness())
            # A stream that failed is said once in the logs, if anywhere; here it stays.
            document["output"] = output.problems()
            return _json(200, document)
        if path == "/metrics":
            body, content_type = render(self.registry, headers.get("accept", ""))
            return Response(200, body, content_type)
        index = "ollama-preloader: " + " ".join(ENDPOINTS) + "\n"
        return Response(200, index.encode(), "text/plain; charset=utf-8")


async def _discard_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    """Read a small request body we will not use: closing with unread data would reset the
    connection before the client reads our answer (a 405, say)."""
    length = headers.get("content-length", "")
    if length.isdigit() and 0 < int(length) <= 65536:
        with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            async with asyncio.timeout(READ_TIMEOUT):
                await reader.readexactly(int(length))


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, path without query, lower-cased headers); empty method when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[1] or not parts[2].startswith("HTTP/"):
        return "", "", {}
    method, target = parts[0].upper(), parts[1]
    if "://" in target:  # absolute form, as a proxy would send it
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    path = target.split("?", 1)[0].split("#", 1)[0]
    if len(path) > 1:
        path = path.rstrip("/")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, path, headers
