"""The probe against the fake: a model listed pinned whose real requests hang (fault `wedge`,
ollama-behaviour.md §9.5a) is found, shown `wedged`, repaired, and escalated to a serve
restart when a runner kill does not hold; errors and `off` are no wedges."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from fake_catalogs import SMALL, model, write_catalog
from fake_ollama.harness import start_fake
from preloader_harness import Launcher, Run

from ollama_preloader.server.runners import find_on_host, parse_command

LLAMA = "llama3.2:latest"
EMBED = "nomic-embed-text:latest"
FAST = {"PRELOADER_PROBE_INTERVAL": "0.5s", "PRELOADER_PROBE_TIMEOUT": "0.3s"}


def start(launcher: Launcher, entries: str = "llama3.2", **env: str) -> Run:
    path = write_catalog(launcher.tmp / "catalog.json", SMALL)
    full = launcher.env(
        FAKE_OLLAMA_CATALOG=path,
        FAKE_OLLAMA_PRESENT="llama3.2,nomic-embed-text",
        OLLAMA_PRELOAD_MODELS=entries,
        **{**FAST, **env},
    )
    return launcher.start(env=full)


def runner_pids(run: Run) -> dict[str, int]:
    state = run.http("GET", "/_fake/state")
    return {r["model"]: r["pid"] for r in state["runners"]}


def probes(run: Run, path: str = "/api/generate") -> list[dict[str, Any]]:
    """The requests with a prompt or input: the probe's (no client sends any here)."""
    return [
        r
        for r in run.requests(path)
        if isinstance(r.get("body"), dict) and (r["body"].get("prompt") or r["body"].get("input"))
    ]


def generate(run: Run, timeout: float = 10.0) -> dict[str, Any]:
    """A client's real request, as any program sends it."""
    body = {"model": "llama3.2", "prompt": "hi", "stream": False}
    req = urllib.request.Request(
        run.base_url + "/api/generate", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def test_probe_sends_a_real_request_with_the_pinned_options(launcher: Launcher) -> None:
    """One token of generate for a completion model, embed of a word for an embedding model,
    each with the entry's options and keep_alive -1: nothing reloads, nothing is wedged."""
    run = start(launcher, "llama3.2?num_ctx=8192,nomic-embed-text")
    run.wait_all_pinned()
    run.wait_for(lambda: probes(run) and probes(run, "/api/embed"), "a probe of each model")
    generate_body = probes(run)[0]["body"]
    assert generate_body["keep_alive"] == -1
    assert generate_body["options"]["num_predict"] == 1
    assert generate_body["options"]["num_ctx"] == 8192
    embed_body = probes(run, "/api/embed")[0]["body"]
    assert embed_body["keep_alive"] == -1
    assert isinstance(embed_body["input"], str)
    assert embed_body["input"]
    assert run.fake_events("reload") == []
    assert run.count_events("model.wedged") == 0
    _, doc = run.health_json("/status")
    assert [m["state"] for m in doc["models"]] == ["pinned", "pinned"]
    _, metrics, _ = run.health_get("/metrics")
    assert f'ollama_preloader_model_probe_seconds_count{{model="{LLAMA}"}}' in metrics
    assert run.stop() == 0


def test_wedged_model_gets_a_new_runner_and_is_pinned_again(launcher: Launcher) -> None:
    """Real requests hang, a load-only request answers, /api/ps lists it pinned: the probe
    finds it, kills its runner, re-pins it, and clients are served again."""
    run = start(launcher)
    run.wait_all_pinned()
    old = runner_pids(run)[LLAMA]
    run.set_faults({"wedge": {"llama3.2": {"until": "runner"}}})
    wedged = run.wait_event("model.wedged", model=LLAMA)
    assert wedged["repair"] == "kill-runner"
    assert wedged["pid"] == old
    assert wedged["waited"] >= 0.3
    assert wedged["progress"] is not None
    assert wedged["progress"] < 0.05
    run.wait_event("model.pinned", model=LLAMA, reason="wedged")
    assert runner_pids(run)[LLAMA] != old
    assert generate(run)["done"] is True
    _, doc = run.health_json("/status")
    assert doc["ready"] is True
    assert doc["models"][0]["wedges"] == 1
    _, metrics, _ = run.health_get("/metrics")
    assert f'ollama_preloader_model_wedges_total{{model="{LLAMA}"}} 1.0' in metrics
    assert (
        f'ollama_preloader_model_wedge_repairs_total{{model="{LLAMA}",repair="kill-runner"}} 1.0'
        in metrics
    )
    assert run.stop() == 0


def test_wedged_again_restarts_serve_then_reports(launcher: Launcher) -> None:
    """A wedge a runner kill does not cure restarts `ollama serve` (every model pinned again);
    one a restart does not cure either is reported: `wedged` in status, /readyz false."""
    run = start(launcher, "llama3.2,nomic-embed-text")
    run.wait_all_pinned()
    run.set_faults({"wedge": {"llama3.2": {"until": "never"}}})
    run.wait_event("model.wedged", model=LLAMA, repair="kill-runner")
    second = run.wait_event("model.wedged", model=LLAMA, repair="restart-serve")
    assert second["again"] is True
    run.wait_event("server.ready", restart=True)
    run.wait_event("model.pinned", model=EMBED, reason="evicted")
    third = run.wait_event("model.wedged", model=LLAMA, repair="none")
    assert third["again"] is True

    def wedged_in_status() -> dict[str, Any] | None:
        _code, doc = run.health_json("/status")
        states = {m["name"]: m["state"] for m in doc["models"]}
        return doc if states == {LLAMA: "wedged", EMBED: "pinned"} else None

    doc = run.wait_for(wedged_in_status, "llama3.2 wedged in /status")
    assert doc["server_restarts"] == 1
    code, body, _ = run.health_get("/readyz")
    assert code == 503
    assert f"{LLAMA} wedged: a request waited" in body
    table = run.cli("status")
    assert "wedged" in table.stdout
    assert len(run.fake_events("serve_start")) == 2
    _, metrics, _ = run.health_get("/metrics")
    for repair in ("kill-runner", "restart-serve", "none"):
        line = f'ollama_preloader_model_wedge_repairs_total{{model="{LLAMA}",repair="{repair}"}}'
        assert f"{line} 1.0" in metrics
    assert 'ollama_preloader_model_state{model="llama3.2:latest",state="wedged"} 1.0' in metrics

    # Cured by hand: the next probe answers and it is pinned again, ready.
    run.set_faults({})
    run.wait_event("model.pinned", model=LLAMA, reason="probe answered")
    run.wait_for(lambda: run.health_get("/readyz")[0] == 200, "/readyz ready again")
    assert run.stop() == 0


def test_a_probe_error_is_no_wedge(launcher: Launcher) -> None:
    """A probe answered with an error (400 here) leaves the model pinned and ready."""
    run = start(launcher)
    run.wait_all_pinned()
    run.set_faults({"inference_fail": {"llama3.2": {"status": 400, "message": "bad option"}}})
    run.wait_for(lambda: len(probes(run)) >= 3, "three probes answered with 400")
    assert run.count_events("model.wedged") == 0
    assert run.health_get("/readyz")[0] == 200
    assert run.stop() == 0


def test_probe_off_sends_nothing(launcher: Launcher) -> None:
    run = start(launcher, PRELOADER_PROBE_INTERVAL="off")
    run.wait_all_pinned()
    run.set_faults({"wedge": {"llama3.2": {}}})
    run.wait_for(
        lambda: run.count_requests("/api/ps") >= 10, "the loop looked at /api/ps ten times"
    )
    assert probes(run) == []
    assert run.count_events("model.wedged") == 0
    assert run.stop() == 0


def test_watch_kills_a_runner_it_can_see(launcher: Launcher) -> None:
    """`watch` of an Ollama on this host: the runner is found by its model file and killed."""
    # A model file of its own (the fake names the blob by revision): a runner of the same file
    # elsewhere on the machine (another test's) would make the match ambiguous, and then the
    # API repair is chosen (tests/unit/test_find_on_host.py).
    catalog = {**SMALL, LLAMA: model(size=2.0, family="llama", revision=str(launcher.tmp))}
    with start_fake(launcher.tmp / "fake", catalog=catalog, present=["llama3.2"]) as fake:
        env = launcher.env(OLLAMA_HOST=fake.host, OLLAMA_PRELOAD_MODELS="llama3.2", **FAST)
        run = launcher.start(("watch",), env=env)
        run.wait_all_pinned()
        (old,) = fake.runner_pids()
        argv = [a for a in Path(f"/proc/{old}/cmdline").read_text().split("\0") if a]
        assert find_on_host(parse_command(argv)[0]) == old
        fake.set_faults({"wedge": {"llama3.2": {}}})
        wedged = run.wait_event("model.wedged", model=LLAMA)
        assert (wedged["repair"], wedged["pid"]) == ("kill-runner", old)
        run.wait_event("model.pinned", model=LLAMA, reason="wedged")
        (new,) = fake.runner_pids()
        assert new != old
        assert run.stop() == 0
