"""Updates on the real Ollama kit: what a check costs, and what a swap costs.

    PRELOADER_REAL_OLLAMA=../shared/realollama/bin/ollama python -m benchmarks.update [--rounds N]

* **Check**: the registry client's manifest lookup for each of the kit's three models, N rounds
  (requests and milliseconds per model), and `ollama-preloader update --check` end to end
  (a process: Python's start included).
* **Swap**: a new version of tiny-chat pushed to the kit registry (from a second server), then
  `ollama-preloader update`; the time from the push's end to the new copy pinned, and /api/ps
  sampled every 50 ms throughout: samples taken, samples without the name. Rounds alternate
  the weights (tiny-chat2's, then tiny-chat's) so that each push changes the digest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the kit helpers of the real-server test tier
from real_harness import Kit, Registry, find_kit, free_port_pair  # noqa: E402

from ollama_preloader.ollama.names import ModelName  # noqa: E402
from ollama_preloader.ollama.registry import RegistryClient  # noqa: E402

MODELS = ("tiny-chat", "tiny-chat2", "tiny-embed")
PRELOADER = [sys.executable, "-m", "ollama_preloader"]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def _post(url: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=300) as resp:
        resp.read()


def _serve(kit: Kit, port: int, store: Path) -> None:
    kit.script("serve-bg", str(port), str(store))


def measure_checks(registry: Registry, rounds: int) -> dict[str, float]:
    async def go() -> tuple[list[float], list[int]]:
        client = RegistryClient()
        times, requests = [], []
        try:
            for _ in range(rounds):
                for model in MODELS:
                    started = time.perf_counter()
                    manifest = await client.manifest(
                        ModelName.parse(registry.name(model)), insecure=True
                    )
                    times.append((time.perf_counter() - started) * 1000)
                    assert manifest is not None
                    requests.append(manifest.requests)
        finally:
            await client.aclose()
        return times, requests

    times, requests = asyncio.run(go())
    return {
        "ms_median": statistics.median(times),
        "ms_max": max(times),
        "requests_per_model": statistics.mean(requests),
    }


def push(kit: Kit, registry: Registry, port: int, weights: str) -> None:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "HOME": str(kit.state / "home")}
    models = kit.root / "models"
    for args in (
        ["create", registry.name("tiny-chat"), "-f", str(models / f"Modelfile.{weights}")],
        ["push", "--insecure", registry.name("tiny-chat")],
    ):
        subprocess.run(
            [str(kit.ollama), *args], env=env, cwd=models, check=True, capture_output=True
        )


def swap_round(
    kit: Kit, registry: Registry, ports: tuple[int, int], weights: str, env: dict[str, str]
) -> dict[str, float]:
    serve, pusher = ports
    base = f"http://127.0.0.1:{serve}"
    name = registry.name("tiny-chat") + ":latest"
    samples: list[bool] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rows = _get(base + "/api/ps")["models"]
            samples.append(any(m["name"] == name for m in rows))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    push(kit, registry, pusher, weights)
    pushed = time.perf_counter()
    done = subprocess.run(
        [*PRELOADER, "update", registry.name("tiny-chat") + "?insecure=true"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - pushed
    time.sleep(0.2)
    stop.set()
    thread.join()
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [m for m in _get(base + "/api/ps")["models"] if m["name"] == name]
    assert len(rows) == 1, rows
    return {"seconds": elapsed, "samples": len(samples), "absent": samples.count(False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--swaps", type=int, default=4)
    args = parser.parse_args()
    path, why = find_kit()
    if path is None:
        raise SystemExit(why)
    with tempfile.TemporaryDirectory(prefix="bench-update-") as tmp:
        work = Path(tmp)
        kit = Kit(path.parents[1], work / "kitstate")
        registry = Registry(kit, free_port_pair()).start()
        serve, pusher = free_port_pair(), free_port_pair()
        try:
            _serve(kit, serve, work / "store")
            _serve(kit, pusher, work / "pusher")
            base = f"http://127.0.0.1:{serve}"
            for model in MODELS:
                _post(base + "/api/pull", {"model": registry.name(model), "insecure": True})
            _post(base + "/api/generate", {"model": registry.name("tiny-chat"), "keep_alive": -1})
            checks = measure_checks(registry, args.rounds)
            env = {
                **os.environ,
                "OLLAMA_HOST": f"127.0.0.1:{serve}",
                "OLLAMA_MODELS": str(work / "store"),
                "OLLAMA_PRELOAD_MODELS": ",".join(
                    registry.name(m) + "?insecure=true" for m in MODELS
                ),
                "PRELOADER_STATE_DIR": str(work / "state"),
                "PRELOADER_LOG_LEVEL": "warning",
            }
            started = time.perf_counter()
            done = subprocess.run(
                [*PRELOADER, "update", "--check"], env=env, capture_output=True, check=False
            )
            cli_ms = (time.perf_counter() - started) * 1000
            assert done.returncode == 0, done
            swaps = [
                swap_round(
                    kit,
                    registry,
                    (serve, pusher),
                    "tiny-chat2" if i % 2 == 0 else "tiny-chat",
                    env,
                )
                for i in range(args.swaps)
            ]
        finally:
            kit.script("stop-all", check=False)
    print(f"check, {args.rounds} rounds x {len(MODELS)} models (registry client):")
    print(
        f"  requests per model {checks['requests_per_model']:.1f}, "
        f"median {checks['ms_median']:.1f} ms, max {checks['ms_max']:.1f} ms"
    )
    print(f"  `update --check` of {len(MODELS)} models, whole process: {cli_ms:.0f} ms")
    print(f"swap (`update`, push -> new copy pinned), {len(swaps)} rounds:")
    for s in swaps:
        print(
            f"  {s['seconds']:.2f} s, {s['samples']:.0f} samples of /api/ps, "
            f"{s['absent']:.0f} without the name"
        )
    print(f"  median {statistics.median(s['seconds'] for s in swaps):.2f} s")


if __name__ == "__main__":
    main()
