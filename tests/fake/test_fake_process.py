"""The fake as a process: signals, runner children, startup failures, startup delay, the CLI."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
from pathlib import Path

import httpx
from fake_ollama.cli import STOP_SPINNER
from fake_ollama.harness import OLLAMA_EXE, fake_env, pid_alive, processes_in_group

from .conftest import MakeFake


def test_sigterm_kills_runners_and_exits_zero(make_fake: MakeFake) -> None:
    """SIGTERM: runners are SIGKILLed and serve exits 0 (§9.1)."""
    fake = make_fake(present=["llama3.2", "all-minilm"])
    httpx.post(fake.url("/api/generate"), json={"model": "llama3.2", "keep_alive": -1})
    httpx.post(fake.url("/api/embed"), json={"model": "all-minilm", "input": []})
    pids = fake.runner_pids()
    assert len(pids) == 2
    for pid in pids:
        assert os.getpgid(pid) == fake.pid  # same process group as serve, no new session
    assert fake.stop(signal.SIGTERM) == 0
    assert not [p for p in pids if pid_alive(p)]
    assert fake.events("serve_stop")


def test_sigkill_leaves_runners(make_fake: MakeFake) -> None:
    """SIGKILL of serve leaves its runners alive, like the real server (§7.5)."""
    fake = make_fake(present=["llama3.2"])
    httpx.post(fake.url("/api/generate"), json={"model": "llama3.2"})
    pid = fake.runner_pids()[0]
    assert fake.kill() == -signal.SIGKILL
    assert pid_alive(pid)
    assert pid in processes_in_group(fake.pid)
    fake.cleanup()
    fake.wait_for(lambda: not pid_alive(pid), what="runner killed by cleanup")


def test_bind_failure(tmp_path: Path) -> None:
    """A port in use: `Error: listen tcp ...: bind: address already in use`, exit 1 (§1.2)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = fake_env(tmp_path, port=port)
        p = subprocess.run(
            [str(OLLAMA_EXE), "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert p.returncode == 1
    assert p.stderr.strip().endswith(
        f"Error: listen tcp 127.0.0.1:{port}: bind: address already in use"
    )


def test_models_dir_unusable(tmp_path: Path) -> None:
    """OLLAMA_MODELS that cannot be created: `Error: mkdir ...`, exit 1."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = fake_env(tmp_path, models_dir=blocker / "models")
    p = subprocess.run(
        [str(OLLAMA_EXE), "serve"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == f"Error: mkdir {blocker}: not a directory"


def test_exit_at_startup_fault(tmp_path: Path) -> None:
    """The exit_at_startup fault exits with the given code and message."""
    env = fake_env(tmp_path, faults={"exit_at_startup": {"code": 3, "message": "Error: nope"}})
    p = subprocess.run(
        [str(OLLAMA_EXE), "serve"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert (p.returncode, p.stderr.strip()) == (3, "Error: nope")


def test_startup_delay_accepts_then_answers(make_fake: MakeFake) -> None:
    """During the startup delay the port accepts but HTTP waits; then it answers (§1.2)."""
    fake = make_fake(wait=False, extra={"FAKE_OLLAMA_STARTUP_DELAY": "2"})
    fake.wait_for(lambda: "Listening on" in fake.stderr_text(), what="Listening line")
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5):
        pass  # TCP connect succeeds from the backlog
    assert not fake.events("serve_ready")
    r = httpx.get(fake.url("/"), timeout=30)
    assert r.text == "Ollama is running"
    assert fake.events("serve_ready")
    err = fake.stderr_text()
    assert err.index("Listening on") < err.index("vram-based default context")


def test_cli_without_server(tmp_path: Path) -> None:
    """The CLI prints the real connection error and exits 1 when nothing listens."""
    env = fake_env(tmp_path)
    for args in (["ps"], ["list"], ["pull", "x"], ["stop", "x"]):
        p = subprocess.run(
            [str(OLLAMA_EXE), *args], env=env, capture_output=True, text=True, check=False
        )
        assert p.returncode == 1
        assert p.stderr == (
            "Error: could not connect to ollama server, run 'ollama serve' to start it\n"
        )


def test_cli_commands(make_fake: MakeFake) -> None:
    """pull, run, list, cp, stop, rm and --version behave like the real CLI."""
    fake = make_fake()
    assert fake.cli("--version").stdout == "ollama version is 0.12.0-fake\n"
    p = fake.cli("pull", "all-minilm")
    assert p.returncode == 0
    assert p.stderr.splitlines()[-1] == "success"
    bad = fake.cli("pull", "nosuch")
    assert (bad.returncode, bad.stderr.splitlines()[-1]) == (
        1,
        "Error: pull model manifest: file does not exist",
    )
    assert fake.cli("run", "llama3.2:1b").returncode == 0  # pulls, then loads
    assert {m["name"] for m in fake.ps()} == {"llama3.2:1b"}
    ran = fake.cli("run", "llama3.2:1b", "say", "hi")
    assert "quick brown fox" in ran.stdout
    listing = fake.cli("list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert {line.split()[0] for line in listing[1:]} == {"all-minilm:latest", "llama3.2:1b"}
    assert (
        fake.cli("cp", "all-minilm", "mini:copy").stdout == "copied 'all-minilm' to 'mini:copy'\n"
    )
    assert fake.cli("stop", "llama3.2:1b").returncode == 0
    fake.wait_for(lambda: not fake.ps(), what="stopped")
    missing = fake.cli("stop", "nosuch")
    # The real CLI draws (and clears) its spinner on stderr before the error, even off a TTY.
    assert missing.stderr == STOP_SPINNER + 'Error: couldn\'t find model "nosuch" to stop\n'
    assert fake.cli("rm", "mini:copy").stdout == "deleted 'mini:copy'\n"
    gone = fake.cli("rm", "mini:copy")
    assert (gone.returncode, gone.stderr) == (1, "Error: model 'mini:copy' not found\n")


def test_cli_ps_stopping(make_fake: MakeFake) -> None:
    """`ollama ps` shows Stopping... while an expired runner is still being unloaded."""
    catalog = {"slowstop": {"size": 10**9, "load_seconds": 0.02, "unload_seconds": 10}}
    fake = make_fake(catalog=catalog, present=["slowstop"])
    httpx.post(fake.url("/api/generate"), json={"model": "slowstop"})
    httpx.post(fake.url("/api/generate"), json={"model": "slowstop", "keep_alive": 0})
    line = fake.cli("ps").stdout.splitlines()[1]
    assert line.rstrip().endswith("Stopping...")


def test_client_reset_is_not_reported(make_fake: MakeFake) -> None:
    """A client that resets a kept-alive connection leaves no traceback on stderr (Go is silent)."""
    fake = make_fake()
    with socket.create_connection(("127.0.0.1", fake.port)) as conn:
        conn.sendall(f"GET / HTTP/1.1\r\nHost: {fake.host}\r\n\r\n".encode())
        answer = b""
        while not answer.endswith(b"Ollama is running"):  # the whole answer: the server now
            answer += conn.recv(4096)  # waits for the next request on this connection
        assert answer.startswith(b"HTTP/1.1 200")
        # SO_LINGER 0: close with a reset while the server waits for the next request.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    httpx.get(fake.url("/"))  # the server is still serving
    fake.stop(signal.SIGTERM)
    assert "Traceback" not in fake.stderr_text()
    assert "Exception occurred" not in fake.stderr_text()
