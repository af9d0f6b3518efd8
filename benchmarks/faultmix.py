"""The fault mix on the real Ollama: how much of the time both declared models stay pinned.

    python -m benchmarks.faultmix [--kit BIN] [--seconds 240] [--every 10] [--source DIR]

Two declared models (tiny-chat, tiny-chat2) under `ollama-preloader run` with
OLLAMA_MAX_LOADED_MODELS=2. Every `--every` seconds one fault, in turn: `ollama stop` of a
declared model, SIGKILL of a runner, a client loading the undeclared tiny-embed (which takes a
slot), a client request with another num_ctx, SIGKILL of `ollama serve`. /api/ps is sampled every
second; the report is the share of samples with both models listed with keep_alive forever,
the longest stretch when they were not, and what the supervisor said (`model.failed` events,
/readyz at the end). --kit is the kit's `bin/ollama` (default: PRELOADER_REAL_OLLAMA, else
../shared/realollama); --source runs another checkout's supervisor, to compare with main.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the kit helpers of the real-server test tier
from real_harness import Kit, find_kit, free_port_pair  # noqa: E402

from benchmarks.supervisor_process import SupervisorProcess  # noqa: E402

DECLARED = ("tiny-chat:latest", "tiny-chat2:latest")
OTHER = "tiny-embed:latest"
FAULTS = ("stop", "runner kill", "other model", "client num_ctx", "serve kill")
WAIT = 60.0


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def post(url: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        print(f"  (client request failed: {exc})", file=sys.stderr)


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return found


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


class Bench(SupervisorProcess):
    def __init__(self, kit: Kit, store: Path, home: Path, source: Path | None) -> None:
        port, health = free_port_pair(), free_port_pair()
        super().__init__(
            bin_dir=kit.bin_dir,
            home=home,
            store=store,
            models=",".join(DECLARED),
            port=port,
            health_port=health,
            source=source,
            extra={"OLLAMA_MAX_LOADED_MODELS": "2"},
        )
        self.base = f"http://127.0.0.1:{port}"
        self.health = f"http://127.0.0.1:{health}"
        self.kit = kit
        self.samples: list[tuple[float, bool]] = []
        self.faults: list[tuple[float, str]] = []  # (monotonic time, kind) of each fault
        self.done = threading.Event()

    def both_pinned(self) -> bool:
        try:
            models = get_json(self.base + "/api/ps", timeout=2.0)["models"]
        except (urllib.error.URLError, OSError, ValueError):
            return False
        forever = {m["name"] for m in models if m.get("expires_at", "") > "2200"}
        return set(DECLARED) <= forever

    def sample(self) -> None:
        while not self.done.is_set():
            started = time.monotonic()
            self.samples.append((started, self.both_pinned()))
            self.done.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def serve_pid(self) -> int | None:
        for pid in children(self.proc.pid):
            if " serve" in command(pid):
                return pid
        return None

    def fault(self, n: int) -> str:
        kind = FAULTS[n % len(FAULTS)]
        target = DECLARED[(n // len(FAULTS)) % len(DECLARED)]
        self.faults.append((time.monotonic(), kind))
        serve = self.serve_pid()
        if kind == "stop":
            subprocess.run(
                [str(self.kit.ollama), "stop", target],
                env=self.env,
                capture_output=True,
                check=False,
            )
        elif kind == "runner kill" and serve is not None:
            runners = [p for p in children(serve) if "llama-server" in command(p)]
            if runners:
                os.kill(runners[n % len(runners)], signal.SIGKILL)
        elif kind == "other model":
            post(self.base + "/api/embed", {"model": OTHER, "input": "hi"})
        elif kind == "client num_ctx":
            body = {"model": target, "prompt": "hi", "stream": False, "options": {"num_ctx": 2048}}
            post(self.base + "/api/generate", body)
        elif kind == "serve kill" and serve is not None:
            os.kill(serve, signal.SIGKILL)
        return f"{kind} ({target})" if kind in ("stop", "client num_ctx") else kind

    def readyz(self) -> int:
        try:
            with urllib.request.urlopen(self.health + "/readyz", timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def stop(self) -> None:
        self.done.set()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def longest_unpinned(samples: list[tuple[float, bool]]) -> float:
    """Seconds from the first sample that was not both pinned to the next one that was."""
    longest, since = 0.0, None
    for at, pinned in samples:
        if not pinned and since is None:
            since = at
        elif pinned and since is not None:
            longest, since = max(longest, at - since), None
    if since is not None and samples:
        longest = max(longest, samples[-1][0] - since)
    return longest


def unpinned_by_fault(
    samples: list[tuple[float, bool]], faults: list[tuple[float, str]]
) -> dict[str, float]:
    """Unpinned samples (about a second each) per kind of the fault that came last before them,
    as the mean per fault of that kind: which faults the misses come from."""
    misses: dict[str, int] = {}
    for at, pinned in samples:
        before = [kind for when, kind in faults if when <= at]
        if not pinned and before:
            misses[before[-1]] = misses.get(before[-1], 0) + 1
    counts = {kind: sum(1 for _, k in faults if k == kind) for kind in FAULTS}
    return {kind: round(misses.get(kind, 0) / n, 2) for kind, n in counts.items() if n}


def make_store(kit: Kit) -> Path:
    """The kit's three models under their short names, in a store of their own."""
    port = free_port_pair()
    kit.script("serve-bg", str(port))
    try:
        kit.script("create", str(port))
    finally:
        kit.script("stop-serve", str(port))
    return kit.state / f"models-{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    found, _ = find_kit()
    parser.add_argument(
        "--kit", type=Path, default=found or ROOT.parent / "shared/realollama/bin/ollama"
    )
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--source", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="faultmix-") as tmp:
        work = Path(tmp)
        kit = Kit.prepare(args.kit, work)
        store = make_store(kit)
        (work / "home").mkdir()
        bench = Bench(kit, store, work / "home", args.source)
        try:
            deadline = time.monotonic() + WAIT
            while not bench.both_pinned():
                if time.monotonic() > deadline or bench.proc.poll() is not None:
                    print(bench.tail(30), file=sys.stderr)
                    return 1
                time.sleep(0.2)
            sampler = threading.Thread(target=bench.sample, daemon=True)
            sampler.start()
            start, n = time.monotonic(), 0
            while time.monotonic() - start < args.seconds:
                print(f"{time.monotonic() - start:6.1f}s  {bench.fault(n)}", flush=True)
                n += 1
                time.sleep(max(0.0, start + n * args.every - time.monotonic()))
            time.sleep(args.every)  # let the last fault be repaired, sampled like the others
            ready = bench.readyz()
        finally:
            bench.stop()
    samples = bench.samples
    share = 100.0 * sum(1 for _, p in samples if p) / max(1, len(samples))
    report = {
        "faults": n,
        "samples": len(samples),
        "both_pinned_percent": round(share, 1),
        "longest_unpinned_seconds": round(longest_unpinned(samples), 1),
        "unpinned_samples_per_fault": unpinned_by_fault(samples, bench.faults),
        "readyz_at_end": ready,
        "model_failed_events": len(bench.events("model.failed")),
        "capacity_undeclared_warnings": len(bench.events("capacity.undeclared")),
        "repairs_delayed": len(bench.events("model.repair_delayed")),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
