"""The out-of-memory retry schedule: soon after a transient OOM, bounded for one that never fits."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ollama_preloader.config.models_file import parse_models_file
from ollama_preloader.config.modelspec import parse_entry
from ollama_preloader.reconcile import capacity
from ollama_preloader.state.board import ModelStatus

FIRST, CAP = 30.0, 900.0  # the defaults of PRELOADER_OOM_RETRY and PRELOADER_CAPACITY_BACKOFF


def model(name: str, priority: int) -> ModelStatus:
    return ModelStatus(spec=parse_entry(name, priority))


def attempts_of_a_model_that_never_fits(hours: float, *, first: float = FIRST) -> list[float]:
    """Load times of a model whose every load runs out of memory, following oom_retry."""
    status, now, times = model("huge", 0), 1000.0, []
    while now < 1000.0 + hours * capacity.HOUR:
        times.append(now)
        status.oom_times.append(now)
        status.failures += 1
        now += capacity.oom_retry(status, [], first=first, cap=CAP)
    return [t - 1000.0 for t in times]


def test_a_transient_oom_is_retried_soon_then_less_often() -> None:
    """30 s, then doubling to the capacity backoff: the issue's schedule."""
    waits = [
        capacity.oom_backoff([float(t) for t in range(1, n + 1)], since=0.0, first=FIRST, cap=CAP)
        for n in range(1, 8)
    ]
    assert waits == [30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 900.0]


def test_a_successful_load_starts_the_schedule_again() -> None:
    """Only out-of-memory loads after the last success count towards the doubling."""
    assert capacity.oom_backoff([10.0, 20.0, 30.0], since=25.0, first=FIRST, cap=CAP) == 30.0
    assert capacity.oom_backoff([10.0, 20.0, 30.0], since=0.0, first=FIRST, cap=CAP) == 120.0


def test_a_model_that_never_fits_is_loaded_at_most_six_times_an_hour() -> None:
    """First hour: 0, 30, 90, 210, 450, 930 s, then nothing until an hour after the first;
    then every 15 minutes. No one-hour window ever holds more than six attempts."""
    times = attempts_of_a_model_that_never_fits(10)
    assert times[:8] == [0.0, 30.0, 90.0, 210.0, 450.0, 930.0, 3600.0, 4500.0]
    per_hour = capacity.OOM_LOADS_PER_HOUR
    assert per_hour == 6
    for index, start in enumerate(times):
        window = [t for t in times[index:] if t < start + capacity.HOUR]
        assert len(window) <= per_hour, (start, window)
    steady = [b - a for a, b in itertools.pairwise(times[6:])]
    assert set(steady) == {CAP}


def test_the_hourly_bound_holds_with_a_tiny_first_delay() -> None:
    """PRELOADER_OOM_RETRY=0.1s doubles to the cap quickly; the bound still caps the hour."""
    times = attempts_of_a_model_that_never_fits(3, first=0.1)
    assert len([t for t in times if t < capacity.HOUR]) == capacity.OOM_LOADS_PER_HOUR
    assert times[capacity.OOM_LOADS_PER_HOUR] == pytest.approx(capacity.HOUR)


def test_hour_opens_after_the_sixth_most_recent_oom() -> None:
    """Fewer than six OOMs leave the next load free; six push it to an hour after the oldest."""
    assert capacity.oom_hour_opens([1.0, 2.0, 3.0, 4.0, 5.0]) == 0.0
    assert capacity.oom_hour_opens([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == 2.0 + capacity.HOUR


def test_an_oom_that_pushed_out_an_earlier_model_waits_the_long_backoff() -> None:
    """Ollama's OOM path clears every runner: a retry in 30 s would evict the more important
    model again, so the later model gives way as in any conflict; the first model does not."""
    first, later = model("a", 0), model("huge", 1)
    later.oom_times.append(100.0)
    assert capacity.oom_retry(later, [first], first=FIRST, cap=CAP) == CAP
    later.failures = 2
    assert capacity.oom_retry(later, [first], first=FIRST, cap=CAP) == 4 * CAP
    first.oom_times.append(100.0)
    assert capacity.oom_retry(first, [later], first=FIRST, cap=CAP) == FIRST


def test_give_way_backoff_doubles_up_to_eight_times() -> None:
    """PRELOADER_CAPACITY_BACKOFF, doubling with each failure in a row, at most 8x."""
    assert [capacity.give_way_backoff(CAP, n) for n in range(6)] == [
        900.0,
        1800.0,
        3600.0,
        7200.0,
        7200.0,
        7200.0,
    ]


def test_the_oom_message_counts_the_hour_and_says_why_it_waits() -> None:
    """The reason `status` shows names the count against the bound, and the long wait's cause."""
    first, later = model("a", 0), model("huge", 1)
    later.oom_times.extend([10.0, 50.0])
    text = capacity.oom_message(later, [first], "cudaMalloc failed: out of memory", oom=True)
    assert "out-of-memory loads in the last hour: 2 of at most 6" in text
    assert "pushed out models earlier in the list" in text
    alone = capacity.oom_message(first, [], "out of memory", oom=True)
    assert "Ollama unloaded no other model" in alone
    assert "earlier in the list" not in alone


def test_the_fix_names_the_models_file_when_the_list_is_there() -> None:
    """Issue 27 item 4: "trim" the list where it is: the variable, or the models file."""
    path = Path("/etc/ollama-preloader/models.txt")
    first, second = (
        ModelStatus(spec=s) for s in parse_models_file(b"llama3.2\ndevstral\n", path).specs
    )
    text = capacity.limit_message(1, [first], [second])
    assert text.endswith(f"or trim PRELOADER_MODELS_FILE={path}")
    verdict = capacity.judge_eviction(second, [first])
    assert verdict is not None
    assert verdict.message.endswith(f"or trim PRELOADER_MODELS_FILE={path}")
    assert "OLLAMA_PRELOAD_MODELS" not in capacity.thrash_message(second, ["llama3.2:latest"])
    plain = capacity.limit_message(1, [model("a", 0)], [model("b", 1)])
    assert plain.endswith("or trim OLLAMA_PRELOAD_MODELS")
