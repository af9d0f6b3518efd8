"""Resident for real, on the real Ollama: killed runners, and clients with other options."""

from __future__ import annotations

import functools
import json
import os
import signal
from typing import Any

from preloader_harness import Run
from real_harness import RealLauncher, ps_rows, runner_starts


def status_model(run: Run) -> dict[str, Any]:
    done = run.cli("status", "--json")
    entry: dict[str, Any] = json.loads(done.stdout)["models"][0]
    return entry


def until(run: Run) -> dict[str, str]:
    return {row[0]: row[-1] for row in ps_rows(run)}


def generate(run: Run, chat: str, **body: Any) -> None:
    answer = run.http(
        "POST", "/api/generate", {"model": chat, "prompt": "hi", "stream": False, **body}
    )
    assert answer["done"] is True


def test_killed_runner_is_reloaded_and_reported(real: RealLauncher) -> None:
    """kill -9 of a pinned model's llama-server: Ollama says nothing and keeps listing it; the
    supervisor reports model.runner_exited with Ollama's exit status and starts one runner."""
    chat = real.name("tiny-chat")
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=chat)
    run.wait_all_pinned()
    (runner,) = real.runners()
    starts = runner_starts(run)

    os.kill(runner, signal.SIGKILL)
    exited = run.wait_event("model.runner_exited", model=f"{chat}:latest")
    assert (exited["pid"], exited["status"], exited["signal"]) == (
        runner,
        "signal: killed",
        "SIGKILL",
    )
    run.wait_event("model.pinned", model=f"{chat}:latest", reason="runner exited")
    (new,) = real.runners()
    assert new != runner
    assert runner_starts(run) == starts + 1
    assert until(run) == {f"{chat}:latest": "Forever"}
    assert status_model(run)["state"] == "pinned"
    assert run.count_events("model.runner_exited") == 1
    # Relayed from Ollama's own output, which is read apart from the supervisor's events:
    # under load it can come after model.pinned is seen (a loaded CI run).
    run.wait_for(
        lambda: any("llama-server process no longer running" in line for line in run.lines),
        "Ollama's line about the runner gone",
    )
    assert run.stop() == 0


def test_client_num_ctx_costs_one_reload_and_stays(real: RealLauncher) -> None:
    """An entry without options, a client sends num_ctx 2048: one runner start (the client's),
    then the model is pinned with 2048; no drift warning, no second reload."""
    chat = real.name("tiny-chat")
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=chat)
    run.wait_all_pinned()
    starts = runner_starts(run)
    assert status_model(run)["context_length"] == 4096

    generate(run, chat, options={"num_ctx": 2048})
    run.wait_event("model.pinned", model=f"{chat}:latest", reason="unpinned")
    run.wait_for(lambda: until(run) == {f"{chat}:latest": "Forever"}, "Forever again")
    entry = status_model(run)
    assert (entry["state"], entry["context_length"]) == ("pinned", 2048)
    assert runner_starts(run) == starts + 1
    unpinned = run.events("model.unpinned")[-1]
    assert "context length 2048 (was 4096)" in unpinned["msg"]
    assert run.count_events("model.context_drift") == 0
    # The client's next request, with its options, finds the runner as it left it.
    generate(run, chat, options={"num_ctx": 2048})
    assert runner_starts(run) == starts + 1
    assert run.stop() == 0


def test_entry_num_ctx_wins_and_the_drift_is_reported(real: RealLauncher) -> None:
    """An entry with num_ctx=4096, a client sends 2048: the entry wins (pinned with 4096 again)
    and model.context_drift names the client's value and the fix."""
    chat = real.name("tiny-chat")
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{chat}?num_ctx=4096")
    run.wait_all_pinned()
    starts = runner_starts(run)

    generate(run, chat, options={"num_ctx": 2048})
    drift = run.wait_event("model.context_drift", model=f"{chat}:latest")
    assert (drift["context"], drift["loaded_context"]) == (2048, 4096)
    assert f"{chat}?num_ctx=2048" in drift["msg"]
    assert "OLLAMA_CONTEXT_LENGTH=2048" in drift["msg"]
    run.wait_for(lambda: status_model(run)["context_length"] == 4096, "4096 again")
    run.wait_for(lambda: until(run) == {f"{chat}:latest": "Forever"}, "Forever again")
    assert runner_starts(run) == starts + 2  # the client's, then the entry's
    assert run.count_events("model.context_drift") == 1
    assert run.stop() == 0


def repinned_or_repaired(run: Run, exits: int) -> bool:
    return bool(
        run.count_events("model.unpinned") or run.count_events("model.runner_exited") > exits
    )


def test_dead_runner_replaced_by_a_client_is_reported_as_seen(real: RealLauncher) -> None:
    """The runner is killed and a client's request reloads the model before the supervisor:
    model.unpinned names the dead runner and the new one instead of "changed its keep_alive"."""
    chat = real.name("tiny-chat")
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=chat)
    run.wait_all_pinned()
    for _ in range(5):
        (runner,) = real.runners()
        exits = run.count_events("model.runner_exited")
        os.kill(runner, signal.SIGKILL)
        generate(run, chat)  # at once: the runner watch looks every second
        run.wait_for(functools.partial(repinned_or_repaired, run, exits), "an answer to it")
        if run.count_events("model.unpinned"):
            break
        run.wait_for(lambda: status_model(run)["state"] == "pinned", "repaired")
    unpinned = run.events("model.unpinned")[-1]
    assert unpinned["cause"] == "reloaded"
    assert f"its runner (pid {runner}) had exited" in unpinned["msg"]
    assert "a client changed its keep_alive" not in unpinned["msg"]
    run.wait_for(lambda: until(run) == {f"{chat}:latest": "Forever"}, "Forever again")
    assert run.stop() == 0
