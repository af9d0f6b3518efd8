"""Resident for real, against the fake: dead runners, and clients that reload with other options."""

from __future__ import annotations

import functools
import json
import os
import urllib.request
from typing import Any

from fake_catalogs import SMALL, model, write_catalog
from preloader_harness import Launcher, Run

LLAMA = "llama3.2:latest"
RUNNER_START = "starting llama-server"  # the fake logs each runner start as the real one does


def start(launcher: Launcher, entry: str, **overrides: Any) -> Run:
    path = write_catalog(launcher.tmp / "catalog.json", {**SMALL, **overrides.pop("models", {})})
    env = launcher.env(
        FAKE_OLLAMA_CATALOG=path,
        FAKE_OLLAMA_PRESENT="llama3.2",
        OLLAMA_PRELOAD_MODELS=entry,
        **overrides,
    )
    return launcher.start(env=env)


def runners(run: Run) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = run.http("GET", "/_fake/state")["runners"]
    return found


def runner_starts(run: Run) -> int:
    return sum(1 for line in list(run.lines) if RUNNER_START in line)


def status_model(run: Run) -> dict[str, Any]:
    done = run.cli("status", "--json")
    doc: dict[str, Any] = json.loads(done.stdout)
    entry: dict[str, Any] = doc["models"][0]
    return entry


def client(run: Run, **body: Any) -> None:
    """A client's generate request, sent the way any program would (not through the fake's
    control endpoints)."""
    request = {"model": "llama3.2", "prompt": "hi", "stream": False, **body}
    req = urllib.request.Request(
        run.base_url + "/api/generate", data=json.dumps(request).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert json.loads(resp.read())["done"] is True


def test_dead_runner_is_reloaded_at_once_and_reported(launcher: Launcher) -> None:
    """A runner SIGKILLed while pinned: one model.runner_exited (pid, signal), a new runner,
    pinned again without waiting for the 5-minute refresh or a client."""
    run = start(launcher, "llama3.2")
    run.wait_all_pinned()
    (old,) = runners(run)
    starts = runner_starts(run)

    crashed = run.http("POST", "/_fake/crash_runner", {"model": "llama3.2"})["killed_pid"]
    assert crashed == old["pid"]
    exited = run.wait_event("model.runner_exited", model=LLAMA)
    assert (exited["pid"], exited["status"], exited["signal"]) == (
        crashed,
        "signal: killed",
        "SIGKILL",
    )
    assert exited["level"] == "warning"
    run.wait_event("model.pinned", model=LLAMA, reason="runner exited")
    (new,) = runners(run)
    assert new["pid"] != crashed
    assert new["pinned"]
    os.kill(new["pid"], 0)  # alive
    assert [e["reason"] for e in run.fake_events("reload")] == ["runner_died"]
    assert runner_starts(run) == starts + 1
    assert run.count_events("model.runner_exited") == 1
    assert run.events("model.loading")[-1]["reason"] == "runner exited"
    assert status_model(run)["state"] == "pinned"
    assert run.count_events("model.refresh") == 0  # the runner watch did it, not the refresh
    assert run.stop() == 0


def test_stopped_model_is_an_eviction_not_a_crash(launcher: Launcher) -> None:
    """`ollama stop`: the runner exits because Ollama unloaded it; loaded back as an eviction,
    no model.runner_exited."""
    run = start(launcher, "llama3.2")
    run.wait_all_pinned()
    stopped = run.ollama("stop", "llama3.2")
    assert stopped.returncode == 0, stopped.stderr
    run.wait_event("model.pinned", model=LLAMA, reason="evicted")
    assert run.count_events("model.runner_exited") == 0
    assert run.count_events("model.client_reload") == 0
    assert len(runners(run)) == 1
    assert run.stop() == 0


def test_client_with_other_num_ctx_costs_one_reload_and_is_pinned_as_it_is(
    launcher: Launcher,
) -> None:
    """Entry without options, a client sends num_ctx 2048: its reload is the only one; the
    supervisor waits for it and re-pins it with 2048; no drift warning (nothing to fight)."""
    # A slow load: the supervisor sees the model missing from /api/ps while the client's
    # runner loads, which it must not answer with a load of its own.
    run = start(launcher, "llama3.2", models={LLAMA: model(size=2.0, load_seconds=1.5)})
    run.wait_all_pinned()
    ours = run.ps()[0]["context_length"]
    assert ours != 2048
    starts = runner_starts(run)

    client(run, options={"num_ctx": 2048})
    run.wait_event("model.client_reload", model=LLAMA)
    run.wait_event("model.pinned", model=LLAMA, reason="unpinned")
    run.wait_for(
        lambda: [(m["context_length"], m["expires_at"][:2]) for m in run.ps()] == [(2048, "23")],
        "pinned with the client's context",
    )
    assert runner_starts(run) == starts + 1  # the client's runner, and no other
    loads = run.fake_events("load")
    assert [e["context_length"] for e in loads] == [ours, 2048]
    unpinned = run.wait_event("model.unpinned", model=LLAMA)
    assert unpinned["cause"] == "reloaded"
    assert f"context length 2048 (was {ours})" in unpinned["msg"]
    assert "a client changed its keep_alive" not in unpinned["msg"]
    assert run.count_events("model.context_drift") == 0
    entry = status_model(run)
    assert (entry["state"], entry["context_length"]) == ("pinned", 2048)
    # Later cycles keep it so: still one runner start more, still 2048.
    polls = len(run.requests("/api/ps"))
    run.wait_for(lambda: len(run.requests("/api/ps")) >= polls + 10, "ten more cycles")
    assert runner_starts(run) == starts + 1
    assert run.ps()[0]["context_length"] == 2048
    assert run.stop() == 0


def repinned_or_repaired(run: Run, exits: int, unpins: int) -> bool:
    return bool(
        run.count_events("model.unpinned") > unpins
        or run.count_events("model.runner_exited") > exits
    )


def answered(run: Run, pins: int) -> bool:
    return run.count_events("model.pinned") > pins or run.count_events("model.failed") > 0


def test_dead_runner_reloaded_by_a_client_is_reported_as_what_was_seen(
    launcher: Launcher,
) -> None:
    """The runner dies and a client's request reloads the model (default keep_alive) before the
    supervisor does: model.unpinned names the dead runner and the new one, not keep_alive."""
    run = start(launcher, "llama3.2")
    run.wait_all_pinned()
    for _ in range(20):
        # A race: the client's request follows the kill at once, but the watch sees the exit
        # at once too (a pidfd). When the supervisor wins it reports the crash and repairs
        # the model first (the client's request then only changes its keep_alive): try again.
        exits = run.count_events("model.runner_exited")
        unpins = run.count_events("model.unpinned")
        crashed = run.http("POST", "/_fake/crash_runner", {"model": "llama3.2"})["killed_pid"]
        client(run)
        answer = functools.partial(repinned_or_repaired, run, exits, unpins)
        run.wait_for(answer, "an answer to it")
        if run.count_events("model.runner_exited") == exits:
            break
        run.wait_for(lambda: status_model(run)["state"] == "pinned", "repaired")
    unpinned = run.wait_event("model.unpinned", model=LLAMA, cause="reloaded")
    run.wait_event("model.pinned", model=LLAMA, reason="unpinned")
    assert unpinned["cause"] == "reloaded"
    assert f"its runner (pid {crashed}) had exited" in unpinned["msg"]
    assert f"was {crashed})" in unpinned["msg"]  # a new runner (pid N, was <crashed>)
    assert "a client changed its keep_alive" not in unpinned["msg"]
    (new,) = runners(run)
    assert new["pinned"]
    assert new["pid"] != crashed
    assert run.stop() == 0


def test_clients_with_other_contexts_are_put_back_every_time(launcher: Launcher) -> None:
    """Clients that keep reloading a model with other contexts are no capacity conflict: after
    five (the old reload-storm count) the model is pinned again each time, never `failed`,
    whether the entry sets num_ctx or not."""
    for entry in ("llama3.2", "llama3.2?num_ctx=4096"):
        launcher.tmp = launcher.tmp / entry.replace("?", "_").replace("=", "_")
        launcher.tmp.mkdir()
        run = start(launcher, entry)
        run.wait_all_pinned()
        for n, context in enumerate((2048, 8192, 2048, 8192, 2048, 8192), start=1):
            client(run, options={"num_ctx": context}, keep_alive="5m")
            run.wait_for(functools.partial(answered, run, n), f"answer {n} to the client")
            pinned = functools.partial(lambda r: all(x["pinned"] for x in runners(r)), run)
            run.wait_for(pinned, f"pinned after {n}")
        assert run.events("model.failed") == [], entry
        assert status_model(run)["state"] == "pinned", entry
        assert run.stop() == 0
