"""The pure side of the benchmarks: the fake's log as timelines, the ideal schedule, statistics.

No I/O and no clock reads here, so every figure the benchmark prints can be checked by a unit
test against a hand-made log.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Requests that move a model towards pinned: the "preload requests".
PRELOAD_PATHS = ("/api/pull", "/api/generate", "/api/embed", "/api/embeddings")
LOAD_PATHS = ("/api/generate", "/api/embed", "/api/embeddings")


def norm(name: str) -> str:
    """A model name as the fake's events spell it: `library/` dropped, `:latest` added."""
    name = name.strip().removeprefix("library/")
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


@dataclass(frozen=True)
class ModelPlan:
    """One declared model of a scenario, with the delays its catalog entry gives the fake."""

    name: str
    kind: str  # completion or embedding
    present: bool
    pull_seconds: float
    load_seconds: float
    size: int = 1_000_000_000


@dataclass(frozen=True)
class Span:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Request:
    """One request the fake answered; it logs `t` when the answer is complete."""

    method: str
    path: str
    body: Any
    status: int
    start: float
    end: float

    @property
    def model(self) -> str | None:
        if isinstance(self.body, dict):
            value = self.body.get("model") or self.body.get("name")
            if isinstance(value, str) and value:
                return norm(value)
        return None

    @property
    def keep_alive(self) -> Any:
        return self.body.get("keep_alive") if isinstance(self.body, dict) else None


def requests(records: Iterable[Mapping[str, Any]]) -> list[Request]:
    out = []
    for r in records:
        if "path" not in r:
            continue
        end = float(r["t"])
        out.append(
            Request(
                method=str(r.get("method", "")),
                path=str(r["path"]),
                body=r.get("body"),
                status=int(r.get("status") or 0),
                start=end - float(r.get("duration") or 0.0),
                end=end,
            )
        )
    return out


def events(records: Iterable[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("event") == name]


@dataclass
class Timeline:
    """What one contestant's cold start looked like, on the fake's clock (Unix seconds)."""

    launched: float
    serve_start: float | None = None
    serve_ready: float | None = None
    first_preload: float | None = None
    pulls: dict[str, Span] = field(default_factory=dict)
    loads: dict[str, Span] = field(default_factory=dict)

    @property
    def ready_detection(self) -> float | None:
        """From the fake answering HTTP to the first request that pulls or loads a model."""
        if self.serve_ready is None or self.first_preload is None:
            return None
        return self.first_preload - self.serve_ready

    def pinned_at(self, models: Sequence[str]) -> float | None:
        """When the last of `models` finished loading; None if one never did."""
        if not models or any(m not in self.loads for m in models):
            return None
        return max(self.loads[m].end for m in models)

    def to_all_pinned(self, models: Sequence[str]) -> float | None:
        """From the fake answering HTTP to the last model loaded (what a user waits for)."""
        last = self.pinned_at(models)
        if last is None or self.serve_ready is None:
            return None
        return last - self.serve_ready


def _containing(reqs: Sequence[Request], paths: Sequence[str], model: str, t: float) -> Request:
    """The request for `model` on one of `paths` that was in flight at `t`."""
    for req in reqs:
        if req.path in paths and req.model == model and req.start <= t <= req.end + 1e-6:
            return req
    raise LookupError(f"no request for {model} on {paths} around t={t}")


def timeline(records: Sequence[Mapping[str, Any]], launched: float) -> Timeline:
    """The serve start, readiness, first preload request, and each pull and first load."""
    tl = Timeline(launched=launched)
    starts = events(records, "serve_start")
    readies = events(records, "serve_ready")
    tl.serve_start = float(starts[0]["t"]) if starts else None
    tl.serve_ready = float(readies[0]["t"]) if readies else None
    reqs = requests(records)
    if tl.serve_ready is not None:
        preloads = [
            r.start
            for r in reqs
            if r.method == "POST" and r.path in PRELOAD_PATHS and r.start >= tl.serve_ready
        ]
        tl.first_preload = min(preloads) if preloads else None
    for event in events(records, "pull_success"):
        model = norm(str(event["model"]))
        req = _containing(reqs, ("/api/pull",), model, float(event["t"]))
        tl.pulls.setdefault(model, Span(req.start, float(event["t"])))
    for event in events(records, "load"):
        model = norm(str(event["model"]))
        if model in tl.loads:
            continue
        req = _containing(reqs, LOAD_PATHS, model, float(event["t"]))
        tl.loads[model] = Span(req.start, float(event["t"]))
    return tl


@dataclass(frozen=True)
class Ideal:
    """The best schedule the delays allow, from the moment Ollama answers (t = 0)."""

    pulls: dict[str, Span]
    loads: dict[str, Span]

    @property
    def makespan(self) -> float:
        return max((s.end for s in self.loads.values()), default=0.0)


def ideal_schedule(
    models: Sequence[str],
    present: Mapping[str, bool],
    pull_seconds: Mapping[str, float],
    load_seconds: Mapping[str, float],
) -> Ideal:
    """Ollama's limits with no overhead at all: one load at a time (the scheduler serialises
    them), one pull at a time in priority order (they share one network link), a pull may run
    while another model loads, and the loader never idles while a model on disk waits: it
    takes the highest-priority one. A loader that never idles needlessly finishes as early as
    any order could (the last idle stretch ends at a release time, and every model loaded after
    it was released then or later), so this is the lower bound, not one policy among others.
    """
    ready_at: dict[str, float] = {}
    pulls: dict[str, Span] = {}
    clock = 0.0
    for m in models:
        if present[m]:
            ready_at[m] = 0.0
        else:
            pulls[m] = Span(clock, clock + pull_seconds[m])
            clock = ready_at[m] = pulls[m].end
    loads: dict[str, Span] = {}
    free = 0.0
    waiting = list(models)
    while waiting:
        available = [m for m in waiting if ready_at[m] <= free]
        if not available:
            free = min(ready_at[m] for m in waiting)
            continue
        m = available[0]
        loads[m] = Span(free, free + load_seconds[m])
        free = loads[m].end
        waiting.remove(m)
    return Ideal(pulls, loads)


def ideal_from_timeline(tl: Timeline, plans: Sequence[ModelPlan]) -> Ideal | None:
    """The ideal for one run, built from the durations the fake took in that very run (each
    pull and load as long as the fake served it), so machine noise hits both sides alike."""
    names = [norm(p.name) for p in plans]
    present = {norm(p.name): p.present for p in plans}
    if any(m not in tl.loads for m in names):
        return None
    if any(not present[m] and m not in tl.pulls for m in names):
        return None
    return ideal_schedule(
        names,
        present,
        {m: tl.pulls[m].seconds for m in names if m in tl.pulls},
        {m: tl.loads[m].seconds for m in names},
    )


# ----- statistics ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the samples <= it."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        vals = [v for v in values if not math.isnan(v)]
        if not vals:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(median(vals), min(vals), max(vals), len(vals))


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def trend(values: Sequence[float]) -> float:
    """The least-squares line's change from the first value to the last, as a fraction of the
    median: +0.1 means the fit rises by a tenth over the series. Uses every point, so one noisy
    block at either end does not decide it."""
    if len(values) < 2:
        return 0.0
    mid = median(values)
    if mid == 0 or math.isnan(mid):
        return 0.0
    return slope(list(enumerate(values))) * (len(values) - 1) / mid


def blocks(values: Sequence[float], size: int) -> list[list[float]]:
    """Consecutive blocks of `size` values; a short tail is its own block."""
    return [list(values[i : i + size]) for i in range(0, len(values), size)]
