"""What the probe costs on the real Ollama of ../shared/realollama (docs/benchmarks.md, "Probe").

1. Per model kind: the probe's own request (OllamaAPI.probe_model, as reconcile/probing.py sends
   it: one token of generate, embed of one word, keep_alive -1) sent N times to a loaded model;
   its latency (median, 95th percentile) and the CPU it costs `ollama serve` and the runner.
2. Idle cost: `ollama-preloader run` with the kit's three models pinned, idle, for a window
   with the probe at its default interval and then with PRELOADER_PROBE_INTERVAL=off; the CPU
   of the whole tree (supervisor, serve, runners) over each window, and the probes sent.

    python -m benchmarks.probe [--count 50] [--seconds 90]

Needs PRELOADER_REAL_OLLAMA (or the kit beside the checkout). Everything goes to a temporary
directory; nothing is left running.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ollama_preloader.config.values import PROBE_INTERVAL
from ollama_preloader.ollama.api import OllamaAPI
from ollama_preloader.ollama.kinds import ModelKind

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_KIT = ROOT.parent / "shared" / "realollama" / "bin" / "ollama"
MODELS = (
    ("tiny-chat:latest", ModelKind.COMPLETION),
    ("tiny-chat2:latest", ModelKind.COMPLETION),
    ("tiny-embed:latest", ModelKind.EMBEDDING),
)
TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                out += [int(p) for p in fh.read().split()]
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children(current)
    return found


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds:g}s")


class Serve:
    """A real `ollama serve` with the kit's models made by `ollama create`."""

    def __init__(self, kit: Path, work: Path) -> None:
        self.kit, self.work = kit, work
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")},
            "HOME": str(work / "home"),
            "OLLAMA_HOST": f"127.0.0.1:{self.port}",
            "OLLAMA_MODELS": str(work / "models"),
            "OLLAMA_NO_CLOUD": "1",
            "PATH": f"{kit.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        (work / "home").mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Serve:
        log = (self.work / f"serve-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(self.kit), "serve"], env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        wait_http(f"http://127.0.0.1:{self.port}/api/version")
        return self

    def create_models(self) -> None:
        script = self.kit.parent.parent / "realollama"
        state = self.work / "kit-state"
        subprocess.run(
            [str(script), "--state", str(state), "create", str(self.port)],
            env=self.env,
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


async def per_probe(serve: Serve, count: int) -> dict[str, dict[str, float]]:
    api = OllamaAPI(f"http://127.0.0.1:{serve.port}")
    assert serve.proc is not None
    out: dict[str, dict[str, float]] = {}
    try:
        for name, kind in MODELS:
            await api.probe_model(name, kind, -1, {})  # loads it: the first probe is no probe
            pids = tree(serve.proc.pid)
            before = {pid: cpu(pid) for pid in pids}
            latencies = []
            for _ in range(count):
                started = time.perf_counter()
                await api.probe_model(name, kind, -1, {})
                latencies.append(time.perf_counter() - started)
            after = {pid: cpu(pid) for pid in pids}
            used = sum(after[pid] - before[pid] for pid in pids)
            latencies.sort()
            out[name] = {
                "kind": 0.0 if kind == ModelKind.COMPLETION else 1.0,
                "p50_ms": statistics.median(latencies) * 1e3,
                "p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1e3,
                "cpu_ms_per_probe": used / count * 1e3,
            }
    finally:
        await api.aclose()
    return out


def idle_window(
    kit: Path, models: Path, work: Path, seconds: float, interval: str
) -> dict[str, float]:
    """CPU of the whole supervisor tree over `seconds` of idle, all models pinned."""
    port, health = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "PRELOADER_"))},
        "HOME": str(work / "home"),
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(models),
        "OLLAMA_NO_CLOUD": "1",
        "OLLAMA_PRELOAD_MODELS": ",".join(name for name, _ in MODELS),
        "PRELOADER_HEALTH_PORT": str(health),
        "PRELOADER_HEALTH_HOST": "127.0.0.1",
        "PRELOADER_LOG_FORMAT": "json",
        "PRELOADER_PROBE_INTERVAL": interval,
        "PATH": f"{kit.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
        + os.environ.get("PATH", ""),
    }
    cli = Path(sys.executable).parent / "ollama-preloader"
    log = (work / f"preloader-{interval}.log").open("wb")
    proc = subprocess.Popen([str(cli), "run"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("the supervisor was not ready within 60 s")
        pids = tree(proc.pid)
        before = {pid: cpu(pid) for pid in pids}
        time.sleep(seconds)
        after = {pid: cpu(pid) for pid in pids}
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        probes = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("ollama_preloader_model_probe_seconds_count")
        )
        used = sum(after[pid] - before[pid] for pid in pids)
        return {"cpu_percent": used / seconds * 100, "cpu_seconds": used, "probes": probes}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="probes per model")
    parser.add_argument("--seconds", type=float, default=90.0, help="each idle window")
    args = parser.parse_args()
    kit = Path(os.environ.get("PRELOADER_REAL_OLLAMA") or DEFAULT_KIT)
    if not kit.is_file():
        raise SystemExit(f"no real Ollama at {kit}: set PRELOADER_REAL_OLLAMA")
    with tempfile.TemporaryDirectory(prefix="probe-bench-") as tmp:
        work = Path(tmp)
        serve = Serve(kit, work).start()
        try:
            serve.create_models()
            figures = asyncio.run(per_probe(serve, args.count))
        finally:
            serve.stop()
        print(f"per probe (n={args.count} each, loaded model, no other traffic):")
        for name, row in figures.items():
            kind = "embedding" if row["kind"] else "completion"
            print(
                f"  {name:<20} {kind:<10} p50 {row['p50_ms']:.1f} ms  p95 {row['p95_ms']:.1f} ms"
                f"  CPU {row['cpu_ms_per_probe']:.1f} ms (serve + runner)"
            )
        default = f"{PROBE_INTERVAL:g}s"
        for interval in (default, "off"):
            idle = idle_window(kit, work / "models", work, args.seconds, interval)
            print(
                f"idle {args.seconds:g}s, 3 models pinned, PRELOADER_PROBE_INTERVAL={interval}: "
                f"{idle['cpu_seconds']:.2f} s CPU ({idle['cpu_percent']:.2f} % of a core), "
                f"{idle['probes']:.0f} probes"
            )


if __name__ == "__main__":
    main()
