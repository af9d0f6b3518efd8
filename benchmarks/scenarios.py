"""The benchmark's scenarios: which models, how slow the fake is, how long each window lasts.

`FULL` and `QUICK` run against the fake Ollama; `REAL` and `REAL_QUICK` against the real one
(benchmarks/real.py fills in the kit's models).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.analysis import ModelPlan

GB = 1_000_000_000


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
