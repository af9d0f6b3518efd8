"""The container on a real Docker Engine: this image against the community recipe, in one run.

    PRELOADER_ENGINE=/work/shared/realollama/engine .venv/bin/python -m benchmarks.container_start

The recipe is what people put in front of the official image: `FROM ollama/ollama`, curl
installed, and an entrypoint that runs `ollama serve &`, waits for the port, then `ollama pull`
and a `keep_alive: -1` request for each model, and `wait`s; a HEALTHCHECK that curls the API.
Both run the kit's stand-in `ollama/ollama:0.32.15` image on the host network, against the
kit's registry, with the same two models (tiny-chat, tiny-chat2). Measured:

- image build time (`docker build --no-cache`, the base image already present), app and baked;
- `docker run -d` itself: the kit's engine uses the vfs storage driver, which copies the
  whole image for each container, so this grows with the image's size;
- cold start (empty store, pulls from the registry): `docker run` to all pinned (`/api/ps` on
  the host every 50 ms shows both with keep-alive forever), the same from the container's
  own StartedAt, and `docker run` to Docker's `healthy`;
- the baked image with `--network none`: `docker run` to all pinned, and to healthy;
- idle, 5 s after all pinned: the container's RSS (every process, from the host's /proc) and
  its CPU over 10 s;
- `docker stop -t 10`: seconds and exit code.

Figures are printed side by side with their ratio; nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from container_harness import BASE_TAG, Engine, Ports, find_engine  # noqa: E402
from preloader_harness import free_port  # noqa: E402
from real_harness import Kit, Registry, free_port_pair  # noqa: E402

MODELS = ("tiny-chat", "tiny-chat2")
TICK = 0.05
CLK_TCK = 100  # Linux USER_HZ
REPAIR_LIMIT = 60.0  # a repair not done in this is taken for none

RECIPE_ENTRYPOINT = """\
#!/bin/bash
# The community recipe: serve in the background, wait for it, pull and preload every model.
ollama serve &
until curl -fsS "http://$OLLAMA_HOST/api/version" >/dev/null 2>&1; do sleep 1; done
for m in ${MODELS//,/ }; do
  ollama pull $PULL_FLAGS "$m"
  curl -fsS "http://$OLLAMA_HOST/api/generate" \\
    -d "{\\"model\\":\\"$m\\",\\"keep_alive\\":-1}" >/dev/null
done
wait
"""

RECIPE_DOCKERFILE = f"""\
FROM ollama/ollama:{BASE_TAG} AS app
RUN apt-get update && apt-get install -y --no-install-recommends curl \\
    && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY entrypoint.sh /entrypoint.sh
RUN chmod +x /entrypoint.sh
HEALTHCHECK --interval=10s --timeout=5s --retries=3 \\
    CMD curl -fsS "http://$OLLAMA_HOST/api/version" || exit 1
ENTRYPOINT ["/entrypoint.sh"]

FROM app AS baked
ARG MODELS=""
ARG BAKE_HOST=127.0.0.1:11434
SHELL ["/bin/bash", "-c"]
RUN OLLAMA_HOST=$BAKE_HOST ollama serve & pid=$!; \\
    until curl -fsS "http://$BAKE_HOST/api/version" >/dev/null 2>&1; do sleep 1; done; \\
    for m in ${{MODELS//,/ }}; do \\
        OLLAMA_HOST=$BAKE_HOST ollama pull --insecure "$m" || exit 1; \\
    done; \\
    kill $pid; wait $pid; rm -f /root/.ollama/id_ed25519 /root/.ollama/id_ed25519.pub
"""


def pinned(port: int, names: list[str]) -> bool:
    """Every name in /api/ps with an expiry centuries ahead (keep-alive forever)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ps", timeout=2) as reply:
            models = json.load(reply).get("models", [])
    except OSError:
        return False
    forever = {m["name"] for m in models if str(m.get("expires_at", "")) > "2100"}
    return all(name + ":latest" in forever or name in forever for name in names)


def host_usage(engine: Engine, name: str) -> tuple[int, int]:
    """(RSS bytes, CPU ticks) summed over the container's processes, from the host's /proc."""
    rss = ticks = 0
    for pid in engine.host_pids(name):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return rss, ticks


def started_at(engine: Engine, name: str) -> float:
    """The container's State.StartedAt as a Unix time (Docker gives nanoseconds)."""
    stamp = str(engine.inspect(name)["State"]["StartedAt"]).rstrip("Z")
    whole, _, frac = stamp.partition(".")
    base = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return base.timestamp() + float("0." + (frac or "0"))


def one_start(
    engine: Engine, image: str, env: list[str], names: list[str], *, network: str, idle: bool
) -> dict[str, float]:
    """One `docker run`: seconds to pinned and to healthy; idle RSS/CPU; docker stop."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    ports = Ports(api=free_port(), health=free_port())
    args: list[str] = []
    for item in env:
        args += ["-e", item]
    out: dict[str, float] = {}
    started = time.monotonic()
    try:
        engine.start_container(image, name, *args, network=network, ports=ports)
        out["create"] = time.monotonic() - started
        # The container's own start (after vfs has copied the image's layers), on the host clock.
        began = started + (started_at(engine, name) - (time.time() - time.monotonic() + started))
        # --network none: the host cannot reach the API; `ollama ps` inside then tells.
        while time.monotonic() - started < 300:
            if network == "host":
                done = pinned(ports.api, names)
            else:
                ps = engine.run("exec", name, "ollama", "ps", check=False).stdout
                done = sum("Forever" in line for line in ps.splitlines()) >= len(names)
            if done:
                out["pinned"] = time.monotonic() - started
                out["pinned_in"] = time.monotonic() - began
                break
            time.sleep(TICK)
        while time.monotonic() - started < 300:
            health = engine.inspect(name)["State"].get("Health", {}).get("Status")
            if health == "healthy":
                out["healthy"] = time.monotonic() - started
                break
            time.sleep(TICK)
        if idle:
            time.sleep(5)
            rss0, ticks0 = host_usage(engine, name)
            time.sleep(10)
            rss1, ticks1 = host_usage(engine, name)
            out["rss_mb"] = max(rss0, rss1) / 1e6
            out["cpu_pct"] = 100 * (ticks1 - ticks0) / CLK_TCK / 10
        if idle and network == "host":
            out.update(repairs(engine, name, ports.api, names))
        stop = time.monotonic()
        engine.run("stop", "-t", "10", name)
        if "repair_serve" not in out:  # after the kills the stop says nothing of a clean one
            out["stop"] = time.monotonic() - stop
            out["exit"] = float(engine.inspect(name)["State"]["ExitCode"])
    finally:
        engine.run("rm", "-f", "-v", name, check=False)
    return out


def _pids(engine: Engine, name: str, needle: str) -> set[int]:
    return {pid for pid, _, state, cmd in engine.ps(name) if needle in cmd and state != "Z"}


def _repaired(
    engine: Engine,
    name: str,
    port: int,
    names: list[str],
    *,
    old: set[int],
    needle: str,
    limit: float = REPAIR_LIMIT,
) -> float:
    """Seconds until a process other than `old` runs `needle` and every model is pinned again
    (Ollama keeps listing a dead runner in /api/ps, so /api/ps alone would say pinned); NaN
    when that does not happen within `limit` (nothing repairs it)."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        try:
            fresh = _pids(engine, name, needle) - old
        except AssertionError:  # the container exited (the recipe's shell ends with its serve)
            return float("nan")
        if fresh and pinned(port, names):
            return time.monotonic() - began
        time.sleep(TICK)
    return float("nan")


def repairs(engine: Engine, name: str, port: int, names: list[str]) -> dict[str, float]:
    """SIGKILL a runner inside the container, then `ollama serve`: seconds to pinned again."""
    out: dict[str, float] = {}
    runners = _pids(engine, name, "llama-server")
    if runners:
        victim = min(runners)
        engine.kill_in(name, victim)
        out["repair_runner"] = _repaired(
            engine, name, port, names, old=runners, needle="llama-server"
        )
    serves = _pids(engine, name, "ollama serve")
    if serves:
        engine.kill_in(name, min(serves))
        out["repair_serve"] = _repaired(
            engine, name, port, names, old=serves, needle="ollama serve"
        )
    return out


def measure(engine: Engine, registry: Registry, repeats: int) -> dict[str, dict[str, float]]:
    names = [registry.name(m) for m in MODELS]
    ours_models = ",".join(n + "?insecure=true" for n in names)
    results: dict[str, dict[str, float]] = {"ours": {}, "recipe": {}}
    with tempfile.TemporaryDirectory(prefix="recipe-") as tmp:
        ctx = Path(tmp)
        (ctx / "entrypoint.sh").write_text(RECIPE_ENTRYPOINT)
        (ctx / "Dockerfile").write_text(RECIPE_DOCKERFILE)
        print("building (no cache)...", file=sys.stderr)
        results["ours"]["build"] = engine.build(ROOT, "bench-ours", target="app", no_cache=True)
        results["recipe"]["build"] = engine.build(ctx, "bench-recipe", target="app", no_cache=True)
        bake = {"BAKE_OLLAMA_HOST": f"127.0.0.1:{free_port()}", "PRELOAD_MODELS": ours_models}
        results["ours"]["bake"] = engine.build(
            ROOT, "bench-ours-baked", target="baked", build_args=bake
        )
        rbake = {"BAKE_HOST": f"127.0.0.1:{free_port()}", "MODELS": ",".join(names)}
        results["recipe"]["bake"] = engine.build(
            ctx, "bench-recipe-baked", target="baked", build_args=rbake
        )
    recipe_env = [f"MODELS={','.join(names)}"]
    runs: dict[str, list[dict[str, float]]] = {}
    for i in range(repeats):
        print(f"starts, round {i + 1}/{repeats}...", file=sys.stderr)
        plans = {
            "ours-cold": ("bench-ours", [f"OLLAMA_PRELOAD_MODELS={ours_models}"], "host"),
            "recipe-cold": ("bench-recipe", [*recipe_env, "PULL_FLAGS=--insecure"], "host"),
            "ours-baked": ("bench-ours-baked", [], "none"),
            "recipe-baked": ("bench-recipe-baked", recipe_env, "none"),
        }  # fmt: skip
        for key, (image, env, network) in plans.items():
            run = one_start(
                engine, image, env, names, network=network, idle=(key.endswith("cold") and i == 0)
            )
            runs.setdefault(key, []).append(run)
    for who in ("ours", "recipe"):
        cold, baked = runs[f"{who}-cold"], runs[f"{who}-baked"]
        res = results[who]
        res["create"] = statistics.median(r["create"] for r in cold + baked)
        res["cold_pinned"] = statistics.median(r["pinned"] for r in cold)
        res["cold_pinned_in"] = statistics.median(r["pinned_in"] for r in cold)
        res["baked_pinned_in"] = statistics.median(r["pinned_in"] for r in baked)
        res["cold_healthy"] = statistics.median(r.get("healthy", float("nan")) for r in cold)
        res["baked_pinned"] = statistics.median(r["pinned"] for r in baked)
        res["baked_healthy"] = statistics.median(r.get("healthy", float("nan")) for r in baked)
        res["rss_mb"] = cold[0]["rss_mb"]
        res["cpu_pct"] = cold[0]["cpu_pct"]
        res["repair_runner"] = cold[0].get("repair_runner", float("nan"))
        res["repair_serve"] = cold[0].get("repair_serve", float("nan"))
        stopped = [r for r in cold + baked if "stop" in r]
        res["stop"] = statistics.median(r["stop"] for r in stopped)
        res["exit"] = max(r["exit"] for r in stopped)
    return results


ROWS = [
    ("build", "image build, no cache (s)"),
    ("bake", "baked image build, 2 models (s)"),
    ("create", "`docker run -d` returns (vfs copies the image) (s)"),
    ("cold_pinned", "cold start: run -> all pinned (s)"),
    ("cold_pinned_in", "cold start: container started -> all pinned (s)"),
    ("cold_healthy", "cold start: run -> Docker healthy (s)"),
    ("baked_pinned", "baked, --network none: run -> all pinned (s)"),
    ("baked_pinned_in", "baked, --network none: started -> all pinned (s)"),
    ("baked_healthy", "baked, --network none: run -> healthy (s)"),
    ("rss_mb", "idle container RSS, 2 models loaded (MB)"),
    ("cpu_pct", "idle container CPU over 10 s (% of a core)"),
    ("repair_runner", "runner SIGKILLed -> a new one, all pinned (s; nan: never)"),
    ("repair_serve", "`ollama serve` SIGKILLed -> a new one, all pinned (s; nan: never)"),
    ("stop", "docker stop -t 10 (s)"),
    ("exit", "exit code after docker stop (worst)"),
]


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| | ollama-preloader | community recipe | ratio |",
        "|---|---:|---:|---:|",
    ]
    for key, label in ROWS:
        ours, recipe = results["ours"].get(key), results["recipe"].get(key)
        ratio = f"{ours / recipe:.2f}" if ours is not None and recipe else "-"
        fmt = "{:.0f}" if key == "exit" else "{:.2f}"
        show = [fmt.format(v) if v is not None else "-" for v in (ours, recipe)]
        lines.append(f"| {label} | {show[0]} | {show[1]} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3, help="starts per case (median)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    opts = parser.parse_args()
    script, why = find_engine()
    if script is None:
        sys.exit(f"container_start: {why}")
    with tempfile.TemporaryDirectory(prefix="bench-kit-") as work:
        kit = Kit.prepare(script.parent / "bin" / "ollama", Path(work))
        engine = Engine(script)
        registry = Registry(kit, free_port_pair())
        try:
            engine.start()
            registry.start()
            results = measure(engine, registry, opts.repeats)
        finally:
            if registry.running:
                registry.stop()
            engine.stop()
    print(textwrap.dedent(__doc__.split("\n\n", 2)[1]).strip())
    print(table(results))
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
