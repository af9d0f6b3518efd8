"""Never leave Ollama behind, on the real server (issue 20): each case leaves no `ollama serve`
and no `llama-server` of the test within 5 s, and the next start pins normally."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

from preloader_harness import CRASH_IN_LOOP, TAKE_TERMINAL, WAIT, Run, preloader_command
from real_harness import RealLauncher, RealServe


def nothing_left(real: RealLauncher, within: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within
    while (left := real.servers() + real.runners()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_sigkilled_supervisor_leaves_nothing(real: RealLauncher) -> None:
    """kill -9 of the supervisor: the parent-death SIGTERM stops serve and its runner."""
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"))
    run.wait_all_pinned()
    assert len(real.runners()) == 1
    run.proc.kill()
    assert run.wait_exit() == -signal.SIGKILL
    assert nothing_left(real) == []
    again = real.start(OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"))
    again.wait_all_pinned()
    assert again.stop() == 0
    assert nothing_left(real) == []


def test_internal_error_leaves_nothing(real: RealLauncher) -> None:
    """An unexpected exception in the loop (CRASH_IN_LOOP): exit 1, serve and its runner
    stopped."""
    real.seed_store("tiny-chat")
    run = real.start(
        command=[sys.executable, "-c", CRASH_IN_LOOP],
        OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"),
    )
    assert run.wait_exit() == 1
    assert run.events("supervisor.crashed")
    assert nothing_left(real) == []
    again = real.start(OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"))
    again.wait_all_pinned()
    assert again.stop() == 0


def _popen(real: RealLauncher, env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    (real.tmp / "work").mkdir(exist_ok=True)
    return subprocess.Popen([*preloader_command(), "run"], env=env, cwd=real.tmp / "work", **kwargs)


def test_stdout_reader_exits_and_models_stay_pinned(real: RealLauncher) -> None:
    """The pipe's reader exits: the supervisor goes on, /status names the lost output, serve
    keeps answering /api/ps with the model pinned; SIGTERM then leaves nothing."""
    real.seed_store("tiny-chat")
    env = real.env(OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"), PRELOADER_LOG_POLLS="true")
    proc = _popen(
        real, env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b'"preload.complete"' in line:
                break
        proc.stdout.close()
        run = Run(proc=proc, env=env, workdir=real.tmp)  # type: ignore[arg-type]
        run.wait_for(lambda: run.health_json("/status")[1]["output"], "the lost output")
        time.sleep(2)  # Ollama keeps logging (access lines) into the supervisor meanwhile
        assert proc.poll() is None
        assert [m["expires_at"][:4] for m in run.ps()] == ["2319"]
        assert run.health_json("/readyz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
        assert nothing_left(real) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_terminal_hangup_leaves_nothing(real: RealLauncher) -> None:
    """The CLI in a pseudo-terminal whose master closes: exit 129, nothing left; the next
    start pins."""
    real.seed_store("tiny-chat")
    env = real.env(OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"))
    master, slave = pty.openpty()
    (real.tmp / "work").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", TAKE_TERMINAL, *preloader_command(), "run"],
        env=env,
        cwd=real.tmp / "work",
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    os.set_blocking(master, False)
    text = ""
    try:
        deadline = time.monotonic() + WAIT
        while '"preload.complete"' not in text:
            assert proc.poll() is None, text[-2000:]
            assert time.monotonic() < deadline, text[-2000:]
            with contextlib.suppress(BlockingIOError):
                text += os.read(master, 65536).decode(errors="replace")
            time.sleep(0.05)
        assert len(real.runners()) == 1
        os.close(master)
        assert proc.wait(timeout=WAIT) == 129
        assert nothing_left(real) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    again = real.start(OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"))
    again.wait_all_pinned()
    assert again.stop() == 0


def test_stale_runner_of_a_sigkilled_serve_is_stopped_at_start(real: RealLauncher) -> None:
    """A serve SIGKILLed with a model loaded leaves its llama-server; the next `run` on the
    same store reports it (server.stale_runner) and stops it, then pins normally."""
    real.seed_store("tiny-chat")
    chat = real.name("tiny-chat")
    serve = real.serve(OLLAMA_MODELS=str(real.store))
    serve_env = serve.env
    req = urllib.request.Request(
        serve.base_url + "/api/generate",
        data=json.dumps({"model": chat, "keep_alive": -1}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=WAIT) as resp:
        resp.read()
    (old,) = real.runners()
    serve.stop(signal.SIGKILL)
    assert real.runners() == [old]  # orphaned, still holding its memory
    run = real.start(OLLAMA_PRELOAD_MODELS=chat, OLLAMA_MODELS=serve_env["OLLAMA_MODELS"])
    stale = run.wait_event("server.stale_runner")
    assert (stale["pid"], stale["action"]) == (old, "stop")
    assert stale["memory"] > 0
    run.wait_all_pinned()
    assert old not in real.runners()
    assert len(real.runners()) == 1
    assert run.stop() == 0
    assert nothing_left(real) == []


def _load(serve: RealServe, model: str) -> None:
    req = urllib.request.Request(
        serve.base_url + "/api/generate",
        data=json.dumps({"model": model, "keep_alive": -1}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=WAIT) as resp:
        resp.read()


def test_run_leaves_a_live_serves_runner_of_the_same_store_alone(real: RealLauncher) -> None:
    """Another real `ollama serve` on the same store with tiny-chat loaded: `run` reports no
    stale runner; after it stopped, that runner is still there and still answers."""
    real.seed_store("tiny-chat")
    chat = real.name("tiny-chat")
    other = real.serve(OLLAMA_MODELS=str(real.store))
    _load(other, chat)
    (theirs,) = real.runners()
    run = real.start(OLLAMA_PRELOAD_MODELS=chat, OLLAMA_MODELS=str(real.store))
    run.wait_all_pinned()
    assert len(real.runners()) == 2
    assert run.stop() == 0
    assert run.events("server.stale_runner") == []
    assert real.runners() == [theirs]
    req = urllib.request.Request(
        other.base_url + "/api/generate",
        data=json.dumps({"model": chat, "prompt": "hi", "stream": False}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=WAIT) as resp:
        assert json.loads(resp.read())["done"] is True
    assert real.runners() == [theirs]  # served by that runner, not a new one


def test_watch_reports_a_leftover_runner_and_leaves_it(real: RealLauncher) -> None:
    """A serve SIGKILLed with tiny-chat loaded leaves its llama-server; `watch` of the next
    serve on that store reports it once (server.stale_runner, action report, with its memory)
    and lists it in /status, but never stops it; the live serve's runner is not reported."""
    real.seed_store("tiny-chat")
    chat = real.name("tiny-chat")
    first = real.serve(OLLAMA_MODELS=str(real.store))
    _load(first, chat)
    (left,) = real.runners()
    first.stop(signal.SIGKILL)
    server = real.serve(OLLAMA_MODELS=str(real.store))
    env = real.env(OLLAMA_HOST=server.env["OLLAMA_HOST"], OLLAMA_PRELOAD_MODELS=chat)
    assert real.kit is not None
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if p != str(real.kit.bin_dir)
    )
    run = real.start(("watch",), env=env)
    run.wait_all_pinned()
    stale = run.wait_event("server.stale_runner")
    assert (stale["pid"], stale["action"]) == (left, "report")
    assert stale["memory"] > 0
    leftovers = run.wait_for(
        lambda: run.health_json("/status")[1]["leftover_runners"], "leftovers in /status"
    )
    assert [r["pid"] for r in leftovers] == [left]
    assert len(real.runners()) == 2  # the leftover and the live serve's own
    assert run.stop() == 0
    assert left in real.runners()
    assert [e["pid"] for e in run.events("server.stale_runner")] == [left]
