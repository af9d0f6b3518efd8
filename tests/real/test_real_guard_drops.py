"""The guard hooks the probe to client drops on the real Ollama: a client that goes away
mid-stream is, to Ollama, a cancellation that can wedge the runner (ollama-behaviour.md §9.5a),
so the model's next probe comes seconds after the drop, not at PRELOADER_PROBE_INTERVAL.

Whether drops wedge the runner is Ollama's chance (§9.5a; tests/real/test_real_probe.py has the
drops themselves): here the runner is wedged for certain and the drop is what brings the probe."""

from __future__ import annotations

import time

from preloader_harness import free_port
from real_harness import RealLauncher, answers, drop_stream, freeze, ps_rows

INTERVAL = 300.0  # PRELOADER_PROBE_INTERVAL: no interval probe comes during the test
WITHIN = 60.0  # a bound on the probe after the drop, a fifth of the interval, not an expectation


def test_a_drop_through_the_guard_brings_the_probe_before_its_interval(
    real: RealLauncher,
) -> None:
    """The runner wedged (stopped for certain: real_harness.freeze), then a client that gives up
    on its silent stream and goes away, through the guard: with a 5 minute interval, the probe
    that drop brought finds the wedge, kills the runner, and the model is pinned and answering
    again long before the first interval probe would have come."""
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
    freeze(runner)
    # Nothing probes a wedged model before the drop: the interval's first probe is minutes away.
    drop_stream(run, chat, drop_if_silent=True)
    run.wait_for(lambda: run.events("guard.client.dropped"), "the guard's guard.client.dropped")
    wedged = run.wait_event("model.wedged", timeout=WITHIN, model=listed)
    assert wedged["repair"] == "kill-runner"
    assert wedged["pid"] == runner
    run.wait_event("model.pinned", timeout=30, model=listed, reason="wedged")
    assert answers(run, chat, timeout=10.0, keep_alive=None)  # a client through the guard
    assert {row[0]: row[-1] for row in ps_rows(run)} == {listed: "Forever"}
    assert runner not in real.runners()
    assert time.monotonic() - started < INTERVAL
    assert run.stop() == 0
