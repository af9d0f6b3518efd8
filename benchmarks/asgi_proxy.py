"""The guard's second candidate stack, for benchmarks/guard.py only: uvicorn (h11) + httpx.

    .venv/bin/python -m benchmarks.asgi_proxy --listen 127.0.0.1:11435 --upstream 127.0.0.1:11434

The same forwarding as guard/proxy.py without its policy: bodies streamed both ways (request
chunks as uvicorn hands them over, the answer as httpx reads it), hop-by-hop headers dropped,
`Host` set to the upstream, no total timeout, no pool limit, and an upstream request cancelled
when its client goes away, also before the first byte. uvicorn does not cancel an ASGI app when
its client disconnects, so the app watches `receive()` for `http.disconnect` itself and cancels
the forwarding. uvicorn is a test/benchmark extra (pyproject `test`), not a runtime dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

# httpcore 1.0 tries `import sniffio` whenever it sets up a lock (several per request); anyio
# 4.x no longer installs sniffio, and a failed import is not cached: every try searches
# sys.path (measured: 20x fewer requests per second). Without sniffio httpcore assumes asyncio,
# which this is; None in sys.modules makes the failed import immediate.
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

import httpx
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# As guard/proxy.py: headers of one connection, never forwarded.
HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
    }
)


class Disconnected(Exception):
    """The client went away while its request body was being read."""


class Proxy:
    """An ASGI app forwarding every request to `upstream` (host:port)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.base = f"http://{upstream}"
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = httpx.AsyncClient(
                    timeout=httpx.Timeout(None, connect=10),
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body_done = asyncio.Event()
        forward = asyncio.ensure_future(self._forward(scope, receive, send, body_done))
        watch = asyncio.ensure_future(_disconnect(receive, body_done))
        try:
            await asyncio.wait((forward, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (forward, watch):
                task.cancel()  # a disconnect cancels the forwarding, and with it upstream
            for task in (forward, watch):
                with contextlib.suppress(asyncio.CancelledError, Disconnected):
                    await task

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, body_done: asyncio.Event
    ) -> None:
        assert self.client is not None
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP and k != b"host"]
        headers.append((b"host", self.upstream.encode()))
        has_body = any(k == b"content-length" for k, _ in headers) or any(
            k == b"transfer-encoding" for k, _ in scope["headers"]
        )
        target = scope["raw_path"] or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        request = self.client.build_request(
            scope["method"],
            self.base + target.decode("latin-1"),
            headers=headers,
            content=_body(receive, body_done) if has_body else None,
        )
        if not has_body:
            body_done.set()
        upstream = await self.client.send(request, stream=True)
        try:
            out = [(k, v) for k, v in upstream.headers.raw if k.lower() not in HOP]
            await send(
                {"type": "http.response.start", "status": upstream.status_code, "headers": out}
            )
            async for chunk in upstream.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await upstream.aclose()  # before its end: closes the connection, never drains it


async def _body(receive: Receive, body_done: asyncio.Event) -> AsyncIterator[bytes]:
    """The client's request body, chunk by chunk as it arrives."""
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return
    finally:
        body_done.set()


async def _disconnect(receive: Receive, body_done: asyncio.Event) -> None:
    """Returns when the client goes away (once the body is read, `receive()` is free)."""
    await body_done.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--loop", default="auto", help="uvicorn's loop: auto (uvloop), asyncio")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    uvicorn.run(
        Proxy(args.upstream),
        host=host,
        port=int(port),
        http="h11",
        loop=args.loop,
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        timeout_keep_alive=600,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
