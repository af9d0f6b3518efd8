"""Never leave Ollama behind, on the fake: output that fails, hangups, crashes (issue 20)."""

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
from pathlib import Path
from typing import Any

from fake_catalogs import SMALL, write_catalog
from fake_ollama.harness import FakeOllama, pid_alive, start_fake
from preloader_harness import (
    CRASH_IN_LOOP,
    TAKE_TERMINAL,
    WAIT,
    Launcher,
    Run,
    preloader_command,
    processes_in_group,
)


def status(env: dict[str, str]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{env['PRELOADER_HEALTH_PORT']}/status"
    with urllib.request.urlopen(url, timeout=30) as resp:
        document: dict[str, Any] = json.loads(resp.read())
    return document


def fake_env(launcher: Launcher, models: str = "llama3.2", **env: str) -> dict[str, str]:
    """The environment of a `run` declaring `models` against the fake's default catalog."""
    return launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"),
        OLLAMA_PRELOAD_MODELS=models,
        **env,
    )


def stop_if_running(proc: subprocess.Popen[bytes]) -> None:
    """What a test leaves of the CLI it started itself: nothing."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_stdout_closed_by_its_reader_keeps_the_supervisor_running(launcher: Launcher) -> None:
    """The pipe's reader exits once everything is pinned: the supervisor goes on without its
    output, /status says so, an unloaded model is pinned again, and SIGTERM still stops all."""
    # Every poll is an access line: writes never stop.
    env = fake_env(launcher, PRELOADER_LOG_POLLS="true")
    (launcher.tmp / "home").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [*preloader_command(), "run"],
        env=env,
        cwd=launcher.tmp,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        serve_pid = None
        for line in proc.stdout:
            if b'"server.started"' in line:
                serve_pid = json.loads(line)["pid"]
            if b'"preload.complete"' in line:
                break
        assert serve_pid is not None
        proc.stdout.close()  # the reader goes away: every later write gets EPIPE

        run = Run(proc=proc, env=env, workdir=launcher.tmp)  # type: ignore[arg-type]
        lost = run.wait_for(lambda: status(env)["output"], "/status to show the lost output")
        assert lost["stdout"].startswith("lost: EPIPE"), lost
        assert proc.poll() is None
        # The loop still works: a model a user unloads is pinned again.
        loads = run.count_requests("/api/generate")
        assert run.ollama("stop", "llama3.2").returncode == 0
        run.wait_for(lambda: run.count_requests("/api/generate") > loads + 1, "a new load")
        run.wait_for(lambda: status(env)["ready"], "pinned again")
        assert len(processes_in_group(serve_pid)) >= 2  # serve and its runner
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
        assert processes_in_group(serve_pid) == []
    finally:
        stop_if_running(proc)


class Terminal:
    """The CLI as the controlling process of a pseudo-terminal (a shell window, an SSH session)."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TAKE_TERMINAL, *preloader_command(), "run"],
            env=env,
            cwd=cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        # Read without a thread: a read in progress would keep the master open past close().
        os.set_blocking(self.master, False)
        self.text = ""

    def read(self) -> str:
        with contextlib.suppress(OSError):
            while chunk := os.read(self.master, 65536):
                self.text += chunk.decode(errors="replace")
        return self.text

    def wait_for(self, fragment: str) -> None:
        deadline = time.monotonic() + WAIT
        while fragment not in self.read():
            assert self.proc.poll() is None, self.text[-3000:]
            assert time.monotonic() < deadline, f"no {fragment!r} in:\n{self.text[-3000:]}"
            time.sleep(0.05)

    def serve_pid(self) -> int:
        for line in self.text.splitlines():
            if '"server.started"' in line:
                return int(json.loads(line)["pid"])
        raise AssertionError(self.text[-3000:])

    def hang_up(self) -> None:
        os.close(self.master)  # the window closes: the kernel sends SIGHUP, writes get EIO


def test_a_terminal_that_hangs_up_stops_everything_with_129(launcher: Launcher) -> None:
    """The terminal's master closes while everything is pinned: a clean stop (exit 129), the
    whole group of `ollama serve` gone; a SIGHUP while the terminal is there reloads."""
    env = fake_env(launcher)
    (launcher.tmp / "home").mkdir(exist_ok=True)
    term = Terminal(env, launcher.tmp)
    try:
        term.wait_for('"preload.complete"')
        serve_pid = term.serve_pid()
        term.proc.send_signal(signal.SIGHUP)  # the terminal is still there: a reload
        term.wait_for('"config.reloaded"')
        assert term.proc.poll() is None
        assert len(processes_in_group(serve_pid)) >= 2
        term.hang_up()
        assert term.proc.wait(timeout=WAIT) == 129
        assert processes_in_group(serve_pid) == []
    finally:
        stop_if_running(term.proc)


def wait_gone(serve_pid: int, within: float = 5.0) -> list[int]:
    """The processes of serve's group still there after `within` seconds (none, we hope)."""
    deadline = time.monotonic() + within
    while (left := processes_in_group(serve_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_a_sigkilled_supervisor_takes_ollama_with_it(launcher: Launcher) -> None:
    """kill -9 of the supervisor: `ollama serve` gets its parent-death SIGTERM and stops its
    runners; nothing of the group is left."""
    run = launcher.start(env=fake_env(launcher, "llama3.2,devstral"))
    run.wait_all_pinned()
    serve_pid = run.wait_event("server.started")["pid"]
    assert len(processes_in_group(serve_pid)) >= 3
    run.proc.kill()
    assert run.wait_exit() == -signal.SIGKILL
    assert wait_gone(serve_pid) == []
    assert run.fake_events("serve_stop")  # it stopped the way SIGTERM stops it


def test_an_internal_error_stops_the_group_and_exits_1(launcher: Launcher) -> None:
    """An unexpected exception in the loop once all is pinned (CRASH_IN_LOOP): supervisor.crashed,
    the group stopped, exit 1."""
    run = launcher.start(env=fake_env(launcher), command=[sys.executable, "-c", CRASH_IN_LOOP])
    serve_pid = run.wait_event("server.started")["pid"]
    assert run.wait_exit() == 1
    crashed = run.events("supervisor.crashed")
    assert len(crashed) == 1
    assert "injected by the test" in crashed[0]["msg"]
    assert run.events("server.stopped")
    assert processes_in_group(serve_pid) == []


def _serve_with_runner(workdir: Path, store: Path, model: str) -> tuple[FakeOllama, int]:
    """A fake `ollama serve` of its own on `store` with `model` loaded: (serve, runner pid)."""
    serve = start_fake(workdir, catalog=SMALL, present=[model], models_dir=store)
    try:
        path = "/api/embed" if "embed" in model else "/api/generate"
        body: dict[str, Any] = {"model": model, "keep_alive": -1}
        if path == "/api/embed":
            body["input"] = ""
        code, answer = serve.request("POST", path, body)
        assert code == 200, answer
        (runner,) = serve.runner_pids()
    except BaseException:
        serve.cleanup()
        raise
    return serve, runner


def _leftover(workdir: Path, store: Path, model: str) -> tuple[FakeOllama, int]:
    """A runner of `store` whose serve was SIGKILLed (it keeps running, re-parented)."""
    serve, runner = _serve_with_runner(workdir, store, model)
    serve.kill()
    assert pid_alive(runner)
    return serve, runner


def _blob(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    return Path(argv[argv.index("--model") + 1]).name


def test_run_leaves_a_live_serves_runner_of_the_same_store_alone(launcher: Launcher) -> None:
    """Another `ollama serve`, alive, on the same OLLAMA_MODELS with a model loaded: `run`
    reports no stale runner, and that runner is alive and serving after `run` has stopped."""
    store = launcher.tmp / "models"
    other, theirs = _serve_with_runner(launcher.tmp / "other", store, "llama3.2")
    try:
        run = launcher.start(env=fake_env(launcher, OLLAMA_MODELS=str(store)))
        run.wait_all_pinned()
        assert run.stop() == 0
        assert run.events("server.stale_runner") == []
        assert pid_alive(theirs)
        assert other.runner_pids() == [theirs]
        code, answer = other.request(
            "POST", "/api/generate", {"model": "llama3.2", "prompt": "hi", "stream": False}
        )
        assert (code, answer["done"]) == (200, True)
        assert len(other.events("load")) == 1  # served by the same runner, never reloaded
    finally:
        other.cleanup()


def test_run_stops_only_the_leftovers_of_its_own_store(launcher: Launcher) -> None:
    """Two runners whose serve was SIGKILLed, one on this OLLAMA_MODELS, one on another: `run`
    reports and stops the first (server.stale_runner, action stop); the other store's stays."""
    store = launcher.tmp / "models"
    ours, mine = _leftover(launcher.tmp / "ours", store, "llama3.2")
    theirs, foreign = _leftover(launcher.tmp / "theirs", launcher.tmp / "elsewhere", "llama3.2")
    try:
        run = launcher.start(env=fake_env(launcher, OLLAMA_MODELS=str(store)))
        stale = run.wait_event("server.stale_runner")
        assert (stale["pid"], stale["action"], stale["model"]) == (mine, "stop", _blob(foreign))
        run.wait_all_pinned()
        assert not pid_alive(mine)
        assert pid_alive(foreign)
        assert run.stop() == 0
        assert [e["pid"] for e in run.events("server.stale_runner")] == [mine]
        assert pid_alive(foreign)
    finally:
        ours.cleanup()
        theirs.cleanup()


def test_watch_reports_leftover_runners_and_never_stops_them(launcher: Launcher) -> None:
    """`watch` of a serve on this host whose store holds a runner of a SIGKILLed earlier serve:
    one server.stale_runner (action report) with its pid and model, /status and /metrics list
    it, the live serve's own runner is not reported; when the watched serve is SIGKILLed and
    started again, the runner it left is reported too. Nothing is stopped."""
    store = launcher.tmp / "store"
    first, left = _leftover(launcher.tmp / "first", store, "nomic-embed-text")
    fake = start_fake(launcher.tmp / "fake", catalog=SMALL, present=["llama3.2"], models_dir=store)
    own = None
    try:
        env = launcher.env(OLLAMA_HOST=fake.host, OLLAMA_PRELOAD_MODELS="llama3.2")
        run = launcher.start(("watch",), env=env)
        run.wait_all_pinned()
        stale = run.wait_event("server.stale_runner")
        assert (stale["pid"], stale["model"], stale["action"]) == (left, _blob(left), "report")
        assert stale["memory"] > 0
        (own,) = fake.runner_pids()
        leftovers = run.wait_for(
            lambda: run.health_json("/status")[1]["leftover_runners"], "leftovers in /status"
        )
        assert [(r["pid"], r["model"]) for r in leftovers] == [(left, _blob(left))]
        metrics = run.health_get("/metrics")[1]
        assert "ollama_preloader_leftover_runners 1.0" in metrics.splitlines()

        fake.kill()  # its llama3.2 runner is left behind in turn
        run.wait_event("server.lost")  # seen away, so its return is a return
        fake.start()
        again = run.wait_event("server.stale_runner", pid=own)
        assert again["action"] == "report"
        run.wait_for(fake.runner_pids, "llama3.2 loaded on the new serve")
        assert run.stop() == 0
        assert pid_alive(left)
        assert pid_alive(own)
        assert sorted(e["pid"] for e in run.events("server.stale_runner")) == sorted([left, own])
        assert not [e for e in run.events("server.stale_runner") if e["action"] != "report"]
    finally:
        fake.cleanup()
        first.cleanup()
        if own is not None:  # in the group of the serve that was killed, not the new one's
            with contextlib.suppress(ProcessLookupError):
                os.kill(own, signal.SIGKILL)


def test_a_stop_right_after_the_spawn_is_a_clean_stop(launcher: Launcher) -> None:
    """`run` spawns `ollama serve` before it builds the rest of the supervisor: a SIGTERM sent
    the moment serve is started (a `docker stop` right after `docker run`) still stops serve
    and exits 0, never the signal's default death that skips the stop."""
    run = launcher.start(env=fake_env(launcher))
    serve_pid = run.wait_event("server.started")["pid"]
    assert run.stop() == 0
    assert wait_gone(serve_pid) == []
    assert run.count_events("supervisor.stopping") == 1


def test_a_hangup_right_after_the_spawn_is_a_reread_not_a_death(launcher: Launcher) -> None:
    """A SIGHUP while the supervisor is still being built (`docker kill -s HUP` right after
    `docker run`, no terminal involved) is handed over like a later one: the list is re-read
    and the run goes on, instead of the signal's default death with `ollama serve` just
    started."""
    run = launcher.start(env=fake_env(launcher))
    serve_pid = run.wait_event("server.started")["pid"]
    run.proc.send_signal(signal.SIGHUP)
    assert run.wait_event("config.reloaded")["trigger"] == "signal"
    run.wait_all_pinned()
    assert run.proc.poll() is None
    assert pid_alive(serve_pid)
    assert run.stop() == 0
    assert wait_gone(serve_pid) == []
