"""Capacity guard: who stays resident when declared models cannot all be loaded. Pure logic.

Ollama evicts even pinned models when its count limit or memory runs out (ollama-behaviour.md
§7.2, §7.3). Reloading the evicted model at once evicts another: ping-pong. The rule here is
simple and predictable: list order is priority, the less important model of a conflicting pair
gives way, and it is retried only after a long backoff or when capacity is freed.

A load that runs out of memory is different: the memory may have been held only briefly (a
model being unloaded, another process on the GPU), so it is retried soon, then less and less
often, and never more than OOM_LOADS_PER_HOUR times in any hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ollama_preloader.state.board import ModelStatus, State

THRASH_LOADS = 5  # reloads of one model ...
THRASH_WINDOW = 600.0  # ... within this many seconds is a reload storm
# A model that never fits costs a load attempt each time (and, on Ollama's OOM path, a reload of
# every other model): 6 in the first hour, then the doubling's cap (4 an hour at 15 minutes).
OOM_LOADS_PER_HOUR = 6
HOUR = 3600.0


def fix(models: Sequence[ModelStatus]) -> str:
    """The fix every capacity message ends with, naming where the list is (variable or file)."""
    where = models[0].spec.list_source if models else "OLLAMA_PRELOAD_MODELS"
    return f"raise OLLAMA_MAX_LOADED_MODELS, use smaller or quantised tags, or trim {where}"


def waits_for_room(status: ModelStatus, now: float) -> bool:
    """Failed for capacity and backing off: only its load waits (every capacity reason starts
    `capacity:`); a model not on disk is still pulled meanwhile, so it is ready when room is."""
    return (
        status.state == State.FAILED
        and status.retry_at > now
        and (status.reason or "").startswith("capacity:")
    )


@dataclass(frozen=True)
class Verdict:
    """The outcome of one conflict: `losers` give way (failed: capacity), with one message."""

    losers: tuple[ModelStatus, ...]
    keep: tuple[ModelStatus, ...]
    message: str


def over_explicit_limit(models: Sequence[ModelStatus], limit: int | None) -> list[ModelStatus]:
    """Pinned models past an explicit OLLAMA_MAX_LOADED_MODELS: they cannot all be resident."""
    if not limit:
        return []
    pinned = [m for m in models if m.spec.pinned]
    return pinned[limit:]


def limit_message(limit: int, fits: Sequence[ModelStatus], over: Sequence[ModelStatus]) -> str:
    kept = ", ".join(m.spec.display for m in fits) or "none"
    left = ", ".join(m.spec.display for m in over)
    return (
        f"capacity: OLLAMA_MAX_LOADED_MODELS={limit} allows {limit} loaded models and "
        f"{len(fits) + len(over)} are declared; keeping {kept}; not loading {left}; "
        f"fix: {fix(over)}"
    )


def judge_eviction(loaded: ModelStatus, evicted: Sequence[ModelStatus]) -> Verdict | None:
    """Loading `loaded` pushed `evicted` (declared, pinned) out. Who gives way?

    The model with the higher list position (lower priority) loses: if `loaded` is less
    important than any model it evicted, it gives way (and is unloaded to free the slot);
    otherwise the evicted models that are less important than it give way.
    """
    if not evicted:
        return None
    more_important = [m for m in evicted if m.spec.priority < loaded.spec.priority]
    if more_important:
        losers: tuple[ModelStatus, ...] = (loaded,)
        keep = tuple(sorted(evicted, key=lambda m: m.spec.priority))
    else:
        losers = tuple(sorted(evicted, key=lambda m: m.spec.priority))
        keep = (loaded,)
    names = ", ".join(m.spec.display for m in evicted)
    message = (
        f"capacity: loading {loaded.spec.display} evicted {names}; they cannot all be loaded "
        f"together, keeping {', '.join(m.spec.display for m in keep)} (earlier in the list); "
        f"fix: {fix(evicted)}"
    )
    return Verdict(losers=losers, keep=keep, message=message)


def oom_message(
    loaded: ModelStatus, evicted: Sequence[ModelStatus], error: str, *, oom: bool = False
) -> str:
    """Why `loaded` gives way after a failed load; with `oom`, its out-of-memory count too."""
    names = ", ".join(m.spec.display for m in evicted) or "no other model"
    note = ""
    if oom and loaded.oom_times:
        recent = len(recent_ooms(loaded.oom_times, loaded.oom_times[-1]))
        note = f"; out-of-memory loads in the last hour: {recent} of at most {OOM_LOADS_PER_HOUR}"
        if pushes_out_earlier(loaded, evicted):
            note += "; it pushed out models earlier in the list, so it waits the full backoff"
    return (
        f"capacity: {loaded.spec.display} ran out of memory while loading and Ollama unloaded "
        f"{names} ({error}){note}; fix: {fix([loaded])}"
    )


def pushes_out_earlier(loaded: ModelStatus, evicted: Sequence[ModelStatus]) -> bool:
    """Did loading `loaded` push out a model that comes before it in the list?"""
    return any(m.spec.priority < loaded.spec.priority for m in evicted)


def recent_ooms(ooms: Sequence[float], now: float) -> list[float]:
    """The out-of-memory loads of the hour up to `now`."""
    return [t for t in ooms if now - t < HOUR]


def oom_hour_opens(ooms: Sequence[float], per_hour: int = OOM_LOADS_PER_HOUR) -> float:
    """The monotonic time from which one more load keeps every hour to `per_hour` OOM loads
    (0.0: at once). `ooms` are the times of out-of-memory loads, oldest first."""
    if len(ooms) < per_hour:
        return 0.0
    return ooms[-per_hour] + HOUR


def give_way_backoff(backoff: float, failures: int) -> float:
    """The wait of a model that gave way after `failures` failures in a row: PRELOADER_CAPACITY_
    BACKOFF, doubling, up to 8 times it."""
    return backoff * 2.0 ** min(3, max(0, failures))


def oom_backoff(ooms: Sequence[float], *, since: float, first: float, cap: float) -> float:
    """The short OOM wait: `first`, doubling with each out-of-memory load after `since` (the
    last successful load), up to `cap`. `ooms` include the one just seen."""
    streak = sum(1 for t in ooms if t > since)
    return min(cap, first * 2.0 ** max(0, streak - 1))


def oom_retry(
    status: ModelStatus, evicted: Sequence[ModelStatus], *, first: float, cap: float
) -> float:
    """Seconds before `status` is loaded again after the out-of-memory load just recorded in
    its `oom_times`, which pushed out `evicted`.

    The short schedule (oom_backoff), unless the load pushed out a model earlier in the list:
    that is a conflict about who stays, and retrying soon would evict the important model again
    (Ollama's OOM path clears every runner), so it waits as any model that gives way. Either
    way, never more than OOM_LOADS_PER_HOUR out-of-memory loads in any hour.
    """
    ooms = status.oom_times
    if pushes_out_earlier(status, evicted):
        delay = give_way_backoff(cap, status.failures)
    else:
        delay = oom_backoff(ooms, since=status.last_load_at, first=first, cap=cap)
    return max(delay, oom_hour_opens(ooms) - ooms[-1])


def is_thrashing(reload_times: Sequence[float], now: float) -> bool:
    """Too many reloads of one model in the window: something keeps pushing it out."""
    recent = [t for t in reload_times if now - t <= THRASH_WINDOW]
    return len(recent) >= THRASH_LOADS


def thrash_message(status: ModelStatus, by: Sequence[str]) -> str:
    """Why a model gives way after declared models (`by`, the last to) kept pushing it out."""
    return (
        f"capacity: {status.spec.display} was pushed out by other declared models (last by "
        f"{', '.join(by)}) and loaded back {THRASH_LOADS} times in {THRASH_WINDOW / 60:.0f} "
        f"minutes; they cannot all be loaded together; fix: {fix([status])}"
    )


def is_out_of_memory(error: str) -> bool:
    text = error.lower()
    return "out of memory" in text or "out-of-memory" in text or "oom" in text.split()
