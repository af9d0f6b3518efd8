"""Benchmarks: ollama-preloader against the shell-script baseline, on the same fake Ollama.

    .venv/bin/python benchmarks/bench.py                 # the full set (about 15 minutes)
    .venv/bin/python benchmarks/bench.py --quick         # a tiny configuration (seconds)
    .venv/bin/python benchmarks/bench.py --real          # the real Ollama (benchmarks/real.py)

Both contestants start the fake `ollama` (tests/fake_bin) with the same catalog, the same
models on disk and the same startup delay; the fake's request log (its `t` stamps) is the common
clock. Prints a Markdown table of medians and spread; `--json` keeps every raw figure and
`--figure` draws the cold-start timeline (needs the `bench` extra: matplotlib). The method is in
docs/benchmarks.md. Benchmarks are not tests: nothing here asserts a target.

This module is the command line and its --json file. The parts, each importing only those
listed before it: analysis.py (pure: the request log to a timeline, the ideal schedule,
statistics), scenarios.py, contestants.py (the two processes and the fake's log),
measuring.py (a cold start, the repairs, the scale run), tables.py (the Markdown table),
figure.py (the timeline PNG) and real.py (the real-server variant of the contestants).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: `benchmarks` is a package of the repo

from benchmarks.analysis import ModelPlan, Span, Timeline  # noqa: E402
from benchmarks.contestants import PRODUCT, SHELL, Make, contestant  # noqa: E402
from benchmarks.measuring import RunResult, ScaleResult, cold_start, scale_run  # noqa: E402
from benchmarks.scenarios import FULL, QUICK, REAL, REAL_QUICK, Scenario  # noqa: E402
from benchmarks.tables import MB, fmt, table  # noqa: E402


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
    sys.exit(main())
