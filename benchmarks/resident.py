"""Resident-for-real figures on the real Ollama: dead-runner repair, reloads per client request
with other options, repair after `ollama stop`, the cost of a refresh, idle CPU.

    python -m benchmarks.resident --kit DIR --store DIR [--source DIR] [--rounds N]

DIR for --kit is a working copy of ../shared/realollama (its lib/ollama symlinks repaired, as
tests/real_harness.py Kit.prepare makes one); --store a model store holding `tiny-chat`
(`ollama create tiny-chat -f <kit>/models/Modelfile.tiny-chat`). --source runs another
checkout's supervisor (PYTHONPATH), to compare a branch with main.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.supervisor_process import SupervisorProcess

MODEL = "tiny-chat:latest"
START = "starting llama-server"
WAIT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Supervisor(SupervisorProcess):
    """One `ollama-preloader run` with the real `ollama` on PATH, its output collected."""

    def __init__(self, kit: Path, store: Path, source: Path | None, home: Path) -> None:
        super().__init__(
            bin_dir=kit / "bin",
            home=home,
            store=store,
            models=MODEL,
            port=free_port(),
            health_port=free_port(),
            source=source,
        )
        self.kit = kit

    def wait(self, name: str, count: int, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = [e for e in self.events(name) if all(e.get(k) == v for k, v in fields.items())]
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.01)
        raise SystemExit(f"timed out waiting for {name} #{count}; the last lines:\n{self.tail(30)}")

    def starts(self) -> int:
        return sum(1 for _, line in list(self.lines) if START in line)

    def post(self, path: str, body: dict[str, Any]) -> float:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(), method="POST"
        )
        started = time.monotonic()
        with urllib.request.urlopen(req, timeout=WAIT) as resp:
            resp.read()
        return time.monotonic() - started

    def runner(self) -> int:
        serve = self.serve()
        pids: set[int] = set()
        for task in os.listdir(f"/proc/{serve}/task"):
            pids.update(
                int(p) for p in Path(f"/proc/{serve}/task/{task}/children").read_text().split()
            )
        (pid,) = pids
        return pid

    def serve(self) -> int:
        (pid,) = [
            int(p)
            for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            .read_text()
            .split()
        ]
        return pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            tail = self.tail(40)
            self.proc.kill()
            raise SystemExit(f"the supervisor did not stop; the last lines:\n{tail}") from None


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def summary(name: str, values: list[float], unit: str = "s") -> None:
    if not values:
        print(f"{name}: no samples")
        return
    shown = ", ".join(f"{v:.3f}" for v in values)
    print(
        f"{name}: median {statistics.median(values):.3f}{unit}, max {max(values):.3f}{unit} "
        f"(n={len(values)}: {shown})"
    )


def idle_and_refresh(sup: Supervisor, rounds: int) -> None:
    time.sleep(2)
    before, t0 = sup.cpu_seconds(), time.monotonic()
    time.sleep(20)
    idle = (sup.cpu_seconds() - before) / (time.monotonic() - t0) * 100
    print(f"idle CPU of the supervisor: {idle:.2f}% of a core (20 s)")
    refresh = [sup.post("/api/generate", {"model": MODEL, "keep_alive": -1}) for _ in range(30)]
    summary("refresh (load request for a pinned model, same options)", refresh)


def stops(sup: Supervisor, rounds: int) -> None:
    found = []
    for n in range(rounds):
        time.sleep(1.5 + 0.1 * n)
        pins = len(sup.events("model.pinned"))
        subprocess.run(
            [str(sup.kit / "bin" / "ollama"), "stop", MODEL],
            env=sup.env,
            capture_output=True,
            check=True,
        )
        stopped = time.time()
        found.append(stamp(sup.wait("model.pinned", pins + 1)) - stopped)
    summary("repair after `ollama stop` (stop returned -> model.pinned)", found)


def clients(sup: Supervisor, rounds: int) -> None:
    found = []
    for n in range(rounds):
        time.sleep(1.5)
        starts, pins = sup.starts(), len(sup.events("model.pinned"))
        body = {"model": MODEL, "prompt": "hi", "stream": False}
        sup.post("/api/generate", {**body, "options": {"num_ctx": 2048 if n % 2 == 0 else 3072}})
        sup.wait("model.pinned", pins + 1)
        time.sleep(3)  # a second reload, if any, shows by now
        found.append(float(sup.starts() - starts))
    summary("runner starts per client request with another num_ctx", found, unit="")


def crashes(sup: Supervisor, rounds: int) -> None:
    found = []
    for _ in range(rounds):
        time.sleep(1.5)
        pins = sum(e.get("reason") == "runner exited" for e in sup.events("model.pinned"))
        os.kill(sup.runner(), signal.SIGKILL)
        killed = time.time()
        found.append(stamp(sup.wait("model.pinned", pins + 1, reason="runner exited")) - killed)
    summary("dead runner repair (kill -9 -> model.pinned)", found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kit", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--source", type=Path)
    # At most 4: a fifth reload within 10 minutes is a reload storm, and the model gives way.
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--crash", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--only", help="one scenario: idle_and_refresh, stops, clients, crashes")
    args = parser.parse_args()
    scenarios = [idle_and_refresh, stops, clients] + ([crashes] if args.crash else [])
    if args.only:
        scenarios = [s for s in scenarios if s.__name__ == args.only]
    for scenario in scenarios:
        # A supervisor of its own for each: the reload-storm guard counts across scenarios.
        with tempfile.TemporaryDirectory() as home:
            sup = Supervisor(args.kit, args.store, args.source, Path(home))
            try:
                sup.wait("preload.complete", 1)
                scenario(sup, args.rounds)
            finally:
                sup.stop()


if __name__ == "__main__":
    main()
