"""`run` repairs what Ollama's output and the runners' exits show, not at the next /api/ps look.

Each test sets PRELOADER_WATCH_INTERVAL=60s, so a repair seen within the (generous) wait below
was woken by the relayed access line or the runner's exit, not by the timer.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from fake_catalogs import SMALL, write_catalog
from preloader_harness import Launcher, Run

LLAMA = "llama3.2:latest"
# Far below the 60 s timer: the repair must come from a wake.
WAKE_WAIT = 30.0


def start(launcher: Launcher, **overrides: str) -> Run:
    path = write_catalog(launcher.tmp / "catalog.json", SMALL)
    env = launcher.env(
        FAKE_OLLAMA_CATALOG=path,
        FAKE_OLLAMA_PRESENT="llama3.2",
        OLLAMA_PRELOAD_MODELS="llama3.2",
        PRELOADER_WATCH_INTERVAL="60s",
        **overrides,
    )
    return launcher.start(env=env)


def listed(run: Run) -> list[dict[str, Any]]:
    with urllib.request.urlopen(run.base_url + "/api/ps", timeout=10) as resp:
        models: list[dict[str, Any]] = json.loads(resp.read())["models"]
    return models


def pinned(run: Run) -> bool:
    """/api/ps lists the model with a keep-alive that never ends (the fake says so per runner)."""
    found: list[dict[str, Any]] = run.http("GET", "/_fake/state")["runners"]
    return any(r["pinned"] for r in found) and any(m["name"] == LLAMA for m in listed(run))


def test_client_unpin_is_repaired_without_waiting_for_the_watch(launcher: Launcher) -> None:
    """A client's keep_alive:0 request unloads the pinned model; the access line Ollama prints
    when it ends wakes the loop, and the model is pinned again long before the 60 s look."""
    run = start(launcher)
    run.wait_all_pinned()
    loads = run.count_events("model.pinned", model=LLAMA)
    body = json.dumps({"model": "llama3.2", "keep_alive": 0}).encode()
    req = urllib.request.Request(run.base_url + "/api/generate", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read())["done"] is True
    run.wait_for(
        lambda: run.count_events("model.pinned", model=LLAMA) > loads,
        "the model pinned again",
        timeout=WAKE_WAIT,
    )
    assert run.wait_for(lambda: pinned(run), "the model pinned in /api/ps", timeout=WAKE_WAIT)
    assert run.count_events("model.runner_exited") == 0  # an unload, never a crash
    assert run.stop() == 0


def test_client_keep_alive_is_repinned_without_waiting_for_the_watch(launcher: Launcher) -> None:
    """A client's request with keep_alive 10m un-pins the model without unloading it (its runner
    stays, so no exit wakes anything): only the access line can, and it is re-pinned."""
    run = start(launcher)
    run.wait_all_pinned()
    (runner,) = run.http("GET", "/_fake/state")["runners"]
    body = json.dumps({"model": "llama3.2", "keep_alive": "10m"}).encode()
    req = urllib.request.Request(run.base_url + "/api/generate", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read())["done"] is True
    run.wait_event("model.pinned", model=LLAMA, reason="unpinned", timeout=WAKE_WAIT)
    assert run.wait_for(lambda: pinned(run), "the model pinned in /api/ps", timeout=WAKE_WAIT)
    (after,) = run.http("GET", "/_fake/state")["runners"]
    assert after["pid"] == runner["pid"]  # re-pinned as it was, not reloaded
    assert run.stop() == 0


def test_ollama_stop_is_repaired_without_waiting_for_the_watch(launcher: Launcher) -> None:
    """`ollama stop`: loaded back as an eviction, woken by the stop's access line."""
    run = start(launcher)
    run.wait_all_pinned()
    stopped = run.ollama("stop", "llama3.2")
    assert stopped.returncode == 0, stopped.stderr
    run.wait_event("model.pinned", model=LLAMA, reason="evicted", timeout=WAKE_WAIT)
    assert run.wait_for(lambda: pinned(run), "the model pinned in /api/ps", timeout=WAKE_WAIT)
    assert run.stop() == 0


def test_killed_runner_is_repaired_without_waiting_for_the_watch(launcher: Launcher) -> None:
    """A runner SIGKILLed while pinned: its exit (a pidfd) wakes the loop, which loads it again;
    nothing else happens that Ollama would print a line for."""
    run = start(launcher)
    run.wait_all_pinned()
    crashed = run.http("POST", "/_fake/crash_runner", {"model": "llama3.2"})["killed_pid"]
    exited = run.wait_event("model.runner_exited", model=LLAMA, timeout=WAKE_WAIT)
    assert exited["pid"] == crashed
    run.wait_event("model.pinned", model=LLAMA, reason="runner exited", timeout=WAKE_WAIT)
    found = run.http("GET", "/_fake/state")["runners"]
    assert [r["pid"] != crashed and r["pinned"] for r in found] == [True]
    assert run.stop() == 0


def test_our_own_probes_wake_nothing(launcher: Launcher) -> None:
    """The probe's requests are logged like a client's, but they are ours: a dozen probes,
    and /api/ps is not read once per probe (each would be a look for nothing)."""
    run = start(launcher, PRELOADER_PROBE_INTERVAL="0.3s", PRELOADER_PROBE_TIMEOUT="0.2s")
    run.wait_all_pinned()
    probes = run.count_requests("/api/generate")
    looks = run.count_requests("/api/ps")
    run.wait_for(
        lambda: run.count_requests("/api/generate") >= probes + 12, "a dozen probes", WAKE_WAIT
    )
    assert run.count_requests("/api/ps") - looks < 6
    # ... while a client's request still wakes it, between the probes.
    test_body = json.dumps({"model": "llama3.2", "keep_alive": "10m"}).encode()
    req = urllib.request.Request(run.base_url + "/api/generate", data=test_body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read())["done"] is True
    run.wait_event("model.pinned", model=LLAMA, reason="unpinned", timeout=WAKE_WAIT)
    assert run.stop() == 0
