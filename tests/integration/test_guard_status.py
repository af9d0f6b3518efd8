"""Requests per model through the guard in `status` and `/status`: the real CLI, the fake."""

from __future__ import annotations

import json
import socket
from typing import Any

from fake_catalogs import SMALL, model
from guard_harness import (
    guard_address,
    read_first_chunk,
    send_generate,
    start_guarded,
    through_guard,
)
from preloader_harness import WAIT, Launcher, Run

LLAMA = "llama3.2:latest"
KEY = "Bearer sk-status-test"


def send(run: Run, method: str, path: str, body: bytes | None, key: str | None = KEY) -> int:
    return through_guard(run, method, path, body, {"Authorization": key} if key else {})[0]


def drop_a_stream(run: Run) -> None:
    """A streamed generate whose client goes away after the first chunk."""
    with socket.create_connection(guard_address(run), timeout=WAIT) as sock:
        send_generate(sock, b'{"model":"llama3.2","prompt":"long"}', key=KEY)
        read_first_chunk(sock)


def test_status_counts_requests_per_model_and_outcome(launcher: Launcher) -> None:
    """ok (one rewritten), an Ollama error for an undeclared name, a 401, a dropped stream:
    each under its model in /status, and `status` prints them as a second table."""
    keys = launcher.tmp / "keys.txt"
    keys.write_text(KEY.split()[1] + "\n")
    catalog = {**SMALL, LLAMA: model(size=2.0, family="llama", token_seconds=5.0)}
    run = start_guarded(launcher, keys=keys, catalog=catalog)
    # Load-only requests (no prompt): answered at once; the second one's keep_alive 0 rewritten.
    assert send(run, "POST", "/api/generate", b'{"model":"llama3.2"}') == 200
    assert send(run, "POST", "/api/generate", b'{"model":"llama3.2","keep_alive":0}') == 200
    assert send(run, "POST", "/api/generate", b'{"model":"nope","prompt":"x"}') == 404
    assert send(run, "POST", "/api/generate", b'{"model":"llama3.2"}', key=None) == 401
    assert send(run, "GET", "/api/tags", None) == 200
    drop_a_stream(run)

    def counts() -> dict[str, Any] | None:
        _, document = run.health_json("/status")
        guard: dict[str, Any] = document["guard"]
        return guard if guard.get(LLAMA, {}).get("dropped") == 1 else None

    guard = run.wait_for(counts, "the dropped stream counted")
    assert guard[LLAMA] == {
        "requests": 3,
        "ok": 2,
        "error": 0,
        "rejected": 0,
        "unauthorized": 0,
        "dropped": 1,
        "unavailable": 0,
        "rewritten": 1,
    }
    assert guard["nope"]["error"] == 1
    assert guard["(none)"]["unauthorized"] == 1  # refused before its body was read
    assert guard["(none)"]["ok"] == 1  # /api/tags names no model

    shown = run.cli("status")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("THROUGH THE GUARD"))
    row = lines[header + 1].split()
    assert row == [LLAMA, "3", "2", "0", "0", "0", "1", "0", "1"]
    as_json = json.loads(run.cli("status", "--json").stdout)
    assert as_json["guard"][LLAMA]["rewritten"] == 1
    assert run.stop() == 0


def test_status_has_no_guard_section_when_the_guard_is_off(launcher: Launcher) -> None:
    run = launcher.start(env=launcher.env(OLLAMA_PRELOAD_MODELS="llama3.2"))
    run.wait_all_pinned()
    assert "guard" not in run.health_json("/status")[1]
    assert "THROUGH THE GUARD" not in run.cli("status").stdout
    assert run.stop() == 0
