"""The kit's private Docker Engine, driven through its `engine` script and the docker CLI.

Shared by the container tier (tests/container) and benchmarks/container_start.py.

Where things live, and why:
- The engine script is PRELOADER_ENGINE, or `engine` beside the kit named by
  PRELOADER_REAL_OLLAMA (`<kit>/bin/ollama` -> `<kit>/engine`).
- The engine's state (socket, data root, containers) is a fresh /tmp/preloader-engine-* dir,
  never under pytest's tmp: a busy container mount there breaks pytest's tmp cleanup. It is
  deleted when the engine stops. PRELOADER_ENGINE_STATE names a dir to use and keep instead,
  so that a developer's reruns reuse the built layers.
- The Debian rootfs that `engine base-image` makes with debootstrap (~50 s) is kept in
  /tmp/preloader-engine-cache-UID and linked into each new state dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_TAG = "0.32.15"  # the Dockerfile's OLLAMA_VERSION default
ENGINE_VAR = "PRELOADER_ENGINE"
STATE_VAR = "PRELOADER_ENGINE_STATE"
ROOTFS = "engine-cache/bookworm-minbase.tar"


def find_engine() -> tuple[Path | None, str]:
    """The kit's `engine` script, or None and why not."""
    value = os.environ.get(ENGINE_VAR, "").strip()
    if value:
        path = Path(value)
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve(), ""
        return None, f"{ENGINE_VAR}={value} is not an executable file"
    kit = os.environ.get("PRELOADER_REAL_OLLAMA", "").strip()
    if not kit:
        return None, (
            f"neither {ENGINE_VAR} nor PRELOADER_REAL_OLLAMA is set "
            "(point it at ../shared/realollama/engine)"
        )
    path = Path(kit).resolve().parent.parent / "engine"
    if not path.is_file():
        return None, f"{path} is missing (set {ENGINE_VAR} to the kit's engine script)"
    return path, ""


@dataclass(frozen=True)
class Ports:
    """A container's Ollama API port and its supervisor's health port (host network)."""

    api: int
    health: int


class Engine:
    """One engine with its state under `state`; `run` runs the docker CLI against its socket."""

    def __init__(self, script: Path, state: Path | None = None) -> None:
        self.script = script
        kept = os.environ.get(STATE_VAR, "").strip()
        if state is None and kept:
            state = Path(kept)
        self.keep = state is not None
        if state is None:
            state = Path(tempfile.mkdtemp(prefix="preloader-engine-", dir="/tmp"))
        state.mkdir(parents=True, exist_ok=True)
        self.state = state
        self.cache = Path(f"/tmp/preloader-engine-cache-{os.getuid()}")
        self.env = {**os.environ, "REALOLLAMA_STATE": str(state)}
        self.docker = ["docker"]

    def _engine(self, *args: str) -> str:
        done = subprocess.run(
            ["bash", str(self.script), "--state", str(self.state), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"engine {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self) -> None:
        """dockerd, then ollama/ollama:BASE_TAG built from the kit (cached rootfs)."""
        self._engine("start")
        line = self._engine("env").strip()
        self.env["DOCKER_HOST"] = line.split("=", 1)[1].strip("'\"")
        _link(self.cache / "bookworm-minbase.tar", self.state / ROOTFS)
        self._engine("base-image", BASE_TAG)
        _link(self.state / ROOTFS, self.cache / "bookworm-minbase.tar")

    def stop(self) -> None:
        """Every container removed, dockerd stopped, the state deleted unless it is kept."""
        if "DOCKER_HOST" in self.env:
            ids = self.run("ps", "-aq", check=False, timeout=60).stdout.split()
            if ids:
                self.run("rm", "-f", "-v", *ids, check=False, timeout=120)
        self._engine("stop")
        _unmount_under(self.state)  # dockerd leaves exec/netns/default mounted
        if not self.keep:
            shutil.rmtree(self.state, ignore_errors=True)

    def run(
        self, *args: str, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.docker, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stdout}\n{done.stderr}")
        return done

    def build(
        self,
        context: Path,
        tag: str,
        *,
        target: str | None = None,
        build_args: dict[str, str] | None = None,
        no_cache: bool = False,
    ) -> float:
        """`docker build --network host`; returns the seconds it took."""
        args = ["build", "--network", "host", "-t", tag, *(["--no-cache"] if no_cache else [])]
        if target:
            args += ["--target", target]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        started = time.monotonic()
        self.run(*args, str(context))
        return time.monotonic() - started

    def start_container(
        self, image: str, name: str, *args: str, network: str = "host", ports: Ports
    ) -> None:
        """`docker run -d` with Ollama and the health port on the given free ports."""
        self.run(
            "run", "-d", "--name", name, "--network", network,
            "-e", f"OLLAMA_HOST=127.0.0.1:{ports.api}",
            "-e", f"PRELOADER_HEALTH_PORT={ports.health}",
            *args, image,
        )  # fmt: skip

    def inspect(self, name: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.run("inspect", name).stdout)
        return data[0]

    def wait_health(self, name: str, want: str = "healthy", timeout: float = 240) -> None:
        """Until Docker's own health status is `want` (judged by the image's HEALTHCHECK)."""
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            state = self.inspect(name)["State"]
            status = state.get("Health", {}).get("Status", "")
            if status == want:
                return
            if not state["Running"]:
                break
            time.sleep(0.2)
        logs = self.run("logs", name, check=False)
        raise AssertionError(f"{name}: health {status!r}, not {want!r}\n{logs.stderr[-3000:]}")

    def ollama_ps(self, name: str) -> str:
        return self.run("exec", name, "ollama", "ps").stdout

    def wait_pinned(self, name: str, models: list[str], timeout: float = 120) -> str:
        """Until `ollama ps` in the container lists every model with UNTIL `Forever`."""
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            out = self.run("exec", name, "ollama", "ps", check=False).stdout
            rows = [line for line in out.splitlines() if "Forever" in line]
            if all(any(model in row for row in rows) for model in models):
                return out
            time.sleep(0.2)
        raise AssertionError(f"{models} not all pinned in {name}:\n{out}")

    def kill_in(self, name: str, pid: int, signal: str = "KILL") -> None:
        """The image has no `kill` binary: the shell's builtin sends the signal."""
        self.run("exec", name, "sh", "-c", f"kill -{signal} {pid}")

    def ps(self, name: str) -> list[tuple[int, int, str, str]]:
        """(pid, ppid, state, command) of every process in the container, from /proc."""
        script = (
            "for d in /proc/[0-9]*; do s=$(cat $d/stat 2>/dev/null) || continue; "
            'c=$(tr "\\0" " " < $d/cmdline); echo "$s|$c"; done'
        )
        out = self.run("exec", name, "sh", "-c", script).stdout
        rows = []
        for line in out.splitlines():
            stat, _, cmd = line.partition("|")
            rest = stat[stat.rindex(")") + 2 :].split()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            if cmd.startswith("sh -c for d in /proc") or comm in {"cat", "tr"}:
                continue  # this scan itself
            rows.append((int(stat.split()[0]), int(rest[1]), rest[0], cmd.strip() or comm))
        return rows

    def host_pids(self, name: str) -> dict[int, str]:
        """The container's processes as the host sees them (`docker top`): host PID -> cmd."""
        out = self.run("top", name, "-eo", "pid,args").stdout.splitlines()[1:]
        return {int(pid): cmd for pid, _, cmd in (line.strip().partition(" ") for line in out)}


def host_alive(pids: list[int]) -> dict[int, str]:
    """Which of these host PIDs still exist (not zombies), with their command line."""
    alive = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            alive[pid] = cmd.strip()
    return alive


def host_processes_matching(needle: str) -> dict[int, str]:
    """Host processes whose command line contains `needle` (e.g. the image's runner path)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            found[int(entry.name)] = cmd.strip()
    return found


def _link(source: Path, target: Path) -> None:
    """Hard-link (or copy) `source` to `target` when `source` exists and `target` does not."""
    if not source.is_file() or target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _unmount_under(root: Path) -> None:
    """Lazily unmount whatever is still mounted below `root`, deepest first."""
    prefix = str(root.resolve()) + "/"
    points = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
