"""Scenarios 2 to 8 on the real Ollama: repairs, signals, capacity, pull failures, baking."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from preloader_harness import Run
from real_harness import RealLauncher, Registry, access_count, ps_rows, runner_starts


def pins(run: Run, model: str) -> int:
    return run.count_events("model.pinned", model=model)


def forever(run: Run) -> dict[str, str]:
    """`ollama ps` rows as {name: UNTIL}."""
    return {row[0]: row[-1] for row in ps_rows(run)}


def status_json(run: Run) -> dict[str, Any]:
    done = run.cli("status", "--json")
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_ollama_stop_is_loaded_and_pinned_again(real: RealLauncher) -> None:
    """`ollama stop` of a pinned model: the supervisor loads it again (a new runner), Forever."""
    chat = real.name("tiny-chat")
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=chat)
    run.wait_all_pinned()
    (first,) = real.runners()

    stopped = run.ollama("stop", chat)
    assert stopped.returncode == 0, stopped.stderr
    run.wait_event("model.evicted", model=f"{chat}:latest")
    run.wait_for(lambda: pins(run, f"{chat}:latest") >= 2, "pinned again")
    assert forever(run) == {f"{chat}:latest": "Forever"}
    (second,) = real.runners()
    assert second != first
    assert run.events("model.pinned")[-1]["reason"] == "evicted"
    assert run.stop() == 0


def test_client_keep_alive_is_repinned_and_a_plain_request_changes_nothing(
    real: RealLauncher,
) -> None:
    """A request without keep_alive leaves the pin and the runner; keep_alive "5m" is re-pinned
    on the same runner."""
    chat = real.name("tiny-chat")
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=chat)
    run.wait_all_pinned()
    (runner,) = real.runners()
    starts = runner_starts(run)

    answer = run.http("POST", "/api/generate", {"model": chat, "prompt": "hi", "stream": False})
    assert answer["done"] is True
    assert forever(run) == {f"{chat}:latest": "Forever"}

    run.http("POST", "/api/generate", {"model": chat, "keep_alive": "5m"})
    run.wait_event("model.unpinned", model=f"{chat}:latest")
    run.wait_event("model.pinned", model=f"{chat}:latest", reason="unpinned")
    run.wait_for(lambda: forever(run) == {f"{chat}:latest": "Forever"}, "Forever again")
    # Only the 5m request un-pinned it, and neither request nor the re-pin started a runner.
    assert run.count_events("model.unpinned") == 1
    assert real.runners() == [runner]
    assert runner_starts(run) == starts
    assert run.stop() == 0


def test_sigterm_exits_0_and_leaves_no_process(real: RealLauncher) -> None:
    """SIGTERM: exit 0, `ollama serve` stopped by the signal (not killed), no process left."""
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    real.seed_store("tiny-chat", "tiny-embed")
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{chat},{embed}")
    run.wait_all_pinned()
    assert len(real.servers()) == 1
    assert len(real.runners()) == 2

    assert run.stop(signal.SIGTERM) == 0
    stopped = run.wait_event("server.stopped")
    assert stopped["returncode"] == 0  # it stopped within the grace period: no SIGKILL
    assert run.events("server.kill") == []
    assert real.servers() == []
    assert real.runners() == []


def test_killed_serve_is_restarted_and_every_model_pinned_again(real: RealLauncher) -> None:
    """SIGKILL to `ollama serve`: restarted, both models pinned again, no orphaned runner."""
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    real.seed_store("tiny-chat", "tiny-embed")
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{chat},{embed}")
    run.wait_all_pinned()
    (serve,) = real.servers()
    old_runners = real.runners()
    assert len(old_runners) == 2

    os.kill(serve, signal.SIGKILL)
    run.wait_event("server.exited")
    run.wait_event("server.ready", restart=True)
    run.wait_for(
        lambda: all(pins(run, f"{m}:latest") >= 2 for m in (chat, embed)), "both pinned again"
    )
    run.wait_for(lambda: len(real.runners()) == 2, "two runners")
    assert forever(run) == {f"{chat}:latest": "Forever", f"{embed}:latest": "Forever"}
    (new_serve,) = real.servers()
    assert new_serve != serve
    # The killed serve's runners were stopped with it, not left beside the new ones.
    assert not set(old_runners) & set(real.runners())
    assert run.stop() == 0
    assert real.servers() + real.runners() == []


def test_max_loaded_models_1_keeps_the_first_and_reports_the_second(real: RealLauncher) -> None:
    """OLLAMA_MAX_LOADED_MODELS=1, two models: the first pinned, the second `failed` with the
    capacity message, and only one runner is ever started."""
    chat, chat2 = real.name("tiny-chat"), real.name("tiny-chat2")
    real.seed_store("tiny-chat", "tiny-chat2")
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{chat},{chat2}", OLLAMA_MAX_LOADED_MODELS="1")
    failed = run.wait_event("model.failed", model=f"{chat2}:latest")
    assert "capacity: OLLAMA_MAX_LOADED_MODELS=1" in failed["reason"]
    run.wait_event("model.pinned", model=f"{chat}:latest")

    # Give the loop many watch intervals (0.2 s) in which a ping-pong would show.
    def settled() -> dict[str, Any] | None:
        doc = status_json(run)
        return doc if doc["uptime_seconds"] > 4 else None

    doc = run.wait_for(settled, "a few seconds of supervision")
    states = {m["name"]: (m["state"], m["reason"]) for m in doc["models"]}
    assert states[f"{chat}:latest"] == ("pinned", None)
    assert states[f"{chat2}:latest"][0] == "failed"
    assert "OLLAMA_MAX_LOADED_MODELS=1" in states[f"{chat2}:latest"][1]
    assert forever(run) == {f"{chat}:latest": "Forever"}
    assert runner_starts(run) == 1
    assert run.stop() == 0


def test_unknown_model_fails_alone_and_is_not_retried(real: RealLauncher) -> None:
    """A name the registry does not have: `failed` with Ollama's message, pulled once; the
    others pinned."""
    chat, nope = real.name("tiny-chat"), real.name("no-such-model")
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{nope},{chat}")
    failed = run.wait_event("model.failed", model=f"{nope}:latest")
    assert "pull model manifest: file does not exist" in failed["reason"]
    run.wait_event("model.pinned", model=f"{chat}:latest")

    def settled() -> dict[str, Any] | None:
        doc = status_json(run)
        return doc if doc["uptime_seconds"] > 4 else None

    doc = run.wait_for(settled, "a few seconds of supervision")
    states = {m["name"]: m["state"] for m in doc["models"]}
    assert states == {f"{nope}:latest": "failed", f"{chat}:latest": "pinned"}
    assert access_count(run, "POST", "/api/pull") == 1
    assert run.count_events("model.pull.retry") == 0
    assert run.stop() == 0


def test_registry_down_at_start_then_up(real: RealLauncher, tls_own_registry: Registry) -> None:
    """The registry is down when the supervisor starts: the pull fails and is retried; once the
    registry is up the model is pulled and pinned."""
    chat2 = tls_own_registry.name("tiny-chat2")
    run = real.start(OLLAMA_PRELOAD_MODELS=chat2)
    retry = run.wait_event("model.pull.retry", model=f"{chat2}:latest")
    assert "connect: connection refused" in retry["error"]
    tls_own_registry.start()
    run.wait_event("model.pinned", model=f"{chat2}:latest")
    assert forever(run) == {f"{chat2}:latest": "Forever"}
    assert run.stop() == 0


def test_baked_store_is_pinned_with_pull_policy_never(
    real: RealLauncher, tls_own_registry: Registry
) -> None:
    """`pull` into an empty store, registry stopped, then `run` with PRELOADER_PULL_POLICY=never:
    every model pinned from the store, nothing pulled."""
    chat, embed = tls_own_registry.name("tiny-chat"), tls_own_registry.name("tiny-embed")
    tls_own_registry.start()
    models = f"{chat},{embed}"
    baked = real.run_once(("pull",), OLLAMA_PRELOAD_MODELS=models)
    assert baked.returncode == 0, baked.stderr
    assert real.servers() + real.runners() == []  # `pull` stopped its server
    tls_own_registry.stop()

    run = real.start(OLLAMA_PRELOAD_MODELS=models, PRELOADER_PULL_POLICY="never")
    run.wait_all_pinned()
    assert forever(run) == {f"{chat}:latest": "Forever", f"{embed}:latest": "Forever"}
    assert run.events("model.pull.start") == []
    assert access_count(run, "POST", "/api/pull") == 0
    assert run.stop() == 0
