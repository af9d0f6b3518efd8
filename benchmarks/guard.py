"""The guard on the real Ollama (../shared/realollama): what it costs and what it saves.

    PRELOADER_REAL_OLLAMA=/work/shared/realollama/bin/ollama .venv/bin/python -m benchmarks.guard

1. Added latency: a small request (`GET /api/version`) and a stream's first byte (`/api/generate`,
   streamed), through the guard and straight to its upstream, alternated, same server.
2. The issue's reproduction: `tiny-chat` pinned, 40 requests of which every fifth sends
   `keep_alive: 0`; runner starts (distinct llama-server pids) and the p95 of the other 32
   requests, without the guard and with it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from preloader_harness import Run, free_port  # noqa: E402
from real_harness import RealLauncher, find_kit, kit_launcher  # noqa: E402


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


def added_latency(run: Run, chat: str, rounds: int) -> dict[str, float]:
    guard, direct = (
        connection(run.env["OLLAMA_HOST"]),
        connection(run.env["PRELOADER_GUARD_UPSTREAM"]),
    )
    small: dict[str, list[float]] = {"guard": [], "direct": []}
    first: dict[str, list[float]] = {"guard": [], "direct": []}
    stream = {"model": chat, "prompt": "hi", "options": {"num_predict": 4}}
    for _ in range(rounds):
        for name, conn in (("direct", direct), ("guard", guard)):
            small[name].append(timed(conn, "GET", "/api/version"))
    for _ in range(max(10, rounds // 10)):
        for name, conn in (("direct", direct), ("guard", guard)):
            first[name].append(timed(conn, "POST", "/api/generate", stream))
    ms = 1000.0
    return {
        "small_p50_added_ms": (quantile(small["guard"], 0.5) - quantile(small["direct"], 0.5)) * ms,
        "small_p99_added_ms": (quantile(small["guard"], 0.99) - quantile(small["direct"], 0.99))
        * ms,
        "first_byte_p50_added_ms": (quantile(first["guard"], 0.5) - quantile(first["direct"], 0.5))
        * ms,
        "small_direct_p50_ms": quantile(small["direct"], 0.5) * ms,
    }


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    path, why = find_kit()
    if path is None:
        print(f"benchmarks.guard: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        work = Path(tmp)
        with kit_launcher(path, work) as launcher:
            chat = launcher.name("tiny-chat")
            launcher.seed_store("tiny-chat")
            without = reproduction(launcher, chat, guard=False)
            launcher.seed_store("tiny-chat")
            with_guard = reproduction(launcher, chat, guard=True)
            env = launcher.env(
                OLLAMA_PRELOAD_MODELS=chat,
                PRELOADER_GUARD="on",
                PRELOADER_GUARD_UPSTREAM=f"127.0.0.1:{free_port()}",
            )
            run = launcher.start(env=env)
            run.wait_all_pinned()
            latency = added_latency(run, chat, args.rounds)
            run.stop()
    print("reproduction (40 requests, every 5th keep_alive 0, tiny-chat pinned):")
    print(
        f"  without guard: {without['runner_starts']:.0f} runner starts, "
        f"p95 of the others {without['p95_ms']:.1f} ms"
    )
    print(
        f"  with guard:    {with_guard['runner_starts']:.0f} runner starts, "
        f"p95 of the others {with_guard['p95_ms']:.1f} ms"
    )
    print(f"added latency ({args.rounds} small requests, alternated with direct):")
    for key, value in latency.items():
        print(f"  {key}: {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
