"""/metrics: Prometheus text that prometheus_client parses, with counters that follow events."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from fake_catalogs import SMALL, model, write_catalog
from preloader_harness import Launcher, Run
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(run: Run) -> Samples:
    status, body, headers = run.health_get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_follow_pulls_loads_evictions_and_restarts(launcher: Launcher) -> None:
    """Counters move as the fake fails a pull, evicts a model and loses `ollama serve`."""
    catalog = {**SMALL, "devstral:latest": model(size=14.3, load_seconds=0.3)}
    env = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json", catalog),
        OLLAMA_PRELOAD_MODELS="llama3.2,devstral",
        FAKE_OLLAMA_PRESENT="devstral",
    )
    Path(env["FAKE_OLLAMA_FAULTS"]).write_text(
        '{"pull_fail": {"llama3.2": {"times": 1, "after_fraction": 0.5}}}'
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    m = scrape(run)
    llama, devstral = "llama3.2:latest", "devstral:latest"
    assert value(m, "ollama_preloader_ready") == 1
    assert value(m, "ollama_preloader_server_up") == 1
    assert value(m, "ollama_preloader_declared_models") == 2
    assert value(m, "ollama_preloader_all_pinned_seconds") > 0
    assert value(m, "ollama_preloader_model_state", model=llama, state="pinned") == 1
    assert value(m, "ollama_preloader_model_state", model=llama, state="failed") == 0
    assert value(m, "ollama_preloader_model_pinned", model=devstral) == 1
    assert value(m, "ollama_preloader_model_loads_total", model=llama) == 1
    assert value(m, "ollama_preloader_model_reloads_total", model=devstral) == 0
    # The failed attempt is counted, and the resumed download's bytes are counted once. Tiny
    # layers that finish before Ollama's first 60 ms progress report look already on disk.
    assert value(m, "ollama_preloader_model_pull_failures_total", model=llama) == 1
    pulled = run.wait_event("model.pull.complete", model=llama)["bytes"]
    assert pulled > 1_000_000_000
    downloaded = value(m, "ollama_preloader_model_pull_bytes_total", model=llama)
    assert pulled - 10_000 <= downloaded <= pulled
    assert value(m, "ollama_preloader_model_pull_bytes_total", model=devstral) == 0
    assert value(m, "ollama_preloader_model_load_seconds_count", model=devstral) == 1
    assert value(m, "ollama_preloader_model_load_seconds_bucket", model=devstral, le="+Inf") == 1
    resident = {p["name"]: p for p in run.ps()}
    assert value(m, "ollama_preloader_model_memory_bytes", model=devstral) == float(
        resident[devstral]["size"]
    )
    assert value(m, "ollama_preloader_model_context_length", model=devstral) == float(
        resident[devstral]["context_length"]
    )
    assert value(m, "ollama_preloader_server_restarts_total") == 0

    run.http("POST", "/_fake/evict", {"model": "devstral"})
    run.wait_event("model.pinned", model=devstral, reason="evicted")
    m = scrape(run)
    assert value(m, "ollama_preloader_model_reloads_total", model=devstral) == 1
    assert value(m, "ollama_preloader_model_loads_total", model=devstral) == 2
    assert value(m, "ollama_preloader_model_load_seconds_count", model=devstral) == 2
    assert value(m, "ollama_preloader_model_load_seconds_sum", model=devstral) >= 0.3 * 2
    assert value(m, "ollama_preloader_model_reloads_total", model=llama) == 0

    serve_pid = run.fake_events("serve_start")[-1]["pid"]
    os.kill(serve_pid, signal.SIGKILL)
    run.wait_event("server.ready", restart=True)
    run.wait_for(
        lambda: value(scrape(run), "ollama_preloader_ready") == 1, "models back after restart"
    )
    m = scrape(run)
    assert value(m, "ollama_preloader_server_restarts_total") == 1
    assert value(m, "ollama_preloader_model_reloads_total", model=llama) == 1
    assert run.stop() == 0


def test_metrics_while_not_ready_and_openmetrics(launcher: Launcher) -> None:
    """A failed model shows in the state gauge; a scraper asking for OpenMetrics gets it."""
    env = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"),
        OLLAMA_PRELOAD_MODELS="no-such-model:7b",
    )
    run = launcher.start(env=env)
    run.wait_event("model.failed", model="no-such-model:7b")
    # A client loads a model nobody declared.
    run.http("POST", "/api/pull", {"model": "all-minilm", "stream": False})
    run.http("POST", "/api/embed", {"model": "all-minilm", "input": []})

    def undeclared() -> Samples | None:
        m = scrape(run)
        return m if value(m, "ollama_preloader_undeclared_models") == 1 else None

    m: Any = run.wait_for(undeclared, "the undeclared model counted")
    assert value(m, "ollama_preloader_ready") == 0
    assert value(m, "ollama_preloader_model_state", model="no-such-model:7b", state="failed") == 1
    assert value(m, "ollama_preloader_model_pull_failures_total", model="no-such-model:7b") == 1
    assert ("ollama_preloader_all_pinned_seconds", ()) not in m
    status, body, headers = run.health_get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert run.stop() == 0
