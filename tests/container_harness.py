"""The kit's private Docker Engine, driven through its `engine` script and the docker CLI."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

BASE_TAG = "0.32.15"  # the Dockerfile's OLLAMA_VERSION default


class Engine:
    """One engine with its state under `state`; `docker` runs against its socket."""

    def __init__(self, script: Path, state: Path) -> None:
        self.script = script
        self.state = state
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
        self._engine("start")
        line = self._engine("env").strip()
        self.env["DOCKER_HOST"] = line.split("=", 1)[1].strip("'\"")
        self._engine("base-image", BASE_TAG)

    def stop(self) -> None:
        ids = self.run("ps", "-aq", check=False).stdout.split()
        if ids:
            self.run("rm", "-f", "-v", *ids, check=False)
        self._engine("stop")

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
        self, context: Path, tag: str, *, target: str, build_args: dict[str, str] | None = None
    ) -> None:
        args = ["build", "--network", "host", "--target", target, "-t", tag]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        self.run(*args, str(context))

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
            time.sleep(1)
        logs = self.run("logs", name, check=False)
        raise AssertionError(f"{name}: health {status!r}, not {want!r}\n{logs.stderr[-3000:]}")

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
            rows.append((int(stat.split()[0]), int(rest[1]), rest[0], cmd.strip() or comm))
        return rows
