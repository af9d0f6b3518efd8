"""Measuring one contestant: a cold start (to all pinned, idle CPU and RSS, the health check,
repairs) and the scale run (many models, many watch cycles)."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.analysis import (
    ModelPlan,
    Timeline,
    blocks,
    ideal_from_timeline,
    median,
    norm,
    requests,
    timeline,
)
from benchmarks.contestants import (
    PRODUCT,
    WAIT,
    Contestant,
    Make,
    contestant,
    preloader_command,
)
from benchmarks.scenarios import Scenario

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


# ----- one cold-start run ------------------------------------------------------------------------


@dataclass
class RunResult:
    who: str
    run: int
    pinned: bool
    timeline: Timeline | None = None
    ready_detection: float | None = None
    to_all_pinned: float | None = None
    launch_to_all_pinned: float | None = None
    ideal: float | None = None
    idle_cpu_percent: float | None = None
    idle_rss: int | None = None
    peak_rss: int | None = None
    repairs: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)
    cli_floor: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def measure_idle(c: Contestant, seconds: float) -> tuple[float, int]:
    """CPU share of one core and median RSS of the contestant's own process over `seconds`."""
    samples = []
    cpu0, t0 = cpu_seconds(c.pid), time.monotonic()
    deadline = t0 + seconds
    while time.monotonic() < deadline:
        samples.append(rss_bytes(c.pid))
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    cpu1, t1 = cpu_seconds(c.pid), time.monotonic()
    samples.append(rss_bytes(c.pid))
    return 100.0 * (cpu1 - cpu0) / (t1 - t0), int(median([float(s) for s in samples]))


GNU_TIME = Path("/usr/bin/time")


def timed(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Wall time and peak RSS of one command, as a probe runner would pay them.

    The peak RSS comes from GNU time when there is one: a child forked from this (Python)
    process inherits its RSS high-water mark until it execs, so its own ru_maxrss would report
    at least ours. GNU time's fork is small; its own start adds about a millisecond to the wall
    time. Without it, ru_maxrss is reported and is only an upper bound.
    """
    with tempfile.NamedTemporaryFile(prefix="bench-time-", suffix=".txt") as report:
        argv = list(command)
        if GNU_TIME.is_file():
            argv = [str(GNU_TIME), "-f", "%M", "-o", report.name, *command]
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        with proc.stdout:
            out = proc.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        max_rss, source = usage.ru_maxrss * 1024, "ru_maxrss (upper bound)"
        lines = Path(report.name).read_text().split()
        if GNU_TIME.is_file() and lines and lines[-1].isdigit():
            max_rss, source = int(lines[-1]) * 1024, "GNU time"
    return {
        "command": " ".join([Path(command[0]).name, *command[1:]]),
        "seconds": wall,
        "max_rss": max_rss,
        "rss_source": source,
        "code": proc.returncode,
        "output": out.strip()[-300:],
    }


def measure_health(c: Contestant, runs: int) -> list[dict[str, Any]]:
    """`ollama-preloader health` as a container's HEALTHCHECK runs it; the stock check
    (`ollama list`) for the baseline."""
    product = [*preloader_command(), "health"]
    command = product if c.who == PRODUCT else [str(c.ollama_cli), "list"]
    return [timed(command, c.started_env, c.workdir) for _ in range(runs)]


def repin_request(c: Contestant, model: str, after: float) -> Any:
    """The first load request for `model` with keep_alive < 0 that started after `after`."""
    for req in requests(c.log.records):
        if (
            req.path in ("/api/generate", "/api/embed", "/api/embeddings")
            and req.model == model
            and req.start >= after
            and isinstance(req.keep_alive, int | float)
            and req.keep_alive < 0
        ):
            return req
    return None


def repaired(c: Contestant, model: str, after: float) -> bool:
    return repin_request(c, model, after) is not None


def measure_repairs(
    c: Contestant, plans: Sequence[ModelPlan], scenario: Scenario, rng: random.Random
) -> list[dict[str, Any]]:
    """Evict a model or un-pin it as a client would, then time the contestant's repair."""
    out = []
    completions = [p for p in plans if p.kind == "completion"]
    count = scenario.repairs if c.who == PRODUCT else 2
    for i in range(count):
        time.sleep(rng.uniform(*scenario.repair_gap))
        if i % 2 == 0:
            plan = plans[(i // 2) % len(plans)]
            how = c.take_away(plan)
        else:
            plan = completions[(i // 2) % len(completions)]
            how = "unpinned"
            # A client's request with its own keep_alive: the runner is no longer pinned.
            c.http("POST", "/api/generate", {"model": plan.name, "keep_alive": "5m"})
        trigger = time.time()
        model = norm(plan.name)
        wait = WAIT if c.who == PRODUCT else scenario.baseline_wait
        c.wait_for(partial(repaired, c, model, trigger), wait)
        req = repin_request(c, model, trigger)
        out.append(
            {
                "model": model,
                "how": how,
                "latency": None if req is None else req.start - trigger,
                # Until that request returned: the model is loaded and pinned again.
                "reloaded": None if req is None else req.end - trigger,
                "waited": wait,
            }
        )
        if c.who != PRODUCT:
            # Put it back by hand so the next trial starts from a pinned model again.
            body: dict[str, Any] = {"model": plan.name, "keep_alive": -1}
            path = "/api/generate"
            if plan.kind == "embedding":
                path, body["input"] = "/api/embed", []
            c.http("POST", path, body)
    return out


def cold_start(
    who: str, index: int, scenario: Scenario, base: Path, make: Make = contestant
) -> RunResult:
    result = RunResult(who=who, run=index, pinned=False)
    plans = scenario.models
    with make(who, plans, base / f"{who}-{index}", scenario.startup_delay) as c:
        if not c.wait_all_loaded():
            result.error = f"not all pinned within {WAIT:g}s; see {c.workdir}/contestant.out"
            return result
        result.pinned = True
        time.sleep(scenario.settle)
        result.idle_cpu_percent, result.idle_rss = measure_idle(c, scenario.idle_seconds)
        result.peak_rss = rss_bytes(c.pid, "VmHWM")
        result.health = measure_health(c, scenario.health_runs)
        if who == PRODUCT:
            floor = [*preloader_command(), "--version"]
            result.cli_floor = [
                timed(floor, c.started_env, c.workdir) for _ in range(scenario.health_runs)
            ]
        result.repairs = measure_repairs(c, plans, scenario, random.Random(index))
    tl = timeline(c.log.records, c.launched)
    names = [norm(p.name) for p in plans]
    result.timeline = tl
    result.ready_detection = tl.ready_detection
    result.to_all_pinned = tl.to_all_pinned(names)
    last = tl.pinned_at(names)
    result.launch_to_all_pinned = None if last is None else last - c.launched
    ideal = ideal_from_timeline(tl, plans)
    result.ideal = None if ideal is None else ideal.makespan
    return result


# ----- scale -------------------------------------------------------------------------------------


@dataclass
class ScaleResult:
    models: int
    cycles: int
    interval: float
    block: int
    pinned: bool = False
    period_ms: list[float] = field(default_factory=list)  # median ps-to-ps period per block
    cpu_ms: list[float] = field(default_factory=list)  # supervisor CPU per cycle, per block
    rss: list[tuple[int, int]] = field(default_factory=list)  # (cycle, bytes)
    error: str | None = None


def scale_run(scenario: Scenario, base: Path) -> ScaleResult:
    """Many declared models, many watch cycles: does the cycle time or memory creep up?"""
    n = scenario.scale_models
    plans = tuple(
        ModelPlan(f"scale-{i:02d}:latest", "completion", True, 0.1, 0.02, 100_000_000)
        for i in range(n)
    )
    result = ScaleResult(n, scenario.scale_cycles, scenario.scale_interval, scenario.scale_block)
    env = {"PRELOADER_WATCH_INTERVAL": str(scenario.scale_interval)}
    with contestant(PRODUCT, plans, base / "scale", 0.0, **env) as c:
        if not c.wait_all_loaded():
            result.error = f"not all pinned within {WAIT:g}s"
            return result
        result.pinned = True
        times: list[float] = []
        cpu_marks: list[tuple[int, float]] = [(0, cpu_seconds(c.pid))]
        result.rss.append((0, rss_bytes(c.pid)))
        deadline = time.monotonic() + WAIT + scenario.scale_cycles * scenario.scale_interval * 5
        while len(times) <= scenario.scale_cycles and time.monotonic() < deadline:
            time.sleep(0.25)
            for r in c.log.poll():
                if r.get("path") == "/api/ps":
                    times.append(float(r["t"]))
            if not c.alive():
                result.error = "the supervisor exited during the scale run"
                break
            mark = len(times)
            if mark - cpu_marks[-1][0] >= scenario.scale_block // 4:
                cpu_marks.append((mark, cpu_seconds(c.pid)))
                result.rss.append((mark, rss_bytes(c.pid)))
        periods = [1000.0 * (b - a) for a, b in itertools.pairwise(times)]
        result.period_ms = [
            median(block) for block in blocks(periods[: scenario.scale_cycles], result.block)
        ]
        result.cpu_ms = cpu_per_cycle_blocks(cpu_marks, result.block, scenario.scale_cycles)
    return result


def cpu_per_cycle_blocks(
    marks: Sequence[tuple[int, float]], block: int, cycles: int
) -> list[float]:
    """Milliseconds of supervisor CPU per cycle, over each block of cycles (from the samples
    nearest each block boundary)."""
    out = []
    for lo in range(0, cycles, block):
        hi = lo + block
        first = min(marks, key=lambda m: abs(m[0] - lo))
        last = min(marks, key=lambda m: abs(m[0] - hi))
        if last[0] > first[0]:
            out.append(1000.0 * (last[1] - first[1]) / (last[0] - first[0]))
    return out
