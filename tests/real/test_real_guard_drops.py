"""The guard hooks the probe to client drops on the real Ollama: a client that goes away
mid-stream is, to Ollama, a cancellation that can wedge the runner (ollama-behaviour.md §9.5a),
so the model's next probe comes seconds after the drop, not at PRELOADER_PROBE_INTERVAL."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from preloader_harness import Run, free_port
from real_harness import RealLauncher, ps_rows

DROPS = 1000  # §9.5a saw a wedge within 10 to 41 drops; a bound, not an expectation
INTERVAL = 300.0  # PRELOADER_PROBE_INTERVAL: no interval probe comes during the test


def _host_port(run: Run) -> tuple[str, int]:
    host, port = run.env["OLLAMA_HOST"].rsplit(":", 1)
    return host, int(port)


def drop_stream(run: Run, model: str) -> None:
    """A streamed generate dropped after its first chunk (a user pressing stop); a stream
    that does not start within 5 s (the model wedged) is dropped before its first byte."""
    host, port = _host_port(run)
    body = json.dumps({"model": model, "prompt": "tell me a story", "keep_alive": -1}).encode()
    head = (
        f"POST /api/generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(head + body)
        data = b""
        try:
            while b'"response"' not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass


def answers(run: Run, model: str, timeout: float) -> bool:
    """A client's non-streamed generate through the guard: answered within `timeout`?"""
    body = {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 4}}
    req = urllib.request.Request(
        run.base_url + "/api/generate", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            done: dict[str, Any] = json.loads(resp.read())
    except (TimeoutError, urllib.error.URLError, OSError):
        return False
    return bool(done.get("done"))


def wedge_logged(run: Run, listed: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if run.count_events("model.wedged", model=listed):
            return True
        time.sleep(0.1)
    return False


def test_drops_through_the_guard_bring_the_probe_before_its_interval(
    real: RealLauncher,
) -> None:
    """Streams dropped through the guard until the model wedges: with a 5 minute interval the
    probe finds the wedge soon after a drop, kills the runner, and the model is pinned and
    answering again long before the first interval probe would have come."""
    chat = real.name("tiny-chat")
    listed = f"{chat}:latest"
    real.seed_store("tiny-chat")
    run = real.start(
        env=real.env(
            OLLAMA_PRELOAD_MODELS=chat,
            PRELOADER_GUARD="on",
            PRELOADER_GUARD_UPSTREAM=f"127.0.0.1:{free_port()}",
            PRELOADER_PROBE_INTERVAL="5m",
            PRELOADER_PROBE_TIMEOUT="1s",
        )
    )
    run.wait_all_pinned()
    started = time.monotonic()
    (runner,) = real.runners()
    for _ in range(DROPS):
        drop_stream(run, chat)
        if run.count_events("model.wedged", model=listed):
            break
        if answers(run, chat, timeout=2.0):
            continue
        # Not answered in 2 s: a wedge (only a drop can bring a probe this soon), or a slow
        # answer on a loaded machine, which still comes.
        if wedge_logged(run, listed, within=20.0):
            break
        assert answers(run, chat, timeout=30.0), (
            "a request hung and no model.wedged within 20 s of the drops"
        )
        assert time.monotonic() - started < INTERVAL / 2, "no wedge in half an interval"
    else:
        raise AssertionError(f"no wedge after {DROPS} dropped streams")
    wedged = run.wait_event("model.wedged", timeout=30, model=listed)
    assert wedged["repair"] == "kill-runner"
    assert wedged["pid"] == runner
    run.wait_event("model.pinned", timeout=30, model=listed, reason="wedged")
    assert answers(run, chat, timeout=10.0)
    assert {row[0]: row[-1] for row in ps_rows(run)} == {listed: "Forever"}
    assert real.runners() != [runner]
    # Found and repaired by a probe a drop brought: the interval's first one is not due yet.
    assert time.monotonic() - started < INTERVAL
    assert run.events("guard.client.dropped"), "the guard logged no drop"
    assert run.stop() == 0
