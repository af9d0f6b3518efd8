"""The guard on the real Ollama (../shared/realollama): what it costs and what it saves.

    PRELOADER_REAL_OLLAMA=/work/shared/realollama/bin/ollama .venv/bin/python -m benchmarks.guard

1. Side by side in one run, the same `ollama serve` reached directly (the guard's upstream),
   through the guard (aiohttp), through the second candidate stack (uvicorn/h11 + httpx,
   benchmarks/asgi_proxy.py, the `test` extra) and through Debian's nginx as a plain reverse
   proxy (benchmarks/nginx.py; `apt-get install -y nginx wrk`): a small request
   (`GET /api/version`, p50 and p99) and a stream's first byte, alternated; the delay of
   each streamed chunk (arrival minus Ollama's `created_at`); blob upload throughput
   (`POST /api/blobs/:digest`); 64 concurrent clients (wrk); 32 concurrent streams (chunks
   per second).
2. The issue's reproduction: `tiny-chat` pinned, 40 requests of which every fifth sends
   `keep_alive: 0`; runner starts (distinct llama-server pids) and the p95 of the other 32
   requests, without the guard and with it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from preloader_harness import free_port  # noqa: E402
from real_harness import RealLauncher, find_kit, kit_launcher  # noqa: E402

from benchmarks.nginx import Nginx  # noqa: E402

MS = 1000.0


def connection(address: str) -> http.client.HTTPConnection:
    host, port = address.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=120)


def timed(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> float:
    """Seconds until the first byte of the answer's body; the rest is read and dropped."""
    data = json.dumps(body).encode() if body is not None else None
    start = time.perf_counter()
    conn.request(method, path, body=data)
    resp = conn.getresponse()
    resp.read(1)
    first = time.perf_counter() - start
    resp.read()
    return first


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def added_latency(paths: dict[str, str], chat: str, rounds: int) -> dict[str, dict[str, float]]:
    """Small requests and a stream's first byte, the paths alternated request by request."""
    conns = {name: connection(address) for name, address in paths.items()}
    small: dict[str, list[float]] = {name: [] for name in paths}
    first: dict[str, list[float]] = {name: [] for name in paths}
    stream = {"model": chat, "prompt": "hi", "options": {"num_predict": 4}}
    for _ in range(rounds):
        for name, conn in conns.items():
            small[name].append(timed(conn, "GET", "/api/version"))
    for _ in range(max(10, rounds // 10)):
        for name, conn in conns.items():
            first[name].append(timed(conn, "POST", "/api/generate", stream))
    for conn in conns.values():
        conn.close()
    return {
        name: {
            "small_p50_ms": quantile(small[name], 0.5) * MS,
            "small_p99_ms": quantile(small[name], 0.99) * MS,
            "first_byte_p50_ms": quantile(first[name], 0.5) * MS,
        }
        for name in paths
    }


def created_at(line: bytes) -> float:
    """A chunk's `created_at` (Ollama stamps each as it sends it) as a Unix time."""
    stamp = json.loads(line)["created_at"]
    head, _, frac = stamp.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    return whole + float("0." + (frac or "0"))


def chunk_delay(paths: dict[str, str], chat: str, streams: int) -> dict[str, float]:
    """p50 of (arrival - created_at) over every chunk of `streams` streamed generates per path:
    the time a chunk spends between Ollama and the client (same machine, same clock)."""
    delays: dict[str, list[float]] = {name: [] for name in paths}
    body = json.dumps({"model": chat, "prompt": "count to twenty", "options": {"num_predict": 32}})
    for _ in range(streams):
        for name, address in paths.items():
            conn = connection(address)
            conn.request("POST", "/api/generate", body=body.encode())
            resp = conn.getresponse()
            for line in iter(resp.readline, b""):
                arrived = time.time()
                if line.strip():
                    delays[name].append(arrived - created_at(line))
            conn.close()
    return {name: quantile(values, 0.5) * MS for name, values in delays.items()}


def upload(paths: dict[str, str], mib: int, rounds: int) -> dict[str, float]:
    """Median MB/s of `POST /api/blobs/:digest` of `mib` MiB, a new blob each time (Ollama
    answers an existing digest without reading the body)."""
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, address in paths.items():
            data = os.urandom(mib << 20)
            digest = hashlib.sha256(data).hexdigest()
            conn = connection(address)
            start = time.perf_counter()
            conn.request("POST", f"/api/blobs/sha256:{digest}", body=data)
            status = conn.getresponse()
            status.read()
            elapsed = time.perf_counter() - start
            conn.close()
            assert status.status == 201, (name, status.status)
            rates[name].append(len(data) / elapsed / 1e6)
    return {name: quantile(values, 0.5) for name, values in rates.items()}


def concurrent_small(paths: dict[str, str], clients: int, seconds: int) -> dict[str, float]:
    """wrk with `clients` connections on `GET /api/version`: requests per second per path."""
    out: dict[str, float] = {}
    for name in both_orders(paths):
        done = subprocess.run(
            ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", f"http://{paths[name]}/api/version"],
            capture_output=True,
            text=True,
            check=True,
        )
        match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
        assert match, done.stdout
        out[name] = max(out.get(name, 0.0), float(match.group(1)))
    return out


def concurrent_streams(paths: dict[str, str], chat: str, clients: int) -> dict[str, float]:
    """`clients` streamed generates at once, each read line by line: chunks per second."""
    body = json.dumps({"model": chat, "prompt": "count to twenty", "options": {"num_predict": 16}})

    def one(address: str) -> int:
        conn = connection(address)
        conn.request("POST", "/api/generate", body=body.encode())
        resp = conn.getresponse()
        count = sum(1 for line in iter(resp.readline, b"") if line.strip())
        conn.close()
        return count

    out: dict[str, float] = {}
    for name in both_orders(paths):
        with ThreadPoolExecutor(clients) as pool:
            start = time.perf_counter()
            chunks = sum(pool.map(one, [paths[name]] * clients))
            out[name] = max(out.get(name, 0.0), chunks / (time.perf_counter() - start))
    return out


def both_orders(paths: dict[str, str]) -> list[str]:
    """Each path twice, forward then backward, the best kept: on a shared machine a load from
    elsewhere should not land on one path only."""
    names = list(paths)
    return names + names[::-1]


def reproduction(launcher: RealLauncher, chat: str, *, guard: bool) -> dict[str, float]:
    env: dict[str, str] = {"OLLAMA_PRELOAD_MODELS": chat}
    if guard:
        env.update(PRELOADER_GUARD="on", PRELOADER_GUARD_UPSTREAM=f"127.0.0.1:{free_port()}")
    run = launcher.start(env=launcher.env(**env))
    run.wait_all_pinned()
    pids = set(launcher.runners())
    first = set(pids)
    conn = connection(run.env["OLLAMA_HOST"])
    good: list[float] = []
    for i in range(40):
        body: dict[str, Any] = {"model": chat, "prompt": "hi", "stream": False}
        body["options"] = {"num_predict": 2}
        if i % 5 == 4:
            body["keep_alive"] = 0
        start = time.perf_counter()
        conn.request("POST", "/api/generate", body=json.dumps(body).encode())
        conn.getresponse().read()
        if i % 5 != 4:
            good.append(time.perf_counter() - start)
        pids |= set(launcher.runners())
    run.stop()
    return {"runner_starts": float(len(pids - first)), "p95_ms": quantile(good, 0.95) * 1000}


class AsgiProxy:
    """`with AsgiProxy(upstream) as proxy:` benchmarks/asgi_proxy.py on `proxy.address`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.address = f"127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return all(importlib.util.find_spec(name) for name in ("uvicorn", "httpx", "h11"))

    def __enter__(self) -> AsgiProxy:
        args = ["--listen", self.address, "--upstream", self.upstream]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.asgi_proxy", *args], cwd=ROOT
        )
        host, port = self.address.rsplit(":", 1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"benchmarks.asgi_proxy exited ({self.proc.returncode})")
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("benchmarks.asgi_proxy did not listen within 20 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def side_by_side(launcher: RealLauncher, chat: str, args: argparse.Namespace, work: Path) -> str:
    """One supervisor with the guard; its upstream reached directly, through the guard and
    through nginx, measured in the same run. The report's lines."""
    upstream = f"127.0.0.1:{free_port()}"
    env = launcher.env(
        OLLAMA_PRELOAD_MODELS=chat, PRELOADER_GUARD="on", PRELOADER_GUARD_UPSTREAM=upstream
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    try:
        with Nginx(upstream, work / "nginx") as nginx, contextlib.ExitStack() as stack:
            paths = {"direct": upstream, "guard": run.env["OLLAMA_HOST"]}
            if AsgiProxy.available():
                paths["uvicorn"] = stack.enter_context(AsgiProxy(upstream)).address
            paths["nginx"] = nginx.address
            latency = added_latency(paths, chat, args.rounds)
            chunks = chunk_delay(paths, chat, args.streams)
            uploads = upload(paths, args.upload_mib, 3)
            small64 = concurrent_small(paths, 64, args.seconds) if shutil.which("wrk") else {}
            streams32 = concurrent_streams(paths, chat, 32)
    finally:
        run.stop()
    lines = [f"{'':34}" + "".join(f"{name:>10}" for name in paths)]

    def row(label: str, values: dict[str, float], unit: str = "") -> None:
        cells = "".join(f"{values[name]:>10.2f}" for name in paths if name in values)
        lines.append(f"{label + unit:34}{cells}")

    for key, label in (
        ("small_p50_ms", "GET /api/version p50 ms"),
        ("small_p99_ms", "GET /api/version p99 ms"),
        ("first_byte_p50_ms", "stream first byte p50 ms"),
    ):
        row(label, {name: latency[name][key] for name in paths})
    row("chunk delay p50 ms", chunks)
    row(f"upload {args.upload_mib} MiB blob MB/s", uploads)
    if small64:
        row("64 clients (wrk) requests/s", small64)
    else:
        lines.append("64 clients: wrk is not installed (apt-get install -y wrk)")
    row("32 concurrent streams chunks/s", streams32)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--streams", type=int, default=10, help="streams per path, chunk delay")
    parser.add_argument("--upload-mib", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per path")
    args = parser.parse_args()
    path, why = find_kit()
    if path is None:
        print(f"benchmarks.guard: {why}", file=sys.stderr)
        return 2
    if Nginx.available() is None:
        print(
            "benchmarks.guard: nginx is not installed (apt-get install -y nginx)", file=sys.stderr
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        work = Path(tmp)
        with kit_launcher(path, work) as launcher:
            chat = launcher.name("tiny-chat")
            launcher.seed_store("tiny-chat")
            without = reproduction(launcher, chat, guard=False)
            launcher.seed_store("tiny-chat")
            with_guard = reproduction(launcher, chat, guard=True)
            launcher.seed_store("tiny-chat")
            table = side_by_side(launcher, chat, args, work)
    print("reproduction (40 requests, every 5th keep_alive 0, tiny-chat pinned):")
    print(
        f"  without guard: {without['runner_starts']:.0f} runner starts, "
        f"p95 of the others {without['p95_ms']:.1f} ms"
    )
    print(
        f"  with guard:    {with_guard['runner_starts']:.0f} runner starts, "
        f"p95 of the others {with_guard['p95_ms']:.1f} ms"
    )
    print(f"side by side, same server, same run ({args.rounds} small requests alternated):")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
