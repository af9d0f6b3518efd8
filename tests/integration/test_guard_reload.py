"""A SIGHUP reload with the guard on (`run`): the real CLI against the fake. The guard moved
`ollama serve` to the upstream, so the OLLAMA_HOST a reload reads is the guard's address, not a
change; the supervisor keeps talking to the upstream, never through its own guard."""

from __future__ import annotations

import signal

from preloader_harness import Launcher, free_port
from prometheus_client.parser import text_string_to_metric_families


def test_sighup_keeps_the_upstream_and_names_only_real_changes(launcher: Launcher) -> None:
    models = launcher.tmp / "models.txt"
    models.write_text("llama3.2\n")
    run = launcher.start(
        env=launcher.env(
            PRELOADER_GUARD="on",
            PRELOADER_GUARD_UPSTREAM=f"127.0.0.1:{free_port()}",
            PRELOADER_MODELS_FILE=str(models),
            FAKE_OLLAMA_PRESENT="devstral",
        )
    )
    run.wait_all_pinned()

    models.write_text("llama3.2\ndevstral\n")
    run.proc.send_signal(signal.SIGHUP)
    run.wait_event("config.reloaded", trigger="signal")
    run.wait_event("model.pinned", model="devstral:latest")
    assert run.events("config.restart_needed") == []

    listed = {m["name"] for m in run.ps()}  # through the guard, as a client
    assert listed >= {"llama3.2:latest", "devstral:latest"}
    _, text, _ = run.health_get("/metrics")
    through_guard = {
        s.labels["endpoint"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "ollama_preloader_guard_requests_total"
    }
    # Only the client's one /api/ps: the supervisor's polls and the new load went upstream.
    assert through_guard == {"/api/ps": 1.0}

    # A real change in .env is still named, and only it.
    (run.workdir / ".env").write_text("PRELOADER_GUARD_HOLD=5s\n")
    run.proc.send_signal(signal.SIGHUP)
    restart = run.wait_event("config.restart_needed")
    assert restart["variables"] == ["PRELOADER_GUARD_HOLD"]
    assert run.stop() == 0
