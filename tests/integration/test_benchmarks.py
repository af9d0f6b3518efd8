"""The benchmark script runs end to end on a tiny configuration (benchmarks are not tests:
nothing here looks at a figure, only at what was measured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = (
    "1. Ready detection",
    "2. Time to all pinned",
    "2a. … the ideal",
    "3. Repair latency",
    "4. Idle CPU",
    "4. Idle RSS",
    "5. Health check",
    "6. Scale",
)


def test_quick_benchmark_measures_both_contestants(tmp_path: Path) -> None:
    """`bench.py --quick` pins every model with both contestants and prints every row."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OLLAMA_", "PRELOADER_", "FAKE_OLLAMA_"))
    }
    raw, figure = tmp_path / "bench.json", tmp_path / "timeline.png"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench.py"),
            "--quick",
            *("--json", str(raw), "--figure", str(figure)),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    for row in ROWS:
        assert any(line.startswith(f"| {row}") for line in table), (row, result.stdout)
    # The quick mode draws nothing, so it needs no matplotlib.
    assert not figure.exists()

    data = json.loads(raw.read_text())
    runs = {r["who"]: r for r in data["runs"]}
    assert set(runs) == {"ollama-preloader", "baseline.sh"}
    for run in runs.values():
        assert run["pinned"], run["error"]
        assert run["ready_detection"] is not None
        assert run["to_all_pinned"] is not None
        assert run["ideal"] is not None
        assert run["idle_rss"] > 0
    # The supervisor repaired every eviction and un-pinning; the script repaired none.
    product, baseline = runs["ollama-preloader"]["repairs"], runs["baseline.sh"]["repairs"]
    assert [r["how"] for r in product] == ["evicted", "unpinned"]
    assert all(r["latency"] is not None for r in product), product
    assert baseline
    assert all(r["latency"] is None for r in baseline), baseline
    assert data["scale"]["pinned"]
    assert len(data["scale"]["period_ms"]) >= 2
