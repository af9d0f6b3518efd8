"""The guard's API keys (PRELOADER_GUARD_API_KEYS_FILE): the real CLI against the fake."""

from __future__ import annotations

import json
import signal
from typing import Any

from guard_harness import guard_env, start_guarded, through_guard
from preloader_harness import Launcher, Run

GENERATE = b'{"model":"llama3.2","prompt":"x","stream":false}'


def request(run: Run, method: str, path: str, key: str | None = None) -> tuple[int, Any]:
    """(status, parsed JSON or text) of a request through the guard, with `key` if given."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = key
    status, text = through_guard(run, method, path, GENERATE if method == "POST" else None, headers)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def test_requests_need_a_key_from_the_file_and_health_stays_open(launcher: Launcher) -> None:
    """No header, a wrong key or another scheme: 401 in Ollama's error shape, and Ollama never
    sees the request; a key from the file passes; `GET /` and the health port need none."""
    keys = launcher.tmp / "keys.txt"
    keys.write_text("# team A\nsk-alpha-1234  # comment after a key\n\nsk-beta-5678\n")
    run = start_guarded(launcher, keys=keys)
    before = run.count_requests("/api/generate")
    for header in (None, "Bearer sk-wrong", "sk-alpha-1234", "Basic sk-alpha-1234", "Bearer "):
        status, body = request(run, "POST", "/api/generate", header)
        assert status == 401, (header, body)
        assert "Authorization: Bearer" in body["error"]
        assert "PRELOADER_GUARD_API_KEYS_FILE" in body["error"]
    assert request(run, "GET", "/api/ps")[0] == 401
    assert run.count_requests("/api/generate") == before
    status, body = request(run, "POST", "/api/generate", "Bearer sk-alpha-1234")
    assert status == 200, body
    assert body["done"] is True
    assert request(run, "GET", "/api/tags", "bearer sk-beta-5678")[0] == 200
    assert request(run, "GET", "/") == (200, "Ollama is running")
    assert run.health_get("/readyz")[0] == 200
    assert run.health_json("/status")[0] == 200
    loaded = run.wait_event("guard.keys.loaded")
    assert loaded["keys"] == 2
    assert "sk-alpha" not in run.output()
    assert "sk-beta" not in run.output()
    assert run.stop() == 0


def test_the_keys_file_is_re_read_on_sighup_and_on_change(launcher: Launcher) -> None:
    """A key replaced in the file works after SIGHUP, the old one no longer does; a later edit
    applies without a signal; a file that disappears keeps the keys in force."""
    keys = launcher.tmp / "keys.txt"
    keys.write_text("old-key\n")
    run = start_guarded(launcher, keys=keys)
    assert request(run, "GET", "/api/tags", "Bearer old-key")[0] == 200

    keys.write_text("new-key\n")
    run.proc.send_signal(signal.SIGHUP)
    run.wait_event("guard.keys.reloaded", trigger="signal")
    assert request(run, "GET", "/api/tags", "Bearer new-key")[0] == 200
    assert request(run, "GET", "/api/tags", "Bearer old-key")[0] == 401

    replacement = launcher.tmp / "keys.tmp"
    replacement.write_text("third-key\nnew-key-2\n")
    replacement.replace(keys)  # how an editor or a Secret update lands
    run.wait_for(
        lambda: request(run, "GET", "/api/tags", "Bearer third-key")[0] == 200,
        "the guard to notice the edited keys file",
    )
    assert request(run, "GET", "/api/tags", "Bearer new-key")[0] == 401

    keys.unlink()
    # The guard looks at the file only while requests come (an idle guard reads nothing).
    run.wait_for(
        lambda: (
            request(run, "GET", "/api/tags", "Bearer third-key")[0] == 200
            and run.count_events("guard.keys.reload_failed") == 1
        ),
        "the missing file reported, the keys in force kept",
    )
    assert "third-key" not in run.output()
    assert run.stop() == 0


def test_an_unreadable_or_empty_keys_file_exits_2_naming_the_variable(launcher: Launcher) -> None:
    empty = launcher.tmp / "empty.txt"
    empty.write_text("# no keys yet\n\n")
    for path, why in ((launcher.tmp / "missing.txt", "cannot read"), (empty, "no keys")):
        done = launcher.run_once(env=guard_env(launcher, keys=path))
        assert done.returncode == 2, done.stderr
        [line] = [x for x in done.stderr.splitlines() if x.startswith("ollama-preloader: error")]
        assert f"PRELOADER_GUARD_API_KEYS_FILE='{path}'" in line
        assert why in line
        assert "server.started" not in done.stderr
