"""`bench.py --real --quick` runs end to end on the real Ollama (a benchmark, not a test of
figures: nothing here looks at a number, only at what was measured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from real_harness import Kit, processes_with_home

ROOT = Path(__file__).resolve().parents[2]


def test_real_quick_benchmark_measures_both_contestants(kit: Kit, tmp_path: Path) -> None:
    """Both contestants pin the three models pulled from the kit's registry; the supervisor
    repairs an `ollama stop` and a client's un-pinning, the script neither; nothing is left."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OLLAMA_", "PRELOADER_", "FAKE_OLLAMA_"))
    }
    env["PRELOADER_REAL_OLLAMA"] = str(kit.ollama)  # the session's usable copy of the kit
    env["TMPDIR"] = str(tmp_path)  # the benchmark's working directories, to check them after
    raw = tmp_path / "bench.json"
    bench = [sys.executable, str(ROOT / "benchmarks" / "bench.py")]
    result = subprocess.run(
        [*bench, "--real", "--quick", "--keep", "--json", str(raw)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    for row in ("1. Ready detection", "2. Time to all pinned", "2e. `ollama serve`", "3a. "):
        assert any(line.startswith(f"| {row}") for line in table), (row, result.stdout)

    data = json.loads(raw.read_text())
    assert data["machine"]["server"] == "real"
    runs = {r["who"]: r for r in data["runs"]}
    assert set(runs) == {"ollama-preloader", "baseline.sh"}
    for run in runs.values():
        assert run["pinned"], run["error"]
        assert len(run["timeline"]["pulls"]) == len(run["timeline"]["loads"]) == 3
        assert run["ideal"] is not None
    product, baseline = runs["ollama-preloader"]["repairs"], runs["baseline.sh"]["repairs"]
    assert [r["how"] for r in product] == ["stopped", "unpinned"]
    assert all(r["latency"] is not None and r["reloaded"] is not None for r in product)
    assert baseline
    assert all(r["latency"] is None for r in baseline), baseline
    # Every `ollama serve` and runner of the benchmark ran with a HOME under tmp_path (--keep).
    homes = list(tmp_path.glob("preloader-bench-*/*/home"))
    assert {home.parent.name for home in homes} >= {"ollama-preloader-0", "baseline.sh-0"}
    assert [pid for home in homes for pid in processes_with_home(home)] == []
