"""`run` spawns `ollama serve` before pydantic is imported when the precheck vouches for the
input, and still starts nothing on bad input (config/precheck.py, launch.py).

An `ollama` shim on PATH stands for Ollama: it records each `serve` it is asked for, with its
pid, and then waits to be stopped, so what a test sees is what was started and what was left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from preloader_harness import WAIT, Launcher, preloader_command

SHIM = """#!/bin/sh
if [ "$1" = serve ]; then
  sleep 120 &  # a runner: in serve's process group, without serve's parent-death signal
  echo "$$ $!" >> "$SHIM_SERVES"
  exec sleep 120
fi
exit 1
"""

# The start of `run` up to the spawn, as the CLI runs it, with the spawn replaced by a report
# of what the process had imported by then.
SPAWN_PROBE = """
import sys
from pathlib import Path

from ollama_preloader import deferred

deferred.defer("asyncio")  # as launch.run does first; its own call is then a no-op
from ollama_preloader.server import process


def spawn(self):
    print("pydantic before the spawn:", "pydantic" in sys.modules, flush=True)
    print("asyncio ran before the spawn:", "asyncio.base_events" in sys.modules, flush=True)
    raise SystemExit(0)


process.OllamaServer.spawn = spawn
from ollama_preloader.launch import run

run(Path(sys.argv[1]))
"""

# The precheck made to vouch for an input Settings refuses: what a precheck bug would do.
DISAGREE_PROBE = """
import sys
from pathlib import Path

from ollama_preloader.config import precheck

real = precheck.precheck


def vouching(env_file):
    import os

    saved = os.environ.pop("PRELOADER_PULL_ATTEMPTS")  # the value Settings will refuse
    try:
        return real(env_file)
    finally:
        os.environ["PRELOADER_PULL_ATTEMPTS"] = saved


precheck.precheck = vouching


from ollama_preloader.launch import run

run(Path(sys.argv[1]))
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir(exist_ok=True)
    shim = shim_dir / "ollama"
    shim.write_text(SHIM)
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "PRELOADER_"))}
    env.update(
        PATH=f"{shim_dir}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(tmp_path),
        OLLAMA_MODELS=str(tmp_path / "models"),
        OLLAMA_PRELOAD_MODELS="llama3.2,nomic-embed-text",
        PRELOADER_HEALTH_PORT="off",
        PRELOADER_SHUTDOWN_GRACE="2",
        SHIM_SERVES=str(tmp_path / "serves.txt"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _serves(tmp_path: Path) -> list[list[int]]:
    """[serve's pid, its runner's pid] for each `ollama serve` started."""
    path = tmp_path / "serves.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [[int(pid) for pid in line.split()] for line in lines if len(line.split()) == 2]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _probe(tmp_path: Path, probe: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / ".env")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def test_a_vouched_input_spawns_ollama_serve_before_pydantic_is_imported(tmp_path: Path) -> None:
    done = _probe(tmp_path, SPAWN_PROBE, _env(tmp_path, PRELOADER_WATCH_INTERVAL="2s"))
    assert done.returncode == 0, done.stderr
    assert "pydantic before the spawn: False" in done.stdout, done.stdout + done.stderr
    assert "asyncio ran before the spawn: False" in done.stdout, done.stdout + done.stderr


def test_an_input_left_to_settings_is_validated_before_the_spawn(tmp_path: Path) -> None:
    """A lower-case name is read by Settings but not vouched for: Settings first, as before;
    asyncio, which pydantic-settings imports, is still run only after the spawn (deferred.py)."""
    done = _probe(tmp_path, SPAWN_PROBE, _env(tmp_path, preloader_watch_interval="2s"))
    assert done.returncode == 0, done.stderr
    assert "pydantic before the spawn: True" in done.stdout, done.stdout + done.stderr
    assert "asyncio ran before the spawn: False" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PRELOADER_WATCH_INTERVAL", "soon"),
        ("PRELOADER_PULL_ATTEMPTS", "0"),
        ("PRELOADER_LOG_POLLS", "perhaps"),
        ("PRELOADER_PULL_POLICY", "sometimes"),
        ("OLLAMA_HOST", "https://example.com"),
        ("OLLAMA_PRELOAD_MODELS", "bad name!!"),
        ("PRELOADER_PROBE_TIMEOUT", "45s"),
        ("preloader_watch_interval", "soon"),
    ],
)
def test_bad_input_exits_2_with_nothing_started(launcher: Launcher, name: str, value: str) -> None:
    done = launcher.run_once(env=_env(launcher.tmp, **{name: value}))
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert name.upper() in line, line
    assert _serves(launcher.tmp) == []


def test_the_shim_sees_a_good_input_start_ollama_serve(tmp_path: Path) -> None:
    """The same command with good input does start it (so the test above can fail)."""
    proc = subprocess.Popen(
        [*preloader_command(), "run"],
        env=_env(tmp_path, PRELOADER_WATCH_INTERVAL="2s"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    serves: list[list[int]] = []
    try:
        deadline = time.monotonic() + WAIT
        while not serves and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            serves = _serves(tmp_path)
        assert len(serves) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT)
    assert not any(_alive(pid) for pid in serves[0]), "ollama serve or its runner was left"


def test_settings_refusing_a_vouched_input_stops_the_spawned_serve_and_exits_2(
    tmp_path: Path,
) -> None:
    done = _probe(tmp_path, DISAGREE_PROBE, _env(tmp_path, PRELOADER_PULL_ATTEMPTS="0"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PRELOADER_PULL_ATTEMPTS='0'" in done.stderr.strip().splitlines()[-1]
    serves = _serves(tmp_path)
    assert len(serves) == 1, "the probe's precheck vouched, so serve was spawned first"
    assert not any(_alive(pid) for pid in serves[0]), "ollama serve or its runner was left"
