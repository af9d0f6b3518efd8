"""Logs as users and log aggregators see them: JSON lines, documented events, the startup
summary, the context drift warning, and live pull bars on a terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

from fake_catalogs import SMALL, model, write_catalog
from preloader_harness import WAIT, Launcher, preloader_command

EVENTS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def documented_events() -> set[str]:
    """Event names in the docs' events table (rows like "| `a.b`, `c.d` | level | ...")."""
    text = EVENTS_PAGE.read_text()
    section = text[text.index("\n## Logs\n") :]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", first_cell))
    return names


def catalog_env(
    launcher: Launcher, models: dict[str, dict[str, Any]] | None = None, **env: str
) -> dict[str, str]:
    path = write_catalog(launcher.tmp / "catalog.json", {**SMALL, **(models or {})})
    return launcher.env(FAKE_OLLAMA_CATALOG=path, **env)


def test_json_logs_parse_line_by_line_and_are_documented(launcher: Launcher) -> None:
    """PRELOADER_LOG_FORMAT=json: every line of ours is one JSON object with the documented
    fields; every event name is in the docs' event table; Ollama's own lines pass through."""
    env = catalog_env(
        launcher,
        {"llama3.2:latest": model(size=2.0, pull_seconds=6)},
        OLLAMA_PRELOAD_MODELS="llama3.2,nomic-embed-text",
    )
    Path(env["FAKE_OLLAMA_FAULTS"]).write_text(
        '{"pull_fail": {"nomic-embed-text": {"times": 1, "after_fraction": 0.5}}}'
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    run.http("POST", "/_fake/evict", {"model": "nomic-embed-text"})
    run.wait_event("model.pinned", model="nomic-embed-text:latest", reason="evicted")
    run.http("POST", "/api/generate", {"model": "llama3.2", "keep_alive": "5m"})
    run.wait_event("model.pinned", model="llama3.2:latest", reason="unpinned")
    assert run.stop() == 0

    ours = []
    for line in run.lines:
        if line.startswith(("time=", "[GIN]")):
            continue  # `ollama serve`'s own output (slog on stderr, gin on stdout), relayed
        event = json.loads(line)  # anything else must be one of our JSON events
        assert isinstance(event, dict), line
        assert {"event", "level", "timestamp", "msg"} <= set(event), line
        assert event["timestamp"].endswith("Z")
        ours.append(event)
    names = {e["event"] for e in ours}
    undocumented = names - documented_events()
    assert not undocumented, f"events missing from docs/observability.md's table: {undocumented}"
    assert {
        "preload.plan",
        "health.listening",
        "server.started",
        "server.ready",
        "preload.summary",
        "model.pull.start",
        "model.pull.progress",
        "model.pull.retry",
        "model.pull.complete",
        "model.kind",
        "model.loading",
        "model.pinned",
        "preload.complete",
        "model.evicted",
        "model.unpinned",
        "supervisor.stopping",
        "server.stopping",
        "server.stopped",
        "supervisor.stopped",
    } <= names
    progress = [e for e in ours if e["event"] == "model.pull.progress"]
    assert {"model", "percent", "completed", "total"} <= set(progress[0])


def test_startup_summary_says_what_will_be_done(launcher: Launcher) -> None:
    """One line after start: models, kinds, what must be pulled, and the bytes known so far."""
    env = catalog_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2,nomic-embed-text,all-minilm?kind=embedding",
        FAKE_OLLAMA_PRESENT="llama3.2",
    )
    run = launcher.start(env=env)
    summary = run.wait_event("preload.summary")
    on_disk = {m["name"]: m["size"] for m in run.http("GET", "/api/tags")["models"]}
    assert summary["models"] == 3
    assert (summary["completion"], summary["embedding"], summary["unknown_kind"]) == (1, 1, 1)
    assert summary["pull"] == 2
    assert summary["to_pull"] == "nomic-embed-text:latest,all-minilm:latest"
    assert summary["known_bytes"] == on_disk["llama3.2:latest"]
    assert summary["unknown_sizes"] == 2
    assert "total_bytes" not in summary
    assert "2 GB" in summary["msg"]  # HumanBytes: no decimal for a whole number
    assert "unknown" in summary["msg"]
    run.wait_all_pinned()
    assert run.count_events("preload.summary") == 1
    assert run.stop() == 0


def test_startup_summary_with_everything_on_disk(launcher: Launcher) -> None:
    """Nothing to pull: the total is known and the line says so."""
    env = catalog_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2,all-minilm",
        FAKE_OLLAMA_PRESENT="llama3.2,all-minilm",
    )
    run = launcher.start(env=env)
    summary = run.wait_event("preload.summary")
    sizes = {m["name"]: m["size"] for m in run.http("GET", "/api/tags")["models"]}
    assert summary["total_bytes"] == sizes["llama3.2:latest"] + sizes["all-minilm:latest"]
    assert (summary["completion"], summary["embedding"], summary["pull"]) == (1, 1, 0)
    assert "nothing to pull" in summary["msg"]
    assert run.stop() == 0


def test_context_drift_is_warned_once_per_change(launcher: Launcher) -> None:
    """An entry with num_ctx, a client reloads the model with another: one warning naming both
    values and the fix, not one per cycle; a second, different change warns again. (An entry
    without num_ctx is kept as the client loaded it: test_runners.py.)"""
    env = catalog_env(
        launcher,
        # Each generated token takes 0.1 s: the client's runner, with its context length, is
        # busy for a while, as a real generation keeps it.
        {"llama3.2:latest": model(size=2.0, token_seconds=0.1)},
        OLLAMA_PRELOAD_MODELS="llama3.2?num_ctx=4096",
        FAKE_OLLAMA_PRESENT="llama3.2",
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    ours = run.ps()[0]["context_length"]
    assert ours == 4096

    def client(num_ctx: int, keep_alive: object) -> None:
        body = {
            "model": "llama3.2",
            "prompt": "Why is the sky blue?",
            "stream": False,
            "options": {"num_ctx": num_ctx},
            "keep_alive": keep_alive,
        }
        run.http("POST", "/api/generate", body)

    client(8192, -1)
    drift = run.wait_event("model.context_drift")
    assert drift["level"] == "warning"
    assert (drift["model"], drift["loaded_context"], drift["context"]) == (
        "llama3.2:latest",
        ours,
        8192,
    )
    assert "num_ctx" in drift["msg"]
    assert "OLLAMA_CONTEXT_LENGTH=8192" in drift["msg"]
    assert "llama3.2?num_ctx=8192" in drift["msg"]
    # Many more cycles: still one warning for this change.
    polls = len(run.requests("/api/ps"))
    run.wait_for(lambda: len(run.requests("/api/ps")) >= polls + 10, "ten more cycles")
    assert run.count_events("model.context_drift") == 1, run.output()

    # Another client value, with a finite keep_alive: a new change, so a new warning.
    client(2048, "5m")
    run.wait_for(lambda: run.count_events("model.context_drift") == 2, "a second warning")
    assert run.events("model.context_drift")[1]["context"] == 2048
    # The supervisor puts its own back (pinned, its context) and stays quiet after that.
    run.wait_for(
        lambda: [(m["context_length"], m["expires_at"][:2]) for m in run.ps()] == [(ours, "23")],
        "our context pinned again",
    )
    polls = len(run.requests("/api/ps"))
    run.wait_for(lambda: len(run.requests("/api/ps")) >= polls + 10, "ten more cycles")
    assert run.count_events("model.context_drift") == 2
    body = run.health_get("/metrics")[1]
    assert 'ollama_preloader_model_context_drifts_total{model="llama3.2:latest"} 2.0' in body
    assert run.stop() == 0


def test_pull_progress_is_a_live_bar_on_a_terminal(launcher: Launcher) -> None:
    """On a TTY: coloured console lines, a live bar per pull, no periodic progress events."""
    env = catalog_env(
        launcher,
        {"llama3.2:latest": model(size=2.0, pull_seconds=3)},
        OLLAMA_PRELOAD_MODELS="llama3.2",
        PRELOADER_LOG_FORMAT="auto",
    )
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    (launcher.tmp / "home").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [*preloader_command(), "run"],
        env=env,
        cwd=launcher.tmp,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + WAIT
    try:
        while b"Preloading complete" not in screen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    break
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT)
        os.close(master)
    text = screen.decode(errors="replace")
    assert "Preloading complete" in text, text[-2000:]
    assert "\x1b[" in text  # colours on a terminal
    bars = re.findall(r"pulling llama3\.2:latest.*?━.*?(\d+)%", text)
    assert bars, text[-2000:]
    assert any(0 < int(p) < 100 for p in bars)
    assert "model.pull.progress" not in text
    assert "Pull complete: llama3.2:latest" in text
