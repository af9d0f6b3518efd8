"""The guard hooks the probe to client drops on the real Ollama: a client that goes away
mid-stream is, to Ollama, a cancellation that can wedge the runner (ollama-behaviour.md §9.5a),
so the model's next probe comes seconds after the drop, not at PRELOADER_PROBE_INTERVAL."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from preloader_harness import Run, free_port
from real_harness import RealLauncher, drop_stream, ps_rows

INTERVAL = 300.0  # PRELOADER_PROBE_INTERVAL: no interval probe comes during the test
WITHIN = 150.0  # a bound on the wedge, half the interval, not an expectation
DROPPING, ASKING = 4, 12  # clients that drop their streams, and clients that wait for answers


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


def test_drops_through_the_guard_bring_the_probe_before_its_interval(
    real: RealLauncher,
) -> None:
    """Clients of which a quarter drop their streams (the mix §9.5a saw wedge a model within
    seconds), all through the guard: with a 5 minute interval the probe finds the wedge soon
    after a drop, kills the runner, and the model is pinned and answering again long before
    the first interval probe would have come."""
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
    stop = threading.Event()

    def dropping() -> None:
        while not stop.is_set():
            drop_stream(run, chat, drop_if_silent=True)

    def asking() -> None:
        while not stop.is_set():
            answers(run, chat, timeout=5.0)

    clients = [threading.Thread(target=dropping, daemon=True) for _ in range(DROPPING)]
    clients += [threading.Thread(target=asking, daemon=True) for _ in range(ASKING)]
    for client in clients:
        client.start()
    try:
        # Only a probe a drop brought can log it: the interval's first one is minutes away.
        wedged = run.wait_event("model.wedged", timeout=WITHIN, model=listed)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
    assert wedged["repair"] == "kill-runner"
    assert wedged["pid"] == runner
    run.wait_event("model.pinned", timeout=30, model=listed, reason="wedged")
    assert answers(run, chat, timeout=10.0)
    assert {row[0]: row[-1] for row in ps_rows(run)} == {listed: "Forever"}
    assert real.runners() != [runner]
    assert time.monotonic() - started < INTERVAL
    assert run.events("guard.client.dropped"), "the guard logged no drop"
    assert run.stop() == 0
