"""The contestants: the supervisor (`ollama-preloader run`) and the shell baseline, each a
process against its own fake Ollama in its own directory, with the fake's request log read as it
grows."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchmarks.analysis import ModelPlan, norm
from benchmarks.scenarios import catalog

ROOT = Path(__file__).resolve().parents[1]
FAKE_BIN = ROOT / "tests" / "fake_bin"
BASELINE = ROOT / "benchmarks" / "baseline.sh"
WAIT = 120.0  # upper bound for any wait; a run that exceeds it is reported as failed

PRODUCT = "ollama-preloader"
SHELL = "baseline.sh"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def preloader_command() -> list[str]:
    exe = shutil.which("ollama-preloader", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "ollama_preloader"]


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class FakeLog:
    """FAKE_OLLAMA_LOG, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        new = []
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    new.append(record)
        self.records.extend(new)
        return new

    def loaded(self) -> set[str]:
        return {norm(str(r["model"])) for r in self.records if r.get("event") == "load"}


@dataclass
class Contestant:
    """One contestant process against its own fake Ollama, in its own directory."""

    who: str
    plans: Sequence[ModelPlan]
    workdir: Path
    startup_delay: float
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    launched: float = 0.0
    port: int = 0
    log: FakeLog = field(init=False)
    started_env: dict[str, str] = field(default_factory=dict)
    _out: IO[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = FakeLog(self.workdir / "fake-log.jsonl")

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OLLAMA_", "PRELOADER_", "FAKE_OLLAMA_"))
        }
        (self.workdir / "catalog.json").write_text(json.dumps(catalog(self.plans)))
        (self.workdir / "home").mkdir(exist_ok=True)
        self.port = free_port()
        env.update(
            PATH=f"{FAKE_BIN}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
            + os.environ.get("PATH", ""),
            HOME=str(self.workdir / "home"),
            OLLAMA_HOST=f"127.0.0.1:{self.port}",
            OLLAMA_MODELS=str(self.workdir / "models"),
            OLLAMA_MAX_LOADED_MODELS=str(len(self.plans)),
            OLLAMA_PRELOAD_MODELS=",".join(p.name for p in self.plans),
            FAKE_OLLAMA_CATALOG=str(self.workdir / "catalog.json"),
            FAKE_OLLAMA_PRESENT=",".join(p.name for p in self.plans if p.present),
            FAKE_OLLAMA_LOG=str(self.log.path),
            FAKE_OLLAMA_STARTUP_DELAY=str(self.startup_delay),
            PYTHONUNBUFFERED="1",
        )
        if self.who == PRODUCT:
            # Defaults otherwise: the figures are those of an out-of-the-box supervisor.
            env.update(PRELOADER_LOG_FORMAT="json", PRELOADER_HEALTH_PORT=str(free_port()))
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        if self.who == PRODUCT:
            return [*preloader_command(), "run"]
        return ["bash", str(BASELINE)]

    def start(self) -> None:
        self.launch(self.env())

    def launch(self, env: dict[str, str]) -> None:
        self.started_env = env
        self._out = (self.workdir / "contestant.out").open("wb")
        self.launched = time.time()
        self.proc = subprocess.Popen(
            self.command(),
            env=env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.log.poll()
            if predicate():
                return True
            if not self.alive():
                self.log.poll()
                return predicate()
            time.sleep(0.02)
        return False

    def wait_all_loaded(self, timeout: float = WAIT) -> bool:
        names = {norm(p.name) for p in self.plans}
        return self.wait_for(lambda: names <= self.log.loaded(), timeout)

    def http(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
        return json.loads(text) if text.strip() else None

    @property
    def ollama_cli(self) -> Path:
        """The `ollama` command a user types next to this server."""
        return FAKE_BIN / "ollama"

    def take_away(self, plan: ModelPlan) -> str:
        """Unload a pinned model the way the server's own scheduler would; how it was done."""
        self.http("POST", "/_fake/evict", {"model": plan.name})
        return "evicted"

    def serve_pid(self) -> int | None:
        for r in self.log.records:
            if r.get("event") == "serve_start":
                return int(r["pid"])
        return None

    def stop(self) -> None:
        """SIGTERM, wait, then make sure nothing it started is left."""
        self.log.poll()
        serve = self.serve_pid()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_group(self.proc.pid)
                self.proc.wait()
            kill_group(self.proc.pid)  # the baseline's `ollama serve &` shares its group
        if serve is not None:
            kill_group(serve)  # the supervisor's serve has its own session, runners with it
        if self._out is not None:
            self._out.close()
        self.log.poll()


@contextlib.contextmanager
def contestant(
    who: str, plans: Sequence[ModelPlan], workdir: Path, startup_delay: float, **env: str
) -> Iterator[Contestant]:
    c = Contestant(who, plans, workdir, startup_delay, dict(env))
    try:
        c.start()
        yield c
    finally:
        c.stop()


Make = Callable[..., contextlib.AbstractContextManager[Contestant]]
