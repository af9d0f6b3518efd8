"""Run the real `ollama-preloader` CLI as a subprocess against the fake `ollama` on PATH."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_ollama.harness import free_port, processes_in_group, read_jsonl

__all__ = ["Launcher", "Run", "free_port", "processes_in_group"]

TESTS = Path(__file__).resolve().parent
FAKE_BIN = TESTS / "fake_bin"
WAIT = 60.0  # an upper bound for waits, never an assertion about speed


def preloader_command() -> list[str]:
    exe = shutil.which("ollama-preloader", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "ollama_preloader"]


@dataclass
class Run:
    """One supervisor process and the fake Ollama it started."""

    proc: subprocess.Popen[str]
    env: dict[str, str]
    workdir: Path
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None
    ollama_bin: Path = FAKE_BIN / "ollama"  # the `ollama` CLI a user would type

    @property
    def base_url(self) -> str:
        return "http://" + self.env["OLLAMA_HOST"]

    @property
    def faults_file(self) -> Path:
        return Path(self.env["FAKE_OLLAMA_FAULTS"])

    def start_reader(self) -> None:
        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    # --- what the supervisor said ---------------------------------------------------------
    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and "event" in event and name in (None, event["event"]):
                out.append(event)
        return out

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            if self.proc.poll() is not None and self._reader is not None:
                self._reader.join(timeout=5)
                result = predicate()
                if result:
                    return result
                raise AssertionError(
                    f"supervisor exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.output()
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n" + self.output())

    def wait_event(self, name: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for e in self.events(name):
                if all(e.get(k) == v for k, v in fields.items()):
                    return e
            return None

        result: dict[str, Any] = self.wait_for(find, f"event {name} {fields}", timeout)
        return result

    def count_events(self, name: str, **fields: Any) -> int:
        return sum(all(e.get(k) == v for k, v in fields.items()) for e in self.events(name))

    def wait_all_pinned(self) -> dict[str, Any]:
        return self.wait_event("preload.complete")

    def output(self) -> str:
        return "\n".join(self.lines[-200:])

    # --- what the fake server saw and says ------------------------------------------------
    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        entries = read_jsonl(self.env["FAKE_OLLAMA_LOG"])
        return [e for e in entries if "path" in e and path in (None, e["path"])]

    def count_requests(self, path: str) -> int:
        """How many requests for `path` the fake has answered (cheap: no JSON parsing)."""
        log = Path(self.env["FAKE_OLLAMA_LOG"])
        if not log.exists():
            return 0
        needle = f'"path": "{path}"'
        return sum(1 for line in log.read_text().splitlines() if needle in line)

    def fake_events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in read_jsonl(self.env["FAKE_OLLAMA_LOG"]) if e.get("event") == event]

    # --- the supervisor's own endpoints and commands ----------------------------------------
    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.env['PRELOADER_HEALTH_PORT']}"

    def health_get(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, str, dict[str, str]]:
        """(status, body, headers) of a request to the health port; errors are answers too."""
        req = urllib.request.Request(self.health_url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)

    def health_json(self, path: str) -> tuple[int, Any]:
        status, body, _ = self.health_get(path)
        return status, json.loads(body)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Another `ollama-preloader` command in the same environment (as `docker exec` would)."""
        return subprocess.run(
            [*preloader_command(), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )

    def http(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
        return json.loads(text) if text.strip() else None

    def ps(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = self.http("GET", "/api/ps")["models"]
        return models

    def ollama(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.ollama_bin), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )

    def set_faults(self, faults: dict[str, Any]) -> None:
        tmp = self.faults_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(faults))
        tmp.replace(self.faults_file)

    # --- stopping --------------------------------------------------------------------------
    def stop(self, sig: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def wait_exit(self, timeout: float = WAIT) -> int:
        code = self.proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code


@dataclass
class Launcher:
    tmp: Path
    runs: list[Run] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        port = free_port()
        health_port = free_port()
        while health_port == port:
            health_port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OLLAMA_", "PRELOADER_", "FAKE_OLLAMA_"))
        }
        env.update(
            PATH=f"{FAKE_BIN}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
            + os.environ.get("PATH", ""),
            HOME=str(self.tmp / "home"),
            OLLAMA_HOST=f"127.0.0.1:{port}",
            OLLAMA_MODELS=str(self.tmp / "models"),
            FAKE_OLLAMA_LOG=str(self.tmp / "fake-requests.jsonl"),
            FAKE_OLLAMA_FAULTS=str(self.tmp / "faults.json"),
            PRELOADER_LOG_FORMAT="json",
            PRELOADER_LOG_LEVEL="debug",
            PRELOADER_WATCH_INTERVAL="0.2",
            PRELOADER_RETRY_INITIAL="0.05",
            PRELOADER_RETRY_MAX="0.2",
            PRELOADER_SHUTDOWN_GRACE="10",
            PRELOADER_READY_TIMEOUT="30",
            # Never the default 11435: tests run in parallel with other supervisors.
            PRELOADER_HEALTH_PORT=str(health_port),
            PRELOADER_HEALTH_HOST="127.0.0.1",
            PYTHONUNBUFFERED="1",
        )
        env.update(overrides)
        return env

    def start(
        self,
        args: tuple[str, ...] = ("run",),
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        **overrides: str,
    ) -> Run:
        """Start `command` (default: this venv's CLI) with `args`, reading its output."""
        full = env if env is not None else self.env(**overrides)
        (self.tmp / "home").mkdir(exist_ok=True)
        workdir = self.tmp / "work"
        workdir.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [*(command or preloader_command()), *args],
            env=full,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        run = Run(proc=proc, env=full, workdir=workdir)
        run.start_reader()
        self.runs.append(run)
        return run

    def run_once(
        self, args: tuple[str, ...] = ("run",), env: dict[str, str] | None = None, **overrides: str
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion (for commands that exit by themselves)."""
        full = env if env is not None else self.env(**overrides)
        (self.tmp / "home").mkdir(exist_ok=True)
        workdir = self.tmp / "work"
        workdir.mkdir(exist_ok=True)
        return subprocess.run(
            [*preloader_command(), *args],
            env=full,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )

    def cleanup(self) -> None:
        for run in self.runs:
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGTERM)
                try:
                    run.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
                    run.proc.wait()


# `python -c TAKE_TERMINAL CMD...` in a new session: its leader takes the pty on stdin as its
# controlling terminal, then becomes CMD (the hangup tests close the pty's master). SIGHUP back
# to its default first, as in a shell window: a suite started under `nohup` passes SIG_IGN
# down, and the supervisor rightly survives a hangup it was started to ignore.
TAKE_TERMINAL = (
    "import fcntl, os, signal, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "signal.signal(signal.SIGHUP, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"
)

# `python -c CRASH_IN_LOOP run`: the real CLI in a process whose reconcile loop raises an
# unexpected exception once every model is pinned. The bug is put in from outside the product
# (no test hook in it), for the tests that a crash stops `ollama serve` and its runners.
CRASH_IN_LOOP = """
import sys
from ollama_preloader.entry import main
from ollama_preloader.reconcile.supervisor import Supervisor
cycle = Supervisor._cycle
async def crashing_cycle(self):
    await cycle(self)
    if self.board.ready:
        raise RuntimeError("an internal error, injected by the test")
Supervisor._cycle = crashing_cycle
sys.argv[0] = "ollama-preloader"
main()
"""
