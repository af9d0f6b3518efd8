"""Scenarios 9 and 10 on the real Ollama: `watch` beside a server it did not start, and the
health command, /readyz and /metrics through a cold start, an eviction and its repair."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from datetime import UTC, datetime, timedelta

from preloader_harness import Run
from prometheus_client.parser import text_string_to_metric_families
from real_harness import RealLauncher, RealServe, Registry, ps_rows

CENTURY = timedelta(days=365 * 100)


def pinned_on(server: RealServe) -> list[str]:
    """Models the server's /api/ps lists with an expiry centuries ahead."""
    with urllib.request.urlopen(server.base_url + "/api/ps", timeout=10) as resp:
        models = json.loads(resp.read())["models"]
    now = datetime.now(UTC)
    return sorted(
        m["name"] for m in models if datetime.fromisoformat(m["expires_at"]) - now > CENTURY
    )


def test_watch_pins_on_a_server_it_did_not_start_and_after_its_restart(
    real: RealLauncher,
) -> None:
    """`watch` against a real `ollama serve` of the test's own: both models pinned, nothing
    started by the sidecar; the server restarted on the same store: both pinned again."""
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    real.seed_store("tiny-chat")
    server = real.serve()
    env = real.env(OLLAMA_HOST=server.env["OLLAMA_HOST"], OLLAMA_PRELOAD_MODELS=f"{chat},{embed}")
    # Without `ollama` on PATH the sidecar could not start a server even by mistake.
    assert real.kit is not None
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if p != str(real.kit.bin_dir)
    )
    run = real.start(("watch",), env=env)
    run.wait_all_pinned()
    declared = [f"{chat}:latest", f"{embed}:latest"]
    assert pinned_on(server) == declared
    assert run.wait_event("server.external")["url"] == server.base_url
    assert run.count_events("server.started") == 0
    assert real.servers() == [server.pid]
    assert run.count_events("model.pull.complete", model=f"{embed}:latest") == 1

    assert server.stop() == 0  # as `systemctl restart ollama` does: SIGTERM, then start
    server.start()
    run.wait_for(
        lambda: all(run.count_events("model.pinned", model=m) >= 2 for m in declared),
        "both pinned again",
    )
    run.wait_for(lambda: pinned_on(server) == declared, "both pinned on the new server")
    assert {row[0]: row[-1] for row in ps_rows(run)} == dict.fromkeys(declared, "Forever")
    assert real.servers() == [server.pid]
    assert run.count_events("model.pull.complete") == 1  # the store survived the restart
    assert run.proc.poll() is None
    assert run.stop() == 0
    assert server.proc is not None
    assert server.proc.poll() is None  # stopping the sidecar leaves the server running


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(run: Run) -> Samples:
    status, body, _ = run.health_get("/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_health_readyz_and_metrics_through_cold_start_eviction_and_repair(
    real: RealLauncher, tls_own_registry: Registry
) -> None:
    """Not ready while one model cannot be pulled yet (health exit 1 naming it, /readyz 503);
    ready once pulled and pinned; 503 again after `ollama stop`, 200 once it is repaired; the
    counters follow."""
    chat, chat2 = real.name("tiny-chat"), tls_own_registry.name("tiny-chat2")
    c1, c2 = f"{chat}:latest", f"{chat2}:latest"
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{chat},{chat2}")
    run.wait_event("model.pinned", model=c1)
    run.wait_event("model.pull.retry", model=c2)  # its registry is not up yet

    health = run.cli("health")
    assert health.returncode == 1, health.stdout + health.stderr
    assert c2 in health.stdout + health.stderr
    code, body = run.health_json("/readyz")
    assert code == 503
    assert c2 in str(body["reason"])
    m = scrape(run)
    assert value(m, "ollama_preloader_ready") == 0
    assert value(m, "ollama_preloader_model_pinned", model=c1) == 1
    assert value(m, "ollama_preloader_model_pinned", model=c2) == 0
    assert value(m, "ollama_preloader_model_pull_failures_total", model=c2) >= 1

    tls_own_registry.start()
    run.wait_all_pinned()
    assert run.cli("health").returncode == 0
    assert run.health_json("/readyz") == (
        200,
        {"ready": True, "message": "all 2 declared models are loaded and pinned"},
    )
    m = scrape(run)
    assert value(m, "ollama_preloader_ready") == 1
    assert value(m, "ollama_preloader_model_loads_total", model=c2) == 1
    assert value(m, "ollama_preloader_model_reloads_total", model=c2) == 0

    # Eviction: /readyz is read in a loop until the model is pinned again.
    seen: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.append(run.health_json("/readyz")[0])

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        assert run.ollama("stop", chat2).returncode == 0
        run.wait_event("model.evicted", model=c2)
        run.wait_for(lambda: run.count_events("model.pinned", model=c2) >= 2, "repaired")
        run.wait_for(lambda: seen and seen[-1] == 200, "/readyz 200 again")
    finally:
        done.set()
        poller.join(timeout=30)
    assert 503 in seen
    assert run.cli("health").returncode == 0
    m = scrape(run)
    assert value(m, "ollama_preloader_ready") == 1
    assert value(m, "ollama_preloader_model_reloads_total", model=c2) == 1
    assert value(m, "ollama_preloader_model_loads_total", model=c2) == 2
    assert value(m, "ollama_preloader_model_reloads_total", model=c1) == 0
    assert value(m, "ollama_preloader_model_memory_bytes", model=c2) > 0
    assert run.stop() == 0
