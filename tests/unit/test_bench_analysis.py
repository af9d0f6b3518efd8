"""The benchmark's pure analysis: the ideal schedule, timelines from the fake's log, statistics."""

from __future__ import annotations

import math
from typing import Any

import pytest

from benchmarks.analysis import (
    ModelPlan,
    Span,
    Summary,
    ideal_from_timeline,
    ideal_schedule,
    norm,
    percentile,
    slope,
    timeline,
    trend,
)


def test_norm_spells_names_as_the_fake_events_do() -> None:
    """`library/` is dropped and `:latest` added, as the fake's events spell model names."""
    assert norm("llama3.2") == "llama3.2:latest"
    assert norm("library/llama3.2:1b") == "llama3.2:1b"
    assert norm("example.com:5000/ns/m") == "example.com:5000/ns/m:latest"


def test_ideal_overlaps_pulls_with_loads_and_keeps_priority() -> None:
    """A present model loads while the next pulls; loads follow priority once on disk."""
    names = ["a", "b", "c", "d"]
    present = {"a": True, "b": False, "c": False, "d": True}
    ideal = ideal_schedule(names, present, {"b": 2.0, "c": 0.5}, {"a": 1, "b": 1, "c": 1, "d": 3})
    assert ideal.pulls == {"b": Span(0.0, 2.0), "c": Span(2.0, 2.5)}
    # a at once; b is not on disk when a is done, d is: d loads, then b and c in order.
    assert ideal.loads["a"] == Span(0.0, 1.0)
    assert ideal.loads["d"] == Span(1.0, 4.0)
    assert ideal.loads["b"] == Span(4.0, 5.0)
    assert ideal.loads["c"] == Span(5.0, 6.0)
    assert ideal.makespan == 6.0


def test_ideal_waits_for_pulls_when_nothing_is_on_disk() -> None:
    """With every model missing, the loader idles until each pull ends."""
    ideal = ideal_schedule(["a", "b"], {"a": False, "b": False}, {"a": 1, "b": 3}, {"a": 2, "b": 1})
    assert ideal.loads == {"a": Span(1.0, 3.0), "b": Span(4.0, 5.0)}


def record(t: float, **fields: Any) -> dict[str, Any]:
    return {"t": t, **fields}


def request(start: float, end: float, path: str, model: str, **body: Any) -> dict[str, Any]:
    return record(
        end,
        method="POST",
        path=path,
        body={"model": model, **body},
        status=200,
        duration=end - start,
    )


LOG = [
    record(100.0, event="serve_start", pid=1),
    record(101.0, event="serve_ready"),
    record(101.01, method="GET", path="/", body=None, status=200, duration=0.001),
    request(101.02, 103.0, "/api/pull", "b"),
    record(102.99, event="pull_success", model="b:latest"),
    request(101.03, 101.53, "/api/generate", "a", keep_alive=-1),
    record(101.52, event="load", model="a:latest"),
    request(103.1, 103.9, "/api/generate", "b", keep_alive=-1),
    record(103.89, event="load", model="b:latest"),
    request(110.0, 110.5, "/api/generate", "a", keep_alive=-1),
    record(110.49, event="load", model="a:latest"),
]


def test_timeline_reads_readiness_pulls_and_first_loads() -> None:
    """Ready detection runs to the first pull or load request; the first load of each counts."""
    tl = timeline(LOG, launched=99.5)
    assert tl.serve_ready == 101.0
    assert tl.ready_detection == pytest.approx(0.02)
    assert tl.pulls["b:latest"] == Span(101.02, 102.99)
    assert tl.loads["a:latest"] == Span(101.03, 101.52)
    assert tl.to_all_pinned(["a:latest", "b:latest"]) == pytest.approx(2.89)
    assert tl.to_all_pinned(["a:latest", "c:latest"]) is None


def test_ideal_from_timeline_uses_the_runs_own_durations() -> None:
    """The ideal takes each pull and load as long as the fake took in that run."""
    plans = [
        ModelPlan("a", "completion", True, 9.0, 9.0),
        ModelPlan("b", "completion", False, 9.0, 9.0),
    ]
    ideal = ideal_from_timeline(timeline(LOG, launched=99.5), plans)
    assert ideal is not None
    # b pulls for 1.97 s from t=0, then loads for 0.79 s.
    assert ideal.makespan == pytest.approx(1.97 + 0.79)


def test_percentile_is_nearest_rank() -> None:
    """p95 of 20 samples is the 19th smallest; of fewer, the largest."""
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 95) == 19.0
    assert percentile([1.0, 2.0, 3.0], 95) == 3.0
    assert math.isnan(percentile([], 95))


def test_summary_and_slope() -> None:
    """Median with its range; the least-squares slope of a line is its gradient."""
    s = Summary.of([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high, s.n) == (2.5, 1.0, 10.0, 4)
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(1, 1)]) == 0.0


def test_trend_is_the_fitted_change_over_the_median() -> None:
    """A steady rise from 10 to 12 is a +20% trend; noise around a level is close to none."""
    assert trend([10.0, 11.0, 12.0]) == pytest.approx(2 / 11)
    assert abs(trend([10.0, 12.0, 9.0, 11.0, 10.0, 12.0, 9.0, 11.0])) < 0.1
    assert trend([5.0]) == 0.0
