"""Live reload on the real Ollama: edits of the models file and SIGHUP change the pinned set
while the same `ollama serve` and the same runner processes of the other models go on."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from preloader_harness import Run
from real_harness import RealLauncher

CENTURY = timedelta(days=365 * 100)


def expiries(run: Run) -> dict[str, timedelta]:
    """/api/ps as {name: time until it expires}."""
    now = datetime.now(UTC)
    return {m["name"]: datetime.fromisoformat(m["expires_at"]) - now for m in run.ps()}


def pinned(run: Run) -> list[str]:
    return sorted(name for name, left in expiries(run).items() if left > CENTURY)


def status(run: Run) -> dict[str, Any]:
    _, doc = run.health_json("/status")
    result: dict[str, Any] = doc
    return result


def start(real: RealLauncher, lines: list[str], *seed: str, **env: str) -> tuple[Run, Path]:
    real.seed_store(*seed)
    path = real.tmp / "models.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    run = real.start(env=real.env(PRELOADER_MODELS_FILE=str(path), **env))
    run.wait_all_pinned()
    return run, path


def test_added_model_is_pinned_beside_the_running_ones(real: RealLauncher) -> None:
    """An entry added to the file: pulled and pinned; the same `ollama serve` and the same
    runner process for the model already pinned."""
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    run, path = start(real, [chat], "tiny-chat")
    servers, (runner,) = real.servers(), real.runners()

    path.write_text(f"{chat}\n{embed}\n")
    run.wait_event("model.pinned", model=f"{embed}:latest")
    assert pinned(run) == [f"{chat}:latest", f"{embed}:latest"]
    assert real.servers() == servers
    assert runner in real.runners()
    assert len(real.runners()) == 2
    assert run.count_events("model.evicted") == 0
    assert run.stop() == 0


@pytest.mark.parametrize("policy", ["release", "unload", "keep"])
def test_removed_model_is_released_unloaded_or_kept(real: RealLauncher, policy: str) -> None:
    """release: /api/ps shows a finite expiry (the default 5m); unload: gone; keep: still
    pinned. It leaves /status either way; the other model's runner goes on."""
    chat, chat2 = real.name("tiny-chat"), real.name("tiny-chat2")
    run, path = start(real, [chat, chat2], "tiny-chat", "tiny-chat2", PRELOADER_ON_REMOVE=policy)
    before = set(real.runners())

    path.write_text(f"{chat}\n")
    run.wait_event("model.removed", model=f"{chat2}:latest")
    left = expiries(run)
    if policy == "release":
        assert timedelta(minutes=4) < left[f"{chat2}:latest"] <= timedelta(minutes=5)
        assert real.runners() == sorted(before)
    elif policy == "unload":
        run.wait_for(lambda: f"{chat2}:latest" not in expiries(run), "unloaded")
        run.wait_for(lambda: len(real.runners()) == 1, "its runner gone")
        assert set(real.runners()) < before
    else:
        assert left[f"{chat2}:latest"] > CENTURY
    assert left[f"{chat}:latest"] > CENTURY
    assert [m["name"] for m in status(run)["models"]] == [f"{chat}:latest"]
    assert run.stop() == 0


def test_changed_options_reload_with_the_new_context(real: RealLauncher) -> None:
    """num_ctx added to the entry: the runner is reloaded and /api/ps shows the new context
    length; the other model's runner is untouched."""
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    run, path = start(real, [chat, embed], "tiny-chat", "tiny-embed")
    (context,) = [m["context_length"] for m in run.ps() if m["name"] == f"{chat}:latest"]
    assert context != 2048
    before = set(real.runners())

    path.write_text(f"{chat}?num_ctx=2048\n{embed}\n")
    run.wait_event("model.pinned", model=f"{chat}:latest", reason="changed")
    listed = {m["name"]: m for m in run.ps()}
    assert listed[f"{chat}:latest"]["context_length"] == 2048
    assert pinned(run) == [f"{chat}:latest", f"{embed}:latest"]
    after = set(real.runners())
    assert len(after) == 2
    assert len(after & before) == 1  # the embedding model's runner stayed
    assert run.stop() == 0


def test_broken_edit_keeps_the_set_then_a_fix_applies(real: RealLauncher) -> None:
    """A bad line: config.reload_failed, /status shows it, nothing unloaded; then a fixed
    version adds the model."""
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    run, path = start(real, [chat], "tiny-chat", "tiny-embed")
    runners = real.runners()

    path.write_text(f"{chat}\n{embed}?num_ctx=lots\n")
    failed = run.wait_event("config.reload_failed")
    assert "line 2" in failed["error"]
    assert "line 2" in (status(run)["config_error"] or "")
    assert pinned(run) == [f"{chat}:latest"]
    assert real.runners() == runners

    path.write_text(f"{chat}\n{embed}?num_ctx=512\n")
    run.wait_event("model.pinned", model=f"{embed}:latest")
    assert status(run)["config_error"] is None
    assert pinned(run) == [f"{chat}:latest", f"{embed}:latest"]
    assert run.stop() == 0


def test_sighup_rereads_dotenv(real: RealLauncher) -> None:
    """The list in `.env`, SIGHUP: the new model pinned by the same `ollama serve`."""
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    real.seed_store("tiny-chat", "tiny-embed")
    work = real.tmp / "work"
    work.mkdir(exist_ok=True)
    (work / ".env").write_text(f"OLLAMA_PRELOAD_MODELS={chat}\n")
    run = real.start()
    run.wait_all_pinned()
    servers = real.servers()

    (work / ".env").write_text(f"OLLAMA_PRELOAD_MODELS={chat},{embed}\n")
    run.proc.send_signal(signal.SIGHUP)
    assert run.wait_event("config.reloaded")["trigger"] == "signal"
    run.wait_event("model.pinned", model=f"{embed}:latest")
    assert pinned(run) == [f"{chat}:latest", f"{embed}:latest"]
    assert real.servers() == servers
    assert run.stop() == 0


def test_watch_follows_the_file(real: RealLauncher) -> None:
    """`watch` beside a real server: an added model pinned, a removed one released."""
    chat, chat2, embed = real.name("tiny-chat"), real.name("tiny-chat2"), real.name("tiny-embed")
    real.seed_store("tiny-chat", "tiny-chat2", "tiny-embed")
    server = real.serve()
    path = real.tmp / "models.txt"
    path.write_text(f"{chat}\n{chat2}\n")
    env = real.env(OLLAMA_HOST=server.env["OLLAMA_HOST"], PRELOADER_MODELS_FILE=str(path))
    assert real.kit is not None
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if p != str(real.kit.bin_dir)
    )
    run = real.start(("watch",), env=env)
    run.wait_all_pinned()

    path.write_text(f"{chat}\n{embed}\n")
    run.wait_event("model.pinned", model=f"{embed}:latest")
    run.wait_event("model.removed", model=f"{chat2}:latest")
    left = expiries(run)
    assert left[f"{chat2}:latest"] < CENTURY
    assert pinned(run) == [f"{chat}:latest", f"{embed}:latest"]
    assert real.servers() == [server.pid]
    assert run.stop() == 0
