"""The guard under test (PRELOADER_GUARD=on, `run`): a supervisor started with the guard on
OLLAMA_HOST and `ollama serve` on a free loopback upstream, and requests sent through it."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path
from typing import Any

from fake_catalogs import write_catalog
from preloader_harness import WAIT, Launcher, Run, free_port


def guard_env(
    launcher: Launcher,
    *,
    keys: Path | None = None,
    catalog: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a guarded `run` declaring llama3.2; `keys` is the API keys file,
    `catalog` the fake's models, `env` any other variables (they win over these)."""
    overrides: dict[str, str] = {
        "PRELOADER_GUARD": "on",
        "PRELOADER_GUARD_UPSTREAM": f"127.0.0.1:{free_port()}",
        "OLLAMA_PRELOAD_MODELS": "llama3.2",
    }
    if keys is not None:
        overrides["PRELOADER_GUARD_API_KEYS_FILE"] = str(keys)
    if catalog is not None:
        overrides["FAKE_OLLAMA_CATALOG"] = write_catalog(launcher.tmp / "catalog.json", catalog)
    return launcher.env(**{**overrides, **(env or {})})


def start_guarded(
    launcher: Launcher,
    *,
    keys: Path | None = None,
    catalog: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """A guarded `run` (guard_env's arguments), once every declared model is pinned."""
    run = launcher.start(env=guard_env(launcher, keys=keys, catalog=catalog, env=env))
    run.wait_all_pinned()
    return run


def guard_address(run: Run) -> tuple[str, int]:
    """Where clients reach the guard: the run's OLLAMA_HOST."""
    host, port = run.env["OLLAMA_HOST"].rsplit(":", 1)
    return host, int(port)


def through_guard(
    run: Run,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """(status, body text) of one request through the guard, with exactly these bytes."""
    conn = http.client.HTTPConnection(*guard_address(run), timeout=WAIT)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    status, text = resp.status, resp.read().decode()
    conn.close()
    return status, text


def send_generate(sock: socket.socket, body: bytes, key: str | None = None) -> None:
    """A POST /api/generate written by hand on `sock`, so the test can go away mid-answer."""
    auth = b"Authorization: " + key.encode() + b"\r\n" if key else b""
    sock.sendall(
        b"POST /api/generate HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def read_first_chunk(sock: socket.socket) -> bytes:
    """What arrived on `sock` up to the first streamed line that is not the last one."""
    received = b""
    while b'"done":false' not in received.replace(b" ", b""):
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    return received
