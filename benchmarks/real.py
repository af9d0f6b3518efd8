"""`bench.py --real`: the same contestants against the real Ollama of ../shared/realollama.

The kit's real `ollama` (Go, with llama.cpp runners) serves three tiny real models, pulled from
the kit's TLS registry with its private CA in SSL_CERT_FILE (so neither contestant needs
`insecure`). Each contestant gets an empty store, its own HOME and ports. Real Ollama logs no
request bodies, so the contestant's OLLAMA_HOST is the recording proxy (benchmarks/recorder.py)
and `ollama serve` listens behind it: an `ollama` shim first on PATH runs `serve` on the
proxy's upstream port (logging `serve_start`) and every other command as the real CLI.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.analysis import ModelPlan, median
from benchmarks.contestants import (
    PRODUCT,
    ROOT,
    WAIT,
    Contestant,
    free_port,
)

sys.path.insert(0, str(ROOT / "tests"))  # the kit helpers of the real-server test tier
from real_harness import Kit, Registry, find_kit, free_port_pair, processes_with_home

RECORDER = ROOT / "benchmarks" / "recorder.py"
DEFAULT_KIT = ROOT.parent / "shared" / "realollama" / "bin" / "ollama"
# The kit's models: (name, kind, bytes on disk), from its README.
MODELS = (
    ("tiny-chat", "completion", 1_900_000),
    ("tiny-chat2", "completion", 4_400_000),
    ("tiny-embed", "embedding", 753_000),
)

SHIM = """#!/usr/bin/env bash
# bench.py --real: `ollama serve` listens behind the recording proxy; any other command is the
# real CLI, talking to the proxy like the contestant does.
if [ "${1:-}" = serve ]; then
  printf '{"t": %s, "event": "serve_start", "pid": %d}\\n' "$(date +%s.%N)" "$$" >>"$BENCH_LOG"
  OLLAMA_HOST="$BENCH_UPSTREAM" exec "$BENCH_OLLAMA" "$@"
fi
exec "$BENCH_OLLAMA" "$@"
"""


def recorder_command(listen: int, upstream: int, log: Path) -> list[str]:
    ports = ("--listen", str(listen), "--upstream", str(upstream))
    return [sys.executable, str(RECORDER), *ports, "--log", str(log)]


def kit_path() -> Path:
    """PRELOADER_REAL_OLLAMA (as the test tier reads it), else the kit beside the checkout."""
    found, _ = find_kit()
    return found or DEFAULT_KIT


def version(kit: Kit) -> str:
    """`ollama --version` of the kit's binary, for the report."""
    done = subprocess.run(
        [str(kit.ollama), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    # Without a server to ask it says "Warning: client version is X" (on stderr or stdout).
    lines = (done.stdout + done.stderr).strip().splitlines() or ["unknown"]
    return lines[-1].rsplit(" ", 1)[-1]


def plans(registry: Registry) -> tuple[ModelPlan, ...]:
    """The three models, none on disk: every one is pulled from the registry."""
    return tuple(
        ModelPlan(registry.name(name), kind, False, 0.0, 0.0, size) for name, kind, size in MODELS
    )


@dataclass
class RealContestant(Contestant):
    """A contestant whose `ollama` is the kit's, behind the recording proxy."""

    kit: Kit | None = None
    recorder: subprocess.Popen[bytes] | None = None
    upstream: int = 0

    @property
    def ollama_cli(self) -> Path:
        assert self.kit is not None
        return self.kit.ollama

    def take_away(self, plan: ModelPlan) -> str:
        """`ollama stop NAME`: the runner is stopped and the model leaves /api/ps."""
        done = subprocess.run(
            [str(self.ollama_cli), "stop", plan.name],
            env=self.started_env,
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ollama stop {plan.name}: {done.stderr.decode(errors='replace')}")
        return "stopped"

    def env(self) -> dict[str, str]:
        assert self.kit is not None
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OLLAMA_", "PRELOADER_", "FAKE_OLLAMA_"))
        }
        shim_dir = self.workdir / "bin"
        shim_dir.mkdir(exist_ok=True)
        shim = shim_dir / "ollama"
        shim.write_text(SHIM)
        shim.chmod(0o755)
        (self.workdir / "home").mkdir(exist_ok=True)
        self.port, self.upstream = free_port(), free_port()
        while self.upstream == self.port:
            self.upstream = free_port()
        env.update(
            PATH=f"{shim_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
            + os.environ.get("PATH", ""),
            HOME=str(self.workdir / "home"),
            OLLAMA_HOST=f"127.0.0.1:{self.port}",
            OLLAMA_MODELS=str(self.workdir / "models"),
            OLLAMA_MAX_LOADED_MODELS=str(len(self.plans)),
            OLLAMA_PRELOAD_MODELS=",".join(p.name for p in self.plans),
            OLLAMA_NO_CLOUD="1",  # offline: no ollama.com lookups at start
            SSL_CERT_FILE=str(self.kit.ca),
            BENCH_LOG=str(self.log.path),
            BENCH_UPSTREAM=f"127.0.0.1:{self.upstream}",
            BENCH_OLLAMA=str(self.kit.ollama),
            PYTHONUNBUFFERED="1",
        )
        if self.who == PRODUCT:
            env.update(PRELOADER_LOG_FORMAT="json", PRELOADER_HEALTH_PORT=str(free_port()))
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        env = self.env()
        self.recorder = subprocess.Popen(
            recorder_command(self.port, self.upstream, self.log.path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "recorder.err").open("wb"),
            start_new_session=True,
        )
        self._wait_listening(self.port)
        self.launch(env)

    def _wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                return
            time.sleep(0.01)
        raise RuntimeError(f"the recording proxy did not listen on {port}")

    def stop(self) -> None:
        super().stop()
        assert self.kit is not None
        # Runners of a server that did not stop them (none expected): found by this run's own
        # HOME, never by name.
        home = self.workdir / "home"
        for pid in processes_with_home(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.recorder is not None:
            self.recorder.terminate()
            self.recorder.wait(timeout=30)


@contextlib.contextmanager
def real_contestant(
    who: str, plans: Sequence[ModelPlan], workdir: Path, startup_delay: float, *, kit: Kit
) -> Iterator[Contestant]:
    c = RealContestant(who, plans, workdir, startup_delay, kit=kit)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def proxy_overhead(kit: Kit, base: Path, requests: int = 100) -> dict[str, float]:
    """What the recording proxy adds to one request: `GET /api/ps` on one kept-alive
    connection, straight to a real `ollama serve` and through the proxy (medians, ms)."""
    work = base / "proxy-overhead"
    (work / "home").mkdir(parents=True, exist_ok=True)
    listen, upstream = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
    env.update(
        HOME=str(work / "home"),
        OLLAMA_HOST=f"127.0.0.1:{upstream}",
        OLLAMA_MODELS=str(work / "models"),
        OLLAMA_NO_CLOUD="1",
    )
    serve = subprocess.Popen(
        [str(kit.ollama), "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    recorder = subprocess.Popen(
        recorder_command(listen, upstream, work / "log.jsonl"),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_answering(upstream)
        _wait_answering(listen)
        direct = _timed_gets(upstream, requests)
        proxied = _timed_gets(listen, requests)
    finally:
        for proc in (recorder, serve):
            proc.terminate()
            proc.wait(timeout=30)
    return {"direct_ms": median(direct), "proxied_ms": median(proxied)}


def _wait_answering(port: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                conn.close()
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing answered on port {port}")


def _timed_gets(port: int, count: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", "/api/ps")
        conn.getresponse().read()
        out.append(1000.0 * (time.perf_counter() - start))
    conn.close()
    return out


@contextlib.contextmanager
def real_server(base: Path) -> Iterator[tuple[Kit, Registry]]:
    """The kit (repaired into `base` if its library links were flattened) and a TLS registry."""
    kit = Kit.prepare(kit_path(), base / "kit")
    registry = Registry(kit, free_port_pair(), tls=True).start()
    try:
        yield kit, registry
    finally:
        registry.stop()
