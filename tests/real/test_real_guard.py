"""The guard on the real Ollama: clients that send keep_alive 0 or another num_ctx no longer
restart the pinned model's runner, and streams still arrive chunk by chunk."""

from __future__ import annotations

import http.client
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from preloader_harness import WAIT, Run, free_port
from real_harness import RealLauncher

CENTURY = timedelta(days=365 * 100)


def guarded(real: RealLauncher, entry: str, **env: str) -> Run:
    real.seed_store("tiny-chat")
    run = real.start(
        env=real.env(
            OLLAMA_PRELOAD_MODELS=entry,
            PRELOADER_GUARD="on",
            PRELOADER_GUARD_UPSTREAM=f"127.0.0.1:{free_port()}",
            **env,
        )
    )
    run.wait_all_pinned()
    return run


def post(run: Run, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    host, port = run.env["OLLAMA_HOST"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=WAIT)
    conn.request("POST", path, body=json.dumps(body).encode())
    resp = conn.getresponse()
    status, text = resp.status, resp.read().decode()
    conn.close()
    return status, json.loads(text) if text.strip() else None


def pinned_left(run: Run, name: str) -> timedelta:
    [row] = [m for m in run.ps() if m["name"] == name]
    return datetime.fromisoformat(row["expires_at"]) - datetime.now(UTC)


def test_keep_alive_0_from_one_client_in_five_never_restarts_the_runner(
    real: RealLauncher,
) -> None:
    """40 requests, every fifth with keep_alive 0 (the issue's reproduction): one runner
    process throughout, still pinned after each, and no re-pin by the supervisor."""
    chat = real.name("tiny-chat")
    run = guarded(real, chat)
    seen = set(real.runners())
    assert len(seen) == 1
    for i in range(40):
        body: dict[str, Any] = {"model": chat, "prompt": "hi", "stream": False}
        body["options"] = {"num_predict": 2}
        if i % 5 == 4:
            body["keep_alive"] = 0
        assert post(run, "/api/generate", body)[0] == 200
        seen |= set(real.runners())
        assert pinned_left(run, f"{chat}:latest") > CENTURY
    assert len(seen) == 1, seen
    assert run.count_events("model.pinned") == 1
    assert run.count_events("guard.rewrote") >= 1
    assert run.stop() == 0


def test_a_client_num_ctx_is_pinned_to_the_entry_or_refused(real: RealLauncher) -> None:
    """`entry`: a client's num_ctx 1024 against the pin's 2048 reloads nothing; `reject`: 400
    naming the model, the option and the pinned value, and Ollama never sees it."""
    chat = real.name("tiny-chat")
    run = guarded(real, f"{chat}?num_ctx=2048")
    (runner,) = real.runners()
    options = {"num_ctx": 1024, "num_predict": 2}
    body = {"model": chat, "prompt": "hi", "stream": False, "options": options}
    assert post(run, "/api/generate", body)[0] == 200
    assert real.runners() == [runner]
    [row] = [m for m in run.ps() if m["name"] == f"{chat}:latest"]
    assert row["context_length"] == 2048
    assert run.stop() == 0

    strict = guarded(real, f"{chat}?num_ctx=2048", PRELOADER_GUARD_OPTIONS="reject")
    (runner,) = real.runners()
    status, answer = post(strict, "/api/generate", body)
    assert status == 400
    assert "num_ctx=1024" in answer["error"]
    assert "num_ctx=2048" in answer["error"]
    assert real.runners() == [runner]
    assert strict.stop() == 0


def test_a_stream_arrives_chunk_by_chunk_through_the_guard(real: RealLauncher) -> None:
    """The NDJSON lines come as separate reads, the first with done false, the last done."""
    chat = real.name("tiny-chat")
    run = guarded(real, chat)
    host, port = run.env["OLLAMA_HOST"].rsplit(":", 1)
    # The kit's model has random weights: a sample may end at once with its stop token, so
    # a few seeds are tried for one answer long enough to show the lines.
    for seed in range(1, 9):
        conn = http.client.HTTPConnection(host, int(port), timeout=WAIT)
        options = {"num_predict": 24, "seed": seed}
        body = {"model": chat, "prompt": "count to twenty", "options": options}
        conn.request("POST", "/api/generate", body=json.dumps(body).encode())
        resp = conn.getresponse()
        lines = [json.loads(line) for line in iter(resp.readline, b"") if line.strip()]
        conn.close()
        if len(lines) > 3:
            break
    assert len(lines) > 3
    assert lines[0]["done"] is False
    assert lines[-1]["done"] is True
    assert lines[-1]["eval_count"] >= len(lines) - 1  # one token a line, bar the stop
    (runner,) = real.runners()
    assert run.ollama("ps").returncode == 0  # the real CLI through the guard
    assert real.runners() == [runner]
    assert run.stop() == 0


def test_v1_requests_reload_a_num_ctx_entry_but_not_the_context_length_variable(
    real: RealLauncher,
) -> None:
    """What the README advises for /v1 clients: an entry with ?num_ctx is reloaded by a
    /v1/chat/completions request (the OpenAI layer always sends the automatic num_ctx);
    the same context through OLLAMA_CONTEXT_LENGTH keeps the runner."""
    chat = real.name("tiny-chat")
    body = {"model": chat, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    run = guarded(real, f"{chat}?num_ctx=2048")
    (runner,) = real.runners()
    assert post(run, "/v1/chat/completions", body)[0] == 200
    assert real.runners() != [runner]
    assert run.stop() == 0

    run = guarded(real, chat, OLLAMA_CONTEXT_LENGTH="2048")
    (runner,) = real.runners()
    assert post(run, "/v1/chat/completions", body)[0] == 200
    assert real.runners() == [runner]
    [row] = [m for m in run.ps() if m["name"] == f"{chat}:latest"]
    assert row["context_length"] == 2048
    assert run.stop() == 0
