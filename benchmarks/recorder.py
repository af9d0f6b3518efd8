"""A recording HTTP proxy in front of a real `ollama serve`: the fake's request log, for the real.

    python benchmarks/recorder.py --listen 11500 --upstream 11501 --log requests.jsonl

The fake `ollama` stamps every request and scheduler event in FAKE_OLLAMA_LOG, and bench.py
reads its timelines from that log. Real Ollama logs no request bodies and stamps its access
lines to the second, so for `bench.py --real` the contestant talks to this proxy (its
OLLAMA_HOST) while `ollama serve` listens on the upstream port. It writes the same records:
`{"t", "method", "path", "body", "status", "duration"}` per request (`t` when the answer is
complete), and the events the analysis needs: `serve_ready` (the first 200 on `GET /` of the
upstream, polled every 5 ms from here, independent of the contestant), `pull_success` (a pull
stream that ended with `success`) and `load` (a load request answered 200, unless its
keep_alive is 0: that unloads). `serve_start` is written by the `ollama` shim that bench.py
puts on PATH.

It forwards bytes as they come (pull progress streams through), one request at a time per
connection, which is how Ollama's clients use a connection. Stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

LOAD_PATHS = ("/api/generate", "/api/embed", "/api/embeddings")
POLL_EVERY = 0.005


class Log:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        # One small O_APPEND write per record: the shim appends to the same file.
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return lines[0], fields


async def _copy_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter | None,
    fields: dict[str, str],
    *,
    until_eof: bool,
) -> bytes:
    """Read one message body (chunked, Content-Length, or to EOF), forwarding it as it comes."""
    body = bytearray()

    async def forward(data: bytes) -> None:
        if writer is not None:
            writer.write(data)
            await writer.drain()

    if "chunked" in fields.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            chunk = await reader.readexactly(size + 2)  # data and its CRLF
            await forward(size_line + chunk)
            body += chunk[:-2]
            if size == 0:
                return bytes(body)
    if "content-length" in fields:
        remaining = int(fields["content-length"])
        while remaining:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise ConnectionError("body cut short")
            remaining -= len(data)
            await forward(data)
            body += data
        return bytes(body)
    if until_eof:
        while data := await reader.read(65536):
            await forward(data)
            body += data
    return bytes(body)


def _json(body: bytes) -> Any:
    with contextlib.suppress(ValueError):
        return json.loads(body) if body.strip() else None
    return None


def _events(method: str, path: str, request: Any, status: int, answer: bytes) -> list[str]:
    if method != "POST" or status != 200 or not isinstance(request, dict):
        return []
    if path == "/api/pull":
        last = answer.strip().rsplit(b"\n", 1)[-1]
        return ["pull_success"] if b'"success"' in last and b'"error"' not in last else []
    # keep_alive 0 is an unload (`ollama stop`), not a load.
    unload = request.get("keep_alive") in (0, "0", "0s")
    return ["load"] if path in LOAD_PATHS and not unload else []


class Proxy:
    def __init__(self, upstream: int, log: Log) -> None:
        self.upstream = upstream
        self.log = log

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                upstream = await self._exchange(client_r, client_w, upstream)
                if upstream is None:
                    return
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            return  # either side went away or spoke garbage: drop both, as a proxy would
        finally:
            # Closing the upstream side tells Ollama that its client has gone.
            for writer in (client_w, upstream[1] if upstream else None):
                if writer is not None:
                    with contextlib.suppress(Exception):
                        writer.close()

    async def _exchange(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Forward one request and its answer; the upstream connection to keep, or None."""
        head = await client_r.readuntil(b"\r\n\r\n")
        start = time.time()
        request_line, fields = _headers(head)
        method, path = request_line.split(" ")[:2]
        body = await _copy_body(client_r, None, fields, until_eof=False)
        if upstream is None:
            try:
                upstream = await asyncio.open_connection("127.0.0.1", self.upstream)
            except OSError:
                return None  # not listening yet: the client sees its connection close
        up_r, up_w = upstream
        up_w.write(head + self._rechunk(fields, body))
        await up_w.drain()
        answer_head = await up_r.readuntil(b"\r\n\r\n")
        status_line, answer_fields = _headers(answer_head)
        status = int(status_line.split(" ")[1])
        client_w.write(answer_head)
        await client_w.drain()
        framed = "content-length" in answer_fields or "chunked" in answer_fields.get(
            "transfer-encoding", ""
        )
        answer = b""
        if method != "HEAD" and status not in (204, 304):
            answer = await _copy_body(up_r, client_w, answer_fields, until_eof=not framed)
        end = time.time()
        request = _json(body)
        self.log.write(
            {
                "t": end,
                "method": method,
                "path": path.split("?", 1)[0],
                "body": request,
                "status": status,
                "duration": end - start,
            }
        )
        for event in _events(method, path, request, status, answer):
            # The Go CLI's pull sends `name` and an empty `model`.
            model = request.get("model") or request.get("name")
            self.log.write({"t": end, "event": event, "model": model})
        connection = f"{fields.get('connection', '')} {answer_fields.get('connection', '')}"
        if "close" in connection.lower() or not framed:
            up_w.close()
            return None
        return upstream

    @staticmethod
    def _rechunk(fields: dict[str, str], body: bytes) -> bytes:
        """The request body as the headers frame it (a chunked body was read unframed)."""
        if "chunked" not in fields.get("transfer-encoding", "").lower():
            return body
        framed = f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b""
        return framed + b"0\r\n\r\n"


async def watch_ready(upstream: int, log: Log) -> None:
    """Poll `GET /` on the upstream until it answers 200, then log `serve_ready` once."""
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{upstream}\r\nConnection: close\r\n\r\n"
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            await asyncio.sleep(POLL_EVERY)
            continue
        try:
            writer.write(request.encode())
            await writer.drain()
            line = await reader.readline()
        except (OSError, asyncio.IncompleteReadError):
            line = b""
        finally:
            writer.close()
        if line.split(b" ")[1:2] == [b"200"]:
            log.write({"t": time.time(), "event": "serve_ready"})
            return
        await asyncio.sleep(POLL_EVERY)


async def serve(listen: int, upstream: int, log: Log) -> None:
    proxy = Proxy(upstream, log)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", listen)
    ready = asyncio.create_task(watch_ready(upstream, log))
    async with server:
        await server.serve_forever()
    ready.cancel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--log", type=Path, required=True)
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.upstream, Log(args.log)))


if __name__ == "__main__":
    main()
