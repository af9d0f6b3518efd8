"""Never leave Ollama behind, on the fake: output that fails, hangups, crashes (issue 20)."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from typing import Any

from fake_catalogs import write_catalog
from preloader_harness import WAIT, Launcher, Run, preloader_command, processes_in_group


def status(env: dict[str, str]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{env['PRELOADER_HEALTH_PORT']}/status"
    with urllib.request.urlopen(url, timeout=30) as resp:
        document: dict[str, Any] = json.loads(resp.read())
    return document


def test_stdout_closed_by_its_reader_keeps_the_supervisor_running(launcher: Launcher) -> None:
    """The pipe's reader exits once everything is pinned: the supervisor goes on without its
    output, /status says so, an unloaded model is pinned again, and SIGTERM still stops all."""
    env = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"),
        OLLAMA_PRELOAD_MODELS="llama3.2",
        PRELOADER_LOG_POLLS="true",  # every poll is an access line: writes never stop
    )
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
        if proc.poll() is None:
            proc.kill()
            proc.wait()
