"""The guard (PRELOADER_GUARD=on): the real CLI as a subprocess, clients through it to the fake."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path
from typing import Any

from fake_catalogs import SMALL, model
from fake_ollama.harness import start_fake
from guard_harness import (
    guard_address,
    read_first_chunk,
    send_generate,
    start_guarded,
    through_guard,
)
from preloader_harness import WAIT, Launcher, Run, free_port
from prometheus_client.parser import text_string_to_metric_families

LLAMA = "llama3.2:latest"


def guarded(launcher: Launcher, *, catalog: dict[str, Any] | None = None, **env: str) -> Run:
    """A guarded `run` with devstral on disk but not declared."""
    return start_guarded(launcher, catalog=catalog, env={"FAKE_OLLAMA_PRESENT": "devstral", **env})


def upstream_bodies(run: Run, path: str) -> list[dict[str, Any]]:
    """The bodies `ollama serve` received for `path` (the fake logs each request)."""
    return [r["body"] for r in run.requests(path) if isinstance(r.get("body"), dict)]


def loads(run: Run, name: str = LLAMA) -> int:
    return sum(1 for e in run.fake_events("load") if e.get("model") == name)


def post(run: Run, path: str, raw: bytes, content_type: str = "application/json") -> Any:
    """A POST through the guard with exactly these bytes; (status, parsed JSON body)."""
    status, text = through_guard(run, "POST", path, raw, {"Content-Type": content_type})
    return status, json.loads(text.strip().splitlines()[-1]) if text.strip() else None


def test_keep_alive_0_from_a_client_keeps_the_model_pinned(launcher: Launcher) -> None:
    """Every fifth client request sends keep_alive 0 (also as `Keep_Alive`, text/plain, and the
    `ollama stop` fast path): Ollama sees -1, the model is loaded once and stays pinned."""
    run = guarded(launcher)
    bodies = [
        b'{"model":"llama3.2","prompt":"hi","stream":false,"keep_alive":0}',
        b'{"model":"llama3.2","prompt":"hi","stream":false,"Keep_Alive":"0s"}',
        b'{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false,'
        b'"keep_alive":"5m"}',
        b'{"model":"llama3.2","keep_alive":0}',
    ]
    for raw in bodies:
        path = "/api/chat" if b"messages" in raw else "/api/generate"
        status, _ = post(run, path, raw, content_type="text/plain")
        assert status == 200
        for _ in range(4):
            assert post(run, "/api/generate", b'{"model":"llama3.2","prompt":"x"}')[0] == 200
    run.wait_for(
        lambda: (
            len(upstream_bodies(run, "/api/generate") + upstream_bodies(run, "/api/chat")) >= 21
        ),
        "the fake to log the 20 requests",
    )
    seen = upstream_bodies(run, "/api/generate") + upstream_bodies(run, "/api/chat")
    client_sent = [b for b in seen if b.get("keep_alive") not in (None, -1)]
    assert client_sent == [], client_sent
    assert loads(run) == 1
    assert run.ollama("stop", "llama3.2").returncode == 0
    [row] = [m for m in run.ps() if m["name"] == LLAMA]
    assert row["expires_at"] > "2200"  # still pinned: forever is ~292 years ahead
    rewrote = run.wait_event("guard.rewrote", model=LLAMA)
    assert rewrote["field"] == "keep_alive"
    assert rewrote["before"] == "0"


def test_undeclared_models_and_pass_are_untouched(launcher: Launcher) -> None:
    """A model outside the set keeps its keep_alive 0; so does a declared one with pass."""
    run = guarded(launcher, PRELOADER_GUARD_KEEP_ALIVE="pass")
    raw = b'{"model":"devstral","keep_alive":0}'
    assert post(run, "/api/generate", raw)[0] == 200
    raw = b'{"model":"llama3.2","prompt":"x","keep_alive":0,"stream":false}'
    assert post(run, "/api/generate", raw)[0] == 200
    # The fake logs a request just after answering it.
    run.wait_for(
        lambda: [b.get("keep_alive") for b in upstream_bodies(run, "/api/generate")].count(0) == 2,
        "both keep_alive 0 requests to reach Ollama unchanged",
    )
    run.wait_for(lambda: loads(run) >= 2, "the supervisor to re-pin the model the client unloaded")


def test_runner_options_follow_the_entry_or_are_refused(launcher: Launcher) -> None:
    """A client num_ctx is set to the entry's (no reload); `reject` answers 400 naming it."""
    run = guarded(launcher, OLLAMA_PRELOAD_MODELS="llama3.2?num_ctx=8192")
    raw = b'{"model":"llama3.2","prompt":"x","stream":false,"options":{"num_ctx":2048}}'
    assert post(run, "/api/generate", raw)[0] == 200
    assert upstream_bodies(run, "/api/generate")[-1]["options"] == {"num_ctx": 8192}
    assert loads(run) == 1
    run.stop()

    strict = guarded(
        launcher, OLLAMA_PRELOAD_MODELS="llama3.2?num_ctx=8192", PRELOADER_GUARD_OPTIONS="reject"
    )
    # The same log file as the first run: this request's prompt is its own.
    status, body = post(strict, "/api/generate", raw.replace(b'"x"', b'"refused"'))
    assert status == 400
    assert "num_ctx=2048" in body["error"]
    assert "num_ctx=8192" in body["error"]
    assert "llama3.2" in body["error"]
    assert all(b.get("prompt") != "refused" for b in upstream_bodies(strict, "/api/generate"))


def test_streams_arrive_chunk_by_chunk(launcher: Launcher) -> None:
    """The first NDJSON line reaches the client while Ollama is still generating: the fake
    logs a request only when it has answered it, and it has not yet."""
    catalog = {**SMALL, LLAMA: model(size=2.0, family="llama", token_seconds=1.0)}
    run = guarded(launcher, catalog=catalog)
    conn = http.client.HTTPConnection(*guard_address(run), timeout=WAIT)
    conn.request("POST", "/api/generate", body=b'{"model":"llama3.2","prompt":"stream me"}')
    resp = conn.getresponse()
    first = json.loads(resp.readline())
    assert first["done"] is False
    assert [b for b in upstream_bodies(run, "/api/generate") if b.get("prompt")] == []
    lines = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    assert lines[-1]["done"] is True
    conn.close()


def test_answers_leave_whole_and_a_late_body_gets_its_headers_first(launcher: Launcher) -> None:
    """A small answer reaches the client in one send (headers and body together, so one read
    has it all); a stream whose first line is late still gets its status and headers at once."""
    catalog = {**SMALL, LLAMA: model(size=2.0, family="llama", token_seconds=WAIT / 2)}
    run = guarded(launcher, catalog=catalog)
    with socket.create_connection(guard_address(run), timeout=WAIT) as sock:
        sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = sock.recv(65536).partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        assert len(body) == length, (head, body)
        assert b'"version"' in body
    # The first token takes WAIT / 2: only headers sent ahead of it arrive within WAIT / 4.
    conn = http.client.HTTPConnection(*guard_address(run), timeout=WAIT / 4)
    conn.request("POST", "/api/generate", body=b'{"model":"llama3.2","prompt":"slow"}')
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/x-ndjson"
    conn.close()


def test_a_client_that_goes_away_cancels_upstream(launcher: Launcher) -> None:
    """Mid-stream and before the first byte (a load), the fake sees its client go."""
    catalog = {
        **SMALL,
        LLAMA: model(size=2.0, family="llama", token_seconds=5.0),
        "devstral:latest": model(size=14.3, family="mistral3", load_seconds=120),
    }
    run = guarded(launcher, catalog=catalog)
    # 16 tokens at 5 s each: only a cancelled request ends within WAIT.
    with socket.create_connection(guard_address(run), timeout=WAIT) as sock:
        send_generate(sock, b'{"model":"llama3.2","prompt":"long"}')
        read_first_chunk(sock)
    run.wait_for(
        lambda: [b for b in upstream_bodies(run, "/api/generate") if b.get("prompt") == "long"],
        "the fake to end the generation whose client went away",
    )
    dropped = run.wait_event("guard.client.dropped", model=LLAMA)
    assert dropped["phase"] == "streaming"

    with socket.create_connection(guard_address(run), timeout=WAIT) as sock:
        send_generate(sock, b'{"model":"devstral","prompt":"hi"}')
        # The fake `ollama serve` prints this as the load begins (llama3.2's was the first).
        run.wait_for(
            lambda: "\n".join(run.lines).count("starting llama-server") >= 2,
            "the load to start",
        )
    run.wait_for(
        lambda: [e for e in run.fake_events("load_aborted") if e.get("model") == "devstral:latest"],
        "the fake to abort the load nobody waits for",
    )


def test_metrics_count_requests_and_rewrites(launcher: Launcher) -> None:
    """/metrics has requests by model, endpoint and status, rewrites by field, tokens."""
    run = guarded(launcher)
    post(run, "/api/generate", b'{"model":"llama3.2","prompt":"x","keep_alive":0}')
    post(run, "/api/generate", b'{"model":"nope","prompt":"x"}')
    assert run.ollama("ps").returncode == 0
    _, text, _ = run.health_get("/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    requests = "ollama_preloader_guard_requests_total"
    ok = (("endpoint", "/api/generate"), ("model", LLAMA), ("status", "200"))
    assert samples[(requests, ok)] == 1
    missing = (("endpoint", "/api/generate"), ("model", "nope"), ("status", "404"))
    assert samples[(requests, missing)] == 1
    assert samples[(requests, (("endpoint", "/api/ps"), ("model", "(none)"), ("status", "200")))]
    rewrites = (("field", "keep_alive"), ("model", LLAMA))
    assert samples[("ollama_preloader_guard_rewrites_total", rewrites)] == 1
    tokens = samples[("ollama_preloader_guard_generated_tokens_total", (("model", LLAMA),))]
    assert tokens > 0


def test_bad_guard_addresses_exit_2_naming_the_variable(launcher: Launcher) -> None:
    """Same port as the upstream, a public upstream, a taken port, watch without a listen
    address: one line naming the variable, exit 2, and no `ollama serve` started."""
    port = free_port()
    cases = [
        {"OLLAMA_HOST": f"0.0.0.0:{port}", "PRELOADER_GUARD_UPSTREAM": f"127.0.0.1:{port}"},
        {"PRELOADER_GUARD_UPSTREAM": "0.0.0.0:11433"},  # clients could go around the guard
        {"PRELOADER_GUARD_UPSTREAM": "127.0.0.1:99999"},
    ]
    for env in cases:
        done = launcher.run_once(env=launcher.env(PRELOADER_GUARD="on", **env))
        assert done.returncode == 2, done.stderr
        [line] = [x for x in done.stderr.splitlines() if x.startswith("ollama-preloader: error")]
        assert "PRELOADER_GUARD_UPSTREAM=" in line
    assert run_requests_none(launcher)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        done = launcher.run_once(
            env=launcher.env(
                PRELOADER_GUARD="on",
                OLLAMA_HOST=f"127.0.0.1:{busy}",
                PRELOADER_GUARD_UPSTREAM=f"127.0.0.1:{free_port()}",
            )
        )
    assert done.returncode == 2, done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("ollama-preloader: error")]
    assert f"OLLAMA_HOST='127.0.0.1:{busy}'" in line
    assert "address already in use" in line
    assert "server.started" not in done.stderr  # refused before `ollama serve` started

    done = launcher.run_once(
        args=("watch",), env=launcher.env(PRELOADER_GUARD="on", OLLAMA_PRELOAD_MODELS="llama3.2")
    )
    assert done.returncode == 2
    assert "PRELOADER_GUARD_LISTEN" in done.stderr.strip()


def run_requests_none(launcher: Launcher) -> bool:
    """No `ollama serve` answered anything (it was never started)."""
    log = launcher.tmp / "fake-requests.jsonl"
    return not log.exists() or '"path"' not in log.read_text()


def test_watch_guards_a_server_it_does_not_own_and_holds_during_its_restart(
    launcher: Launcher, tmp_path: Path
) -> None:
    """`watch`: the guard on PRELOADER_GUARD_LISTEN in front of OLLAMA_HOST rewrites the same
    way; a request made while the server is away waits for it and then succeeds."""
    with start_fake(tmp_path / "fake", catalog=SMALL, present=["llama3.2"]) as fake:
        listen = f"127.0.0.1:{free_port()}"
        env = launcher.env(
            OLLAMA_HOST=fake.host,
            OLLAMA_PRELOAD_MODELS="llama3.2",
            PRELOADER_GUARD="on",
            PRELOADER_GUARD_LISTEN=listen,
        )
        run = launcher.start(("watch",), env=env)
        run.wait_all_pinned()
        client = Run(proc=run.proc, env={**run.env, "OLLAMA_HOST": listen}, workdir=run.workdir)
        assert post(client, "/api/generate", b'{"model":"llama3.2","keep_alive":0}')[0] == 200
        fake_bodies = [r["body"] for r in fake.requests("/api/generate")]
        assert fake_bodies[-1]["keep_alive"] == -1

        fake.stop()
        run.wait_event("server.lost")
        answers: list[Any] = []
        raw = b'{"model":"llama3.2","prompt":"x","stream":false}'
        waiter = threading.Thread(target=lambda: answers.append(post(client, "/api/generate", raw)))
        waiter.start()
        fake.start()
        waiter.join(timeout=WAIT)
        assert answers
        assert answers[0][0] == 200
        assert run.stop() == 0
