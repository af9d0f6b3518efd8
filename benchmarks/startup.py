"""Benchmark: start-up and idle cost of `run` beside the shell script, on the real Ollama.

    PRELOADER_REAL_OLLAMA=/work/shared/realollama/bin/ollama \
        .venv/bin/python benchmarks/startup.py [--before DIR] [--tries 5] [--idle 60]

Uses the real-server tier's harness (tests/real_harness.py): the kit, its TLS registry and a
store with the three tiny models, copied once and reused by every launch (so every contestant
loads them from disk). Each contestant is launched `--tries` times, in turns (before, this
tree, the script, before, ...), so that a load that comes and goes on a shared machine falls on
all of them alike; an `ollama` shim first on PATH records when `ollama serve` is exec'd (bash's
$EPOCHREALTIME, no extra fork) and the CPU time its parent's main thread had used by then
(/proc/PID/schedstat, in nanoseconds, read with a builtin), and then becomes the kit's binary.
Measured from just before the launch:

- launch -> `ollama serve` spawned (the shim's timestamp, on this process's wall clock);
- CPU to the spawn: the launching process's main thread's time on a CPU up to the exec (less
  sensitive than the wall clock to other jobs on the machine);
- launch -> all pinned (/api/ps lists the three models with a never-expiring keep-alive);
- after each contestant's last launch, with the three pinned and 5 s to settle: CPU of its own
  process (and of `ollama serve`, which answers its polls) over `--idle` seconds, as % of one
  core, and its RSS at the end.

Contestants: this checkout's `run`; `--before DIR` another source tree of the package (say
`git archive main`), run with PYTHONPATH=DIR in the same interpreter, so before and after are
measured in one run; and benchmarks/baseline.sh. Both source trees are byte-compiled first, as
pip does when it installs the package (the image's venv has its .pyc files): with
PYTHONDONTWRITEBYTECODE set, as on the test machines, every launch would otherwise compile the
package's modules again. Benchmarks are not tests: nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))  # run as a script: the harness lives in tests/

from real_harness import MODELS, RealLauncher, find_kit, kit_launcher  # noqa: E402

from benchmarks.analysis import median  # noqa: E402

BASELINE = ROOT / "benchmarks" / "baseline.sh"
CENTURY = timedelta(days=365 * 100)
WAIT = 120.0
SHIM = """#!/usr/bin/env bash
if [ "${1:-}" = serve ]; then
  read -r parent _ </proc/$PPID/schedstat
  printf '%s %s %s\\n' "$EPOCHREALTIME" "$$" "$parent" >>"$STARTUP_LOG"
fi
exec "$STARTUP_OLLAMA" "$@"
"""
# The harness's test settings (debug logs, fast polls) are not what a user runs.
TEST_SETTINGS = (
    "PRELOADER_LOG_FORMAT",
    "PRELOADER_LOG_LEVEL",
    "PRELOADER_WATCH_INTERVAL",
    "PRELOADER_RETRY_INITIAL",
    "PRELOADER_RETRY_MAX",
    "PRELOADER_READY_TIMEOUT",
    "PYTHONUNBUFFERED",
)


@dataclass
class Contestant:
    label: str
    command: list[str]
    pythonpath: str | None = None
    spawned: list[float] = field(default_factory=list)
    spawn_cpu: list[float] = field(default_factory=list)
    pinned: list[float] = field(default_factory=list)
    idle_cpu: float = 0.0
    serve_cpu: float = 0.0
    rss_mb: float = 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--before", type=Path, help="a source tree to measure beside this one")
    args = parser.parse_args()
    ollama, why = find_kit()
    if ollama is None:
        print(f"startup benchmark: {why}", file=sys.stderr)
        return 2
    module = [sys.executable, "-m", "ollama_preloader", "run"]
    contestants = [Contestant("ollama-preloader (this tree)", module, str(ROOT))]
    if args.before is not None:
        contestants.insert(0, Contestant("ollama-preloader (before)", module, str(args.before)))
    contestants.append(Contestant("shell script (baseline.sh)", ["bash", str(BASELINE)]))
    for contestant in contestants:
        if contestant.pythonpath is not None:
            compileall.compile_dir(Path(contestant.pythonpath) / "ollama_preloader", quiet=1)
    with (
        tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp,
        kit_launcher(ollama, Path(tmp)) as real,
    ):
        real.seed_store(*MODELS)
        for attempt in range(args.tries):
            for number, contestant in enumerate(contestants):
                idle = args.idle if attempt == args.tries - 1 else None
                measure(real, contestant, number, attempt, idle)
    print(
        f"| ({args.tries} launches each) | launch → `ollama serve` spawned | CPU to the spawn "
        f"| launch → all pinned | idle CPU, own process ({args.idle:g} s) | idle CPU, `ollama "
        "serve` | RSS |"
    )
    print("|---|---|---|---|---|---|---|")
    for c in contestants:
        print(
            f"| {c.label} | {_spread(c.spawned)} | {_spread(c.spawn_cpu)} | {_spread(c.pinned)} "
            f"| {c.idle_cpu:.3f} % | {c.serve_cpu:.3f} % | {c.rss_mb:.1f} MB |"
        )
    return 0


def _spread(values: list[float]) -> str:
    return f"{median(values):.3f} s ({min(values):.3f}–{max(values):.3f})"


def measure(
    real: RealLauncher, contestant: Contestant, number: int, attempt: int, idle: float | None
) -> None:
    """One launch of `contestant`; with `idle`, then its idle CPU and RSS over that long."""
    assert real.kit is not None
    names = [real.name(model) for model in MODELS]
    shim_dir = real.tmp / "shim"
    shim_dir.mkdir(exist_ok=True)
    shim = shim_dir / "ollama"
    shim.write_text(SHIM)
    shim.chmod(0o755)
    log = real.tmp / "serve-starts.txt"
    env = real.env(unset=TEST_SETTINGS, OLLAMA_PRELOAD_MODELS=",".join(names))
    env.update(
        PATH=f"{shim_dir}{os.pathsep}{env['PATH']}",
        STARTUP_LOG=str(log),
        STARTUP_OLLAMA=str(real.kit.ollama),
    )
    if contestant.pythonpath is not None:
        env["PYTHONPATH"] = contestant.pythonpath
    base_url = "http://" + env["OLLAMA_HOST"]
    log.unlink(missing_ok=True)
    output = (real.tmp / f"contestant{number}-{attempt}.log").open("wb")
    launched = time.time()
    proc = subprocess.Popen(
        contestant.command,
        env=env,
        cwd=real.tmp,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_pinned(base_url, names, proc)
        contestant.pinned.append(time.time() - launched)
        stamp, serve, on_cpu_ns = log.read_text().split()[:3]
        contestant.spawned.append(float(stamp) - launched)
        contestant.spawn_cpu.append(int(on_cpu_ns) / 1e9)
        if idle is not None:
            time.sleep(5.0)
            own, served = _cpu(proc.pid), _cpu(int(serve))
            time.sleep(idle)
            contestant.idle_cpu = (_cpu(proc.pid) - own) / idle * 100
            contestant.serve_cpu = (_cpu(int(serve)) - served) / idle * 100
            contestant.rss_mb = _rss_kb(proc.pid) / 1024
    finally:
        _stop(real, proc)
        output.close()


def _wait_pinned(base_url: str, names: list[str], proc: subprocess.Popen[bytes]) -> None:
    """Until /api/ps lists every model with a keep-alive that never ends."""
    deadline = time.monotonic() + WAIT
    wanted = {f"{name}:latest" for name in names}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the contestant exited ({proc.returncode}) before all were pinned")
        try:
            with urllib.request.urlopen(base_url + "/api/ps", timeout=5) as resp:
                models = json.loads(resp.read())["models"]
        except OSError:
            models = []
        now = datetime.now(UTC)
        pinned = {
            m["name"]
            for m in models
            if datetime.fromisoformat(m["expires_at"]) - now > CENTURY  # "never expires"
        }
        if wanted <= pinned:
            return
        time.sleep(0.01)
    raise SystemExit(f"not all pinned within {WAIT:g} s")


def _cpu(pid: int) -> float:
    """User plus system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _stop(real: RealLauncher, proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM and wait; then make sure no `ollama` of this HOME is left for the next launch."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while (left := real.servers() + real.runners()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    raise SystemExit(main())
