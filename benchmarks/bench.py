"""Benchmarks: ollama-preloader against the shell-script baseline, on the same fake Ollama.

    .venv/bin/python benchmarks/bench.py                 # the full set (about 15 minutes)
    .venv/bin/python benchmarks/bench.py --quick         # a tiny configuration (seconds)
    .venv/bin/python benchmarks/bench.py --real          # the real Ollama (benchmarks/real.py)

Both contestants start the fake `ollama` (tests/fake_bin) with the same catalog, the same
models on disk and the same startup delay; the fake's request log (its `t` stamps) is the common
clock. Prints a Markdown table of medians and spread; `--json` keeps every raw figure and
`--figure` draws the cold-start timeline (needs the `bench` extra: matplotlib). The method is in
docs/benchmarks.md. Benchmarks are not tests: nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: `benchmarks` is a package of the repo

from benchmarks.analysis import (  # noqa: E402
    ModelPlan,
    Span,
    Summary,
    Timeline,
    blocks,
    ideal_from_timeline,
    median,
    norm,
    percentile,
    requests,
    slope,
    timeline,
    trend,
)

FAKE_BIN = ROOT / "tests" / "fake_bin"
BASELINE = ROOT / "benchmarks" / "baseline.sh"
GB = 1_000_000_000
MB = 1024 * 1024
WAIT = 120.0  # upper bound for any wait; a run that exceeds it is reported as failed
CLK_TCK = os.sysconf("SC_CLK_TCK")

PRODUCT = "ollama-preloader"
SHELL = "baseline.sh"


# ----- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    models: tuple[ModelPlan, ...]
    startup_delay: float  # the fake's "GPU discovery": port bound, HTTP not answered yet
    runs: int
    settle: float  # after the last load, before the idle window: its follow-up requests end
    idle_seconds: float
    repairs: int  # per supervisor run, alternating eviction and un-pinning
    repair_gap: tuple[float, float]  # random pause before each, so the poll phase varies
    baseline_wait: float  # how long the baseline is given to repair (it never does)
    health_runs: int
    scale_models: int
    scale_cycles: int
    scale_interval: float
    scale_block: int


# A cold start of five models: two on disk already (the first, the largest, among them), three
# to pull, two of them embedding models. Delays are a real start scaled down about 20x: pulls
# take longer than loads, discovery takes about a second.
MIX = (
    ModelPlan("qwen2.5-coder:7b", "completion", True, 3.0, 1.2, int(4.7 * GB)),
    ModelPlan("llama3.2:3b", "completion", False, 2.0, 0.8, int(2.0 * GB)),
    ModelPlan("nomic-embed-text:latest", "embedding", False, 0.6, 0.3, int(0.27 * GB)),
    ModelPlan("devstral:24b", "completion", True, 6.0, 2.0, int(14.3 * GB)),
    ModelPlan("all-minilm:latest", "embedding", False, 0.4, 0.2, int(0.05 * GB)),
)

FULL = Scenario(
    models=MIX,
    startup_delay=1.0,
    runs=5,
    settle=1.0,
    idle_seconds=30.0,
    repairs=4,
    repair_gap=(0.5, 1.5),
    baseline_wait=5.0,
    health_runs=10,
    scale_models=50,
    scale_cycles=10_000,
    scale_interval=0.01,
    scale_block=1000,
)

QUICK = Scenario(
    models=(
        ModelPlan("llama3.2:1b", "completion", True, 0.2, 0.1, int(1.3 * GB)),
        ModelPlan("all-minilm:latest", "embedding", False, 0.2, 0.1, int(0.05 * GB)),
    ),
    startup_delay=0.2,
    runs=1,
    settle=0.3,
    idle_seconds=1.0,
    repairs=2,
    repair_gap=(0.1, 0.3),
    baseline_wait=0.5,
    health_runs=2,
    scale_models=3,
    scale_cycles=60,
    scale_interval=0.02,
    scale_block=20,
)


# `--real`: the kit's three tiny models, all pulled from its registry (benchmarks/real.py fills
# in the names once the registry has a port). No scale run: it measures the supervisor's watch
# loop, which the fake measures as well.
REAL = dataclasses.replace(FULL, models=(), startup_delay=0.0, scale_models=0, scale_cycles=0)
REAL_QUICK = dataclasses.replace(
    REAL,
    runs=1,
    settle=0.3,
    idle_seconds=1.0,
    repairs=2,
    repair_gap=(0.1, 0.3),
    baseline_wait=0.5,
    health_runs=2,
)


def catalog(plans: Sequence[ModelPlan]) -> dict[str, Any]:
    return {
        "models": {
            p.name: {
                "kind": p.kind,
                "size": p.size,
                "pull_seconds": p.pull_seconds,
                "load_seconds": p.load_seconds,
                "context_length": 32768 if p.kind == "completion" else 2048,
            }
            for p in plans
        }
    }


# ----- processes -------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def preloader_command() -> list[str]:
    exe = shutil.which("ollama-preloader", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "ollama_preloader"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class FakeLog:
    """FAKE_OLLAMA_LOG, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        new = []
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    new.append(record)
        self.records.extend(new)
        return new

    def loaded(self) -> set[str]:
        return {norm(str(r["model"])) for r in self.records if r.get("event") == "load"}


@dataclass
class Contestant:
    """One contestant process against its own fake Ollama, in its own directory."""

    who: str
    plans: Sequence[ModelPlan]
    workdir: Path
    startup_delay: float
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    launched: float = 0.0
    port: int = 0
    log: FakeLog = field(init=False)
    started_env: dict[str, str] = field(default_factory=dict)
    _out: IO[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = FakeLog(self.workdir / "fake-log.jsonl")

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OLLAMA_", "PRELOADER_", "FAKE_OLLAMA_"))
        }
        (self.workdir / "catalog.json").write_text(json.dumps(catalog(self.plans)))
        (self.workdir / "home").mkdir(exist_ok=True)
        self.port = free_port()
        env.update(
            PATH=f"{FAKE_BIN}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
            + os.environ.get("PATH", ""),
            HOME=str(self.workdir / "home"),
            OLLAMA_HOST=f"127.0.0.1:{self.port}",
            OLLAMA_MODELS=str(self.workdir / "models"),
            OLLAMA_MAX_LOADED_MODELS=str(len(self.plans)),
            OLLAMA_PRELOAD_MODELS=",".join(p.name for p in self.plans),
            FAKE_OLLAMA_CATALOG=str(self.workdir / "catalog.json"),
            FAKE_OLLAMA_PRESENT=",".join(p.name for p in self.plans if p.present),
            FAKE_OLLAMA_LOG=str(self.log.path),
            FAKE_OLLAMA_STARTUP_DELAY=str(self.startup_delay),
            PYTHONUNBUFFERED="1",
        )
        if self.who == PRODUCT:
            # Defaults otherwise: the figures are those of an out-of-the-box supervisor.
            env.update(PRELOADER_LOG_FORMAT="json", PRELOADER_HEALTH_PORT=str(free_port()))
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        if self.who == PRODUCT:
            return [*preloader_command(), "run"]
        return ["bash", str(BASELINE)]

    def start(self) -> None:
        self.launch(self.env())

    def launch(self, env: dict[str, str]) -> None:
        self.started_env = env
        self._out = (self.workdir / "contestant.out").open("wb")
        self.launched = time.time()
        self.proc = subprocess.Popen(
            self.command(),
            env=env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.log.poll()
            if predicate():
                return True
            if not self.alive():
                self.log.poll()
                return predicate()
            time.sleep(0.02)
        return False

    def wait_all_loaded(self, timeout: float = WAIT) -> bool:
        names = {norm(p.name) for p in self.plans}
        return self.wait_for(lambda: names <= self.log.loaded(), timeout)

    def http(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
        return json.loads(text) if text.strip() else None

    @property
    def ollama_cli(self) -> Path:
        """The `ollama` command a user types next to this server."""
        return FAKE_BIN / "ollama"

    def take_away(self, plan: ModelPlan) -> str:
        """Unload a pinned model the way the server's own scheduler would; how it was done."""
        self.http("POST", "/_fake/evict", {"model": plan.name})
        return "evicted"

    def serve_pid(self) -> int | None:
        for r in self.log.records:
            if r.get("event") == "serve_start":
                return int(r["pid"])
        return None

    def stop(self) -> None:
        """SIGTERM, wait, then make sure nothing it started is left."""
        self.log.poll()
        serve = self.serve_pid()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_group(self.proc.pid)
                self.proc.wait()
            kill_group(self.proc.pid)  # the baseline's `ollama serve &` shares its group
        if serve is not None:
            kill_group(serve)  # the supervisor's serve has its own session, runners with it
        if self._out is not None:
            self._out.close()
        self.log.poll()


@contextlib.contextmanager
def contestant(
    who: str, plans: Sequence[ModelPlan], workdir: Path, startup_delay: float, **env: str
) -> Iterator[Contestant]:
    c = Contestant(who, plans, workdir, startup_delay, dict(env))
    try:
        c.start()
        yield c
    finally:
        c.stop()


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


Make = Callable[..., contextlib.AbstractContextManager[Contestant]]


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


# ----- the table -------------------------------------------------------------------------------


def fmt(value: float | None, unit: str, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{digits}f} {unit}".strip()


def spread(s: Summary, unit: str, digits: int = 0, scale: float = 1.0) -> str:
    if s.n == 0:
        return "–"
    m, lo, hi = s.median * scale, s.low * scale, s.high * scale
    if s.n == 1:
        return fmt(m, unit, digits)
    return f"{fmt(m, unit, digits)} ({lo:.{digits}f}–{hi:.{digits}f})"


def ratio(a: Summary, b: Summary) -> str:
    if a.n == 0 or b.n == 0 or a.median == 0 or math.isnan(a.median) or math.isnan(b.median):
        return "–"
    return f"{b.median / a.median:.1f}×"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def values(results: Sequence[RunResult], who: str, get: Callable[[RunResult], Any]) -> list[float]:
    out = []
    for r in results:
        if r.who == who and r.pinned:
            v = get(r)
            if v is not None:
                out.append(float(v))
    return out


def serve_started(r: RunResult) -> float | None:
    tl = r.timeline
    if tl is None or tl.serve_start is None:
        return None
    return tl.serve_start - tl.launched


def over_ideal(r: RunResult) -> float | None:
    if r.ideal is None or r.to_all_pinned is None:
        return None
    return r.to_all_pinned - r.ideal


def serve_start_to_ready(r: RunResult) -> float | None:
    tl = r.timeline
    if tl is None or tl.serve_start is None or tl.serve_ready is None:
        return None
    return tl.serve_ready - tl.serve_start


def table(
    results: Sequence[RunResult], scale: ScaleResult | None, *, real: bool = False
) -> list[str]:
    """The Markdown table. `real`: measured on the real Ollama (benchmarks/real.py), whose
    `ollama list` is the real Go CLI."""
    rows = [
        "| Measure | Target | ollama-preloader: median (min–max) | baseline.sh: median (min–max)"
        " | Baseline ÷ preloader | Met |",
        "|---|---|---|---|---|---|",
    ]

    def both(get: Callable[[RunResult], Any]) -> tuple[Summary, Summary]:
        return Summary.of(values(results, PRODUCT, get)), Summary.of(values(results, SHELL, get))

    p, b = both(lambda r: r.ready_detection)
    rows.append(
        f"| 1. Ready detection | ≤ 50 ms | {spread(p, 'ms', 0, 1000)} | {spread(b, 'ms', 0, 1000)}"
        f" | {ratio(p, b)} | {verdict(p.median * 1000 <= 50 if p.n else None)} |"
    )
    p, b = both(lambda r: r.to_all_pinned)
    pi, bi = both(lambda r: r.ideal)
    over_p = Summary.of(values(results, PRODUCT, over_ideal))
    over_b = Summary.of(values(results, SHELL, over_ideal))
    allowed = max(0.05 * pi.median, 0.3) if pi.n else math.nan
    rows.append(
        f"| 2. Time to all pinned (from Ollama answering) | ideal + max(5%, 0.3 s) |"
        f" {spread(p, 's', 2)} | {spread(b, 's', 2)} | {ratio(p, b)} |"
        f" {verdict(over_p.median <= allowed if over_p.n else None)} |"
    )
    rows.append(
        f"| 2a. … the ideal for the same run | | {spread(pi, 's', 2)} | {spread(bi, 's', 2)} | | |"
    )
    rows.append(
        f"| 2b. … over the ideal (allowed {fmt(allowed, 's', 2)}) | ≤ {fmt(allowed, 's', 2)} |"
        f" {spread(over_p, 's', 2)} | {spread(over_b, 's', 2)} | | |"
    )
    p, b = both(serve_started)
    rows.append(
        f"| 2c. Launch to `ollama serve` started | | {spread(p, 's', 2)} | {spread(b, 's', 2)}"
        " | | |"
    )
    p, b = both(serve_start_to_ready)
    rows.append(
        f"| 2e. `ollama serve` started to answering | | {spread(p, 's', 2)} | {spread(b, 's', 2)}"
        " | | |"
    )
    p, b = both(lambda r: r.launch_to_all_pinned)
    rows.append(
        f"| 2d. Launch to all pinned (wall clock) | | {spread(p, 's', 2)} | {spread(b, 's', 2)}"
        f" | {ratio(p, b)} | |"
    )
    lat = [
        float(x["latency"])
        for r in results
        if r.who == PRODUCT
        for x in r.repairs
        if x["latency"] is not None
    ]
    missed = sum(1 for r in results if r.who == PRODUCT for x in r.repairs if x["latency"] is None)
    base_trials = [x for r in results if r.who == SHELL for x in r.repairs]
    base_fixed = sum(1 for x in base_trials if x["latency"] is not None)
    waited = max((float(x["waited"]) for x in base_trials), default=0.0)
    p95 = percentile(lat, 95) if lat else math.nan
    base_text = (
        f"never ({len(base_trials) - base_fixed} of {len(base_trials)} not repaired in"
        f" {waited:g} s)"
        if base_trials
        else "–"
    )
    rows.append(
        f"| 3. Repair latency, p95 (median; n) | ≤ 2 s p95 | {fmt(p95, 's', 2)}"
        f" ({fmt(median(lat) if lat else math.nan, 's', 2)}; n={len(lat)}"
        f"{f', {missed} not repaired' if missed else ''}) | {base_text} | ∞ |"
        f" {verdict(p95 <= 2.0 and not missed if lat else None)} |"
    )
    reloads = [
        float(x["reloaded"])
        for r in results
        if r.who == PRODUCT
        for x in r.repairs
        if x.get("reloaded") is not None
    ]
    hows = sorted({str(x["how"]) for r in results if r.who == PRODUCT for x in r.repairs})
    by_how = ", ".join(
        f"{how} {fmt(median(found), 's', 2)}"
        for how in hows
        if (
            found := [
                float(x["latency"])
                for r in results
                if r.who == PRODUCT
                for x in r.repairs
                if x["how"] == how and x["latency"] is not None
            ]
        )
    )
    rows.append(
        f"| 3a. … to loaded and pinned again, p95 (median) | |"
        f" {fmt(percentile(reloads, 95) if reloads else math.nan, 's', 2)}"
        f" ({fmt(median(reloads) if reloads else math.nan, 's', 2)}) | | | |"
    )
    rows.append(f"| 3b. … repair latency by cause, median | | {by_how or '–'} | | | |")
    p, b = both(lambda r: r.idle_cpu_percent)
    rows.append(
        f"| 4. Idle CPU (share of one core) | ≤ 0.5% | {spread(p, '%', 2)} | {spread(b, '%', 2)}"
        f" | | {verdict(p.median <= 0.5 if p.n else None)} |"
    )
    p, b = both(lambda r: r.idle_rss)
    rows.append(
        f"| 4. Idle RSS | ≤ 60 MB | {spread(p, 'MB', 1, 1 / MB)} | {spread(b, 'MB', 1, 1 / MB)}"
        f" | | {verdict(p.median / MB <= 60 if p.n else None)} |"
    )
    p, b = both(lambda r: r.peak_rss)
    rows.append(
        f"| 4a. Peak RSS (whole run) | | {spread(p, 'MB', 1, 1 / MB)}"
        f" | {spread(b, 'MB', 1, 1 / MB)} | | |"
    )
    # On the fake, `ollama list` is the fake's Python CLI (the page's footnote says so).
    listing = "`ollama list`" if real else "`ollama list`*"
    health = [h for r in results if r.who == PRODUCT for h in r.health]
    shell_health = [h for r in results if r.who == SHELL for h in r.health]
    hs = Summary.of([h["seconds"] for h in shell_health])
    hm = Summary.of([h["max_rss"] for h in shell_health])
    missing = [h for h in health if h["code"] not in (0, 1)]
    if health and not missing:
        ws = Summary.of([h["seconds"] for h in health])
        ms = Summary.of([h["max_rss"] for h in health])
        rows.append(
            f"| 5. Health check wall time | ≤ 150 ms | {spread(ws, 'ms', 0, 1000)}"
            f" | {listing}: {spread(hs, 'ms', 0, 1000)} | | {verdict(ws.median <= 0.15)} |"
        )
        rows.append(
            f"| 5. Health check peak RSS | ≤ 30 MB | {spread(ms, 'MB', 1, 1 / MB)}"
            f" | {listing}: {spread(hm, 'MB', 1, 1 / MB)} | |"
            f" {verdict(ms.median / MB <= 30)} |"
        )
    else:
        why = "not measured"
        if missing:
            code, output = missing[0]["code"], missing[0]["output"]
            why = f"exit {code}"
            if "No such command" in output:
                why += ": no `health` command yet"
        rows.append(f"| 5. Health check | ≤ 150 ms, ≤ 30 MB | not available ({why}) | | | – |")
    floor = [h for r in results if r.who == PRODUCT for h in r.cli_floor]
    if floor:
        ws = Summary.of([h["seconds"] for h in floor])
        ms = Summary.of([h["max_rss"] for h in floor])
        rows.append(
            f"| 5a. CLI start floor (`ollama-preloader --version`) | | {spread(ws, 'ms', 0, 1000)},"
            f" {spread(ms, 'MB', 1, 1 / MB)} | | | |"
        )
    if scale is not None:
        rows.extend(scale_rows(scale))
    return rows


def warm_rss(scale: ScaleResult) -> int:
    """RSS once the first block has run: allocator and caches have settled by then."""
    return next((r for c, r in scale.rss if c >= scale.block), scale.rss[0][1])


FLAT_TREND = 0.10  # the fitted change over the run may be at most this share of the median
FLAT_RSS = 0.05


def scale_flat(scale: ScaleResult) -> bool | None:
    """Flat: the fitted trends of the cycle period and of the CPU per cycle, over all blocks,
    stay within 10% of their medians, and RSS grows by less than 5% from the end of the first
    block to the end."""
    if not scale.pinned or len(scale.period_ms) < 2 or len(scale.cpu_ms) < 2 or not scale.rss:
        return None
    growth = (scale.rss[-1][1] - warm_rss(scale)) / warm_rss(scale)
    return (
        abs(trend(scale.period_ms)) <= FLAT_TREND
        and abs(trend(scale.cpu_ms)) <= FLAT_TREND
        and growth < FLAT_RSS
    )


def series(values: Sequence[float], unit: str, digits: int) -> str:
    s = Summary.of(values)
    return (
        f"{spread(s, unit, digits)}, first {values[0]:.{digits}f} → last {values[-1]:.{digits}f},"
        f" trend {trend(values) * 100:+.0f}%"
    )


def scale_rows(scale: ScaleResult) -> list[str]:
    if not scale.pinned or not scale.rss or not scale.period_ms or not scale.cpu_ms:
        return [f"| 6. Scale | flat | failed: {scale.error} | | | – |"]
    rss0 = warm_rss(scale)
    growth = (scale.rss[-1][1] - rss0) / rss0
    kb_per_k = slope([(c / 1000, r / 1024) for c, r in scale.rss if c >= scale.block])
    label = f"{scale.models} models, {scale.cycles} cycles at {scale.interval * 1000:g} ms"
    return [
        f"| 6. Scale ({label}): cycle period, median of {scale.block}-cycle blocks (range)"
        f" | trend ≤ ±{FLAT_TREND:.0%} | {series(scale.period_ms, 'ms', 1)} | | |"
        f" {verdict(scale_flat(scale))} |",
        f"| 6. … supervisor CPU per cycle, per block | trend ≤ ±{FLAT_TREND:.0%} |"
        f" {series(scale.cpu_ms, 'ms', 2)} | | | |",
        f"| 6. … RSS after {scale.block} cycles → end | < +{FLAT_RSS:.0%} |"
        f" {rss0 / MB:.1f} → {scale.rss[-1][1] / MB:.1f} MB ({growth * 100:+.1f}%,"
        f" {kb_per_k:+.0f} KB per 1000 cycles) | | | |",
    ]


# ----- main --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "bash": subprocess.run(
            ["bash", "-c", "echo $BASH_VERSION"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="a tiny configuration, no figure")
    ap.add_argument(
        "--real",
        action="store_true",
        help="the real Ollama of ../shared/realollama (or PRELOADER_REAL_OLLAMA), not the fake",
    )
    ap.add_argument("--runs", type=int, help="cold-start runs per contestant")
    ap.add_argument("--idle-seconds", type=float, help="idle window per run")
    ap.add_argument("--scale-cycles", type=int, help="watch cycles in the scale run (0: skip)")
    ap.add_argument("--json", type=Path, help="write every raw figure here")
    ap.add_argument("--figure", type=Path, help="write the cold-start timeline PNG here")
    ap.add_argument("--keep", action="store_true", help="keep the working directories")
    ap.add_argument(
        "--from-json", type=Path, help="measure nothing: print (and draw) a saved --json run"
    )
    return ap.parse_args(argv)


def load_report(path: Path) -> tuple[list[RunResult], ScaleResult | None, tuple[ModelPlan, ...]]:
    """The results a --json file holds, as the objects the table and the figure read."""
    data = json.loads(path.read_text())
    results = []
    for raw in data["runs"]:
        tl = raw.pop("timeline")
        run = RunResult(**raw)
        if tl is not None:
            pulls = {k: Span(**v) for k, v in tl.pop("pulls").items()}
            loads = {k: Span(**v) for k, v in tl.pop("loads").items()}
            run.timeline = Timeline(**tl, pulls=pulls, loads=loads)
        results.append(run)
    scale = None
    if data["scale"] is not None:
        scale = ScaleResult(**data["scale"])
        scale.rss = [(int(c), int(r)) for c, r in scale.rss]
    plans = tuple(ModelPlan(**m) for m in data["scenario"]["models"])
    return results, scale, plans


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        saved, saved_scale, plans = load_report(args.from_json)
        real = json.loads(args.from_json.read_text())["machine"].get("server") == "real"
        print("\n".join(table(saved, saved_scale, real=real)))
        if args.figure is not None:
            from benchmarks.figure import draw

            draw(saved, plans, args.figure)
        return 0
    full, quick = (REAL, REAL_QUICK) if args.real else (FULL, QUICK)
    scenario = quick if args.quick else full
    overrides: dict[str, Any] = {}
    if args.runs is not None:
        overrides["runs"] = args.runs
    if args.idle_seconds is not None:
        overrides["idle_seconds"] = args.idle_seconds
    if args.scale_cycles is not None:
        overrides["scale_cycles"] = args.scale_cycles
    scenario = dataclasses.replace(scenario, **overrides)
    base = Path(tempfile.mkdtemp(prefix="preloader-bench-"))
    info = machine()
    print(
        f"# {info['cores']} cores ({info['cpu']}), load average {info['load_average'][0]:.2f};"
        f" Python {info['python']}, bash {info['bash']}; working in {base}",
        flush=True,
    )
    results: list[RunResult] = []
    scale: ScaleResult | None = None
    try:
        with contextlib.ExitStack() as stack:
            make: Make = contestant
            if args.real:
                from benchmarks import real

                kit, registry = stack.enter_context(real.real_server(base))
                scenario = dataclasses.replace(scenario, models=real.plans(registry))
                make = partial(real.real_contestant, kit=kit)
                info.update(server="real", ollama=real.version(kit))
                info["proxy"] = real.proxy_overhead(kit, base)
                print(
                    f"# real Ollama {info['ollama']} from {kit.root}; GET /api/ps takes"
                    f" {info['proxy']['direct_ms']:.2f} ms straight,"
                    f" {info['proxy']['proxied_ms']:.2f} ms through the recording proxy",
                    flush=True,
                )
            for i in range(scenario.runs):
                # Alternate who goes first, so a busier moment on a shared machine hits both.
                order = (PRODUCT, SHELL) if i % 2 == 0 else (SHELL, PRODUCT)
                for who in order:
                    r = cold_start(who, i, scenario, base, make)
                    results.append(r)
                    print(f"# run {i + 1}/{scenario.runs} {who}: {summary_line(r)}", flush=True)
            if scenario.scale_cycles > 0:
                scale = scale_run(scenario, base)
                print(f"# scale: {scale.period_ms[:1]} → {scale.period_ms[-1:]} ms", flush=True)
    finally:
        if args.json is not None:
            data = report(scenario, info, results, scale, real=args.real)
            args.json.write_text(json.dumps(data, indent=1))
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print()
    if args.quick:
        print("# --quick: one tiny run with 1 s windows, to check that everything works;")
        print("# its figures (a 1 s CPU window has a resolution of 1%) are not measurements.\n")
    print("\n".join(table(results, scale, real=args.real)))
    if args.figure is not None and not args.quick:
        from benchmarks.figure import draw

        draw(results, scenario.models, args.figure)
        print(f"\n# timeline: {args.figure}")
    failed = [r for r in results if not r.pinned]
    return 1 if failed or (scale is not None and not scale.pinned) else 0


def summary_line(r: RunResult) -> str:
    if not r.pinned:
        return f"FAILED: {r.error}"
    parts = [
        f"ready detection {fmt((r.ready_detection or math.nan) * 1000, 'ms')}",
        f"all pinned {fmt(r.to_all_pinned, 's', 2)} (ideal {fmt(r.ideal, 's', 2)})",
        f"idle {fmt(r.idle_cpu_percent, '%', 2)} {fmt((r.idle_rss or 0) / MB, 'MB', 1)}",
    ]
    lat = [x["latency"] for x in r.repairs]
    parts.append("repairs " + ", ".join("never" if x is None else f"{x:.2f}s" for x in lat))
    return "; ".join(parts)


def report(
    scenario: Scenario,
    info: dict[str, Any],
    results: Sequence[RunResult],
    scale: ScaleResult | None,
    *,
    real: bool = False,
) -> dict[str, Any]:
    def run_dict(r: RunResult) -> dict[str, Any]:
        d = dataclasses.asdict(r)
        d["timeline"] = dataclasses.asdict(r.timeline) if r.timeline else None
        return d

    return {
        "machine": info,
        "scenario": dataclasses.asdict(scenario),
        "runs": [run_dict(r) for r in results],
        "scale": dataclasses.asdict(scale) if scale else None,
        "table": table(results, scale, real=real),
        "max_rss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


if __name__ == "__main__":
    # Through the package, so that benchmarks/real.py (which imports this module) and this run
    # share one module object rather than `__main__` and a second `benchmarks.bench`.
    from benchmarks import bench  # noqa: PLW0406

    sys.exit(bench.main())
