"""The one per-model state that logs, `status`, health and metrics all read."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ollama_preloader import __version__
from ollama_preloader.config.changes import reload_needed, repull_needed
from ollama_preloader.config.modelspec import ModelSpec
from ollama_preloader.ollama import psformat
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.state.traffic import ClientDrops, GuardTraffic
from ollama_preloader.state.updates import StaleRunner, UpdateInfo

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ollama_preloader.ollama.api import LoadedModel
    from ollama_preloader.state.runner_facts import LeftoverRunner, RunnerExit


@dataclass(frozen=True)
class Seen:
    """How a model's runner looked at one look: to say what changed when it is un-pinned."""

    pid: int | None  # the runner process, when the server's processes can be seen (`run`)
    context: int | None
    expires_at: datetime | None


class State(StrEnum):
    PENDING = "pending"  # declared, nothing done yet
    QUEUED = "queued"  # its pull waits behind another one (one pull runs at a time)
    PULLING = "pulling"
    LOADING = "loading"
    PINNED = "pinned"  # in /api/ps with keep_alive forever
    LOADED = "loaded"  # loaded once with the finite keep_alive its entry asked for; may expire
    EVICTED = "evicted"  # was pinned, gone from /api/ps; being put back
    # Listed pinned, but a real request never answers and its runner makes no progress
    # (reconcile/probing.py): being repaired, or reported when it cannot be.
    WEDGED = "wedged"
    # Loaded once with a finite keep_alive and no longer in memory (it expired as asked, or
    # was unloaded): not loaded again by the supervisor; Ollama loads it on the next request.
    EXPIRED = "expired"
    FAILED = "failed"  # see `reason`; retried after `retry_at`


READY_STATES = frozenset({State.PINNED, State.LOADED})
# What readiness waits for: a finite keep_alive entry loaded once has done what it asked, in
# memory or not (else a pod would go unready for good, since nothing would load it again).
DONE_STATES = READY_STATES | {State.EXPIRED}

# Upper bounds (seconds) of the load-duration histogram: small models load in about a second,
# large ones from slow disks take minutes.
LOAD_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Probe latencies: a few milliseconds on an idle small model, seconds behind real work.
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class LoadDurations:
    """Durations (loads, or probes with PROBE_BUCKETS) kept the way a Prometheus histogram
    exposes them."""

    bounds: tuple[float, ...] = LOAD_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * len(self.bounds)

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self.count += 1
        for index, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.counts[index] += 1
                break

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, loads that took at most that long), without +Inf (that is `count`)."""
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class ModelStatus:
    """Everything known about one declared model. Mutated only by the supervisor's loop."""

    spec: ModelSpec
    state: State = State.PENDING
    kind: ModelKind | None = None
    reason: str | None = None
    present: bool | None = None  # on disk, per the last /api/tags
    pulled: bool = False  # pulled during this run (policy `always` pulls once)
    # Policy `always`, an update pull that failed while a copy is on disk: that copy is served,
    # and the update is tried again in the background from this monotonic time on.
    update_retry_at: float = 0.0
    update_failures: int = 0
    pull_completed: int = 0
    pull_total: int = 0
    retry_at: float = 0.0  # monotonic time before which a failed model is left alone
    failures: int = 0  # consecutive failures, for the backoff
    loads: int = 0
    reloads: int = 0  # loads after an eviction
    repins: int = 0
    load_seconds: float | None = None
    warmup_seconds: float | None = None  # the last successful warm-up (PRELOADER_WARMUP)
    loaded_context: int | None = None  # context_length right after our load
    ever_loaded: bool = False
    last_load_at: float = 0.0  # monotonic; the periodic refresh counts from here
    refreshes: int = 0
    reload_times: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    # Why it was last pushed out (reconcile/evictions.py): the declared models that took its
    # place (only those count for the reload-storm guard), the times of its repairs (the rate
    # bound), and the undeclared models that took its place (the warning naming them).
    pushed_by: tuple[str, ...] = ()
    repair_times: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    undeclared_evictions: dict[str, list[float]] = field(default_factory=dict)
    undeclared_warned: dict[str, float] = field(default_factory=dict)
    # Left /api/ps while Ollama started a runner for an undeclared file: (the keys listed
    # before, until when to wait for that model to be listed and named).
    undeclared_watch: tuple[frozenset[str], float] | None = None
    capacity_loaded: int | None = None  # runners loaded when it gave way; fewer = room freed
    # Monotonic times of loads that ran out of memory, oldest first (capacity.oom_retry_delay).
    oom_times: deque[float] = field(default_factory=lambda: deque(maxlen=32))
    blob: str | None = None  # model file (FROM line of /api/show): names can share a runner
    shared_with: str | None = None  # the name whose runner serves this model, if not its own
    digest: str | None = None  # manifest digest on disk (/api/tags)
    warned: set[str] = field(default_factory=set)  # one-off warnings already logged
    # From the last /api/ps that listed it.
    size: int | None = None
    size_vram: int | None = None
    context_length: int | None = None
    expires_at: datetime | None = None
    # For metrics and the context drift warning.
    pull_bytes: int = 0  # bytes our pulls downloaded (bytes a resumed pull already had excluded)
    pull_failures: int = 0  # failed pull attempts, the retried ones included
    pull_counted: dict[str, int] = field(default_factory=dict)  # per layer, in pull_bytes
    load_durations: LoadDurations = field(default_factory=LoadDurations)
    context_load: int = -1  # the `loads` count when `loaded_context` was recorded
    drift_context: int | None = None  # the other context length last warned about
    context_drifts: int = 0
    # Runner facts (server/runners.py; `run` only) and what became of them.
    runner_pid: int | None = None  # the runner serving it at the last look
    listed_at: float = 0.0  # monotonic time of the last look at /api/ps that listed it
    last_pinned: Seen | None = None  # the runner at the last look that showed it pinned
    dead_runner: RunnerExit | None = None  # its runner died and Ollama still lists it: reload
    replaced: RunnerExit | None = None  # its runner died, and a client's request replaced it
    client_reload: bool = False  # it left /api/ps because a client's request is reloading it
    default_context: int | None = None  # context length of our load without options
    trained_context: int | None = None  # the model's own context length (/api/show)
    # A live reload changed the entry's load request (keep_alive, options, kind): the runner
    # in memory was loaded with the old one, so the loop must load it again even though it is
    # listed, and clear this once that load succeeds.
    respec: bool = False
    # The probe (reconcile/probing.py): its latencies, the wedges it found and the repairs
    # chosen for them (by kind: kill-runner, restart-serve, unload-repin, none).
    probe_durations: LoadDurations = field(default_factory=lambda: LoadDurations(PROBE_BUCKETS))
    probe_timeouts: int = 0  # consecutive probes unanswered with no progress signal (`watch`)
    wedges: int = 0
    wedge_repairs: dict[str, int] = field(default_factory=dict)
    last_wedge_at: float | None = None  # monotonic; wedged again soon after: escalate
    last_wedge_repair: str | None = None
    wedge_repin: bool = False  # a wedged model whose runner was killed or unloaded: re-pin it
    update: UpdateInfo = field(default_factory=UpdateInfo)  # upstream version (updates.py)
    swapping: bool = False  # an update swap owns it: the loop leaves it alone meanwhile
    held: bool = False  # its hold name is on disk: another process is swapping it
    stale_runner: StaleRunner | None = None  # an older download still loaded (§9.4)

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def pull_percent(self) -> int | None:
        if self.pull_total <= 0:
            return None
        return min(100, int(self.pull_completed * 100 / self.pull_total))

    def take_spec(self, spec: ModelSpec) -> None:
        """The entry changed in a live reload: another request, so start afresh.

        What is known of the model itself stays (on disk, its digest, the pull counters,
        the load history); what depended on the old request goes: a kind the old entry
        declared, the failure and its backoff (a model that gave way with a large num_ctx may
        fit now), and the context length recorded for the drift warning.
        """
        old, self.spec = self.spec, spec
        if repull_needed(old, spec) and self.state == State.FAILED and not self.present:
            # `?insecure=true` added to an entry whose pull the registry refused: pull it now,
            # not after the registry failure's ten-minute wait.
            self.state, self.reason = State.PENDING, None
            self.failures, self.retry_at = 0, 0.0
        if not reload_needed(old, spec):
            return
        self.respec = True
        if spec.kind is not None or old.kind is not None:
            self.kind = spec.kind
        if self.state == State.FAILED:
            self.state = State.EVICTED if self.ever_loaded else State.PENDING
        self.reason = None
        self.failures, self.retry_at, self.capacity_loaded = 0, 0.0, None
        self.loaded_context, self.context_load, self.drift_context = None, -1, None

    def fail(self, reason: str, retry_in: float) -> None:
        self.state = State.FAILED
        self.reason = reason
        self.failures += 1
        self.retry_at = time.monotonic() + retry_in

    @property
    def state_text(self) -> str:
        """`pulling 42%` while pulling, else the state's name."""
        if self.state == State.PULLING and self.pull_percent is not None:
            return f"pulling {self.pull_percent}%"
        return self.state.value

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        current = now or datetime.now(UTC)
        resident = self.size is not None
        return {
            "name": self.spec.display,
            "requested": self.spec.name,
            "priority": self.spec.priority,
            "kind": self.kind.value if self.kind else None,
            "state": self.state.value,
            "reason": self.reason,
            "pull_percent": self.pull_percent if self.state == State.PULLING else None,
            "keep_alive": self.spec.keep_alive_value,
            "options": self.spec.options_dict(),
            "size": self.size,
            "size_vram": self.size_vram,
            "context_length": self.context_length,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "loads": self.loads,
            "reloads": self.reloads,
            "repins": self.repins,
            "load_seconds": self.load_seconds,
            "refreshes": self.refreshes,
            "shared_with": self.shared_with,
            "warmup_seconds": self.warmup_seconds,
            "state_text": self.state_text,
            "pull_completed": self.pull_completed,
            "pull_total": self.pull_total,
            "pull_bytes": self.pull_bytes,
            "pull_failures": self.pull_failures,
            "processor": psformat.processor(self.size or 0, self.size_vram or 0)
            if resident
            else None,
            "until": psformat.until(self.expires_at, current) if resident else None,
            "loaded_context": self.loaded_context,
            "context_drifts": self.context_drifts,
            "wedges": self.wedges,
            "digest": self.digest,
            "update": self.update.as_dict(),
            "stale_runner": self.stale_runner.as_dict() if self.stale_runner else None,
        }


def loaded_as_dict(model: LoadedModel, now: datetime) -> dict[str, Any]:
    """A runner /api/ps lists that no declared model accounts for."""
    return {
        "name": model.name,
        "digest": model.digest,
        "size": model.size,
        "size_vram": model.size_vram,
        "processor": psformat.processor(model.size, model.size_vram),
        "context_length": model.context_length,
        "expires_at": model.expires_at.isoformat() if model.expires_at else None,
        "until": psformat.until(model.expires_at, now),
    }


@dataclass(frozen=True)
class Redeclared:
    """What Board.redeclare did, for the loop to act on."""

    # New statuses, `pending`: pulled if needed and pinned by the loop, as at start.
    added: tuple[ModelStatus, ...]
    # Off the Board (so /status and /metrics drop them at once), in their last state: what is
    # loaded, with which options, is what PRELOADER_ON_REMOVE acts on.
    removed: tuple[ModelStatus, ...]
    # Kept with another load request, marked `respec`: to be loaded again.
    changed: tuple[ModelStatus, ...]


@dataclass
class Board:
    """All declared models in priority order, plus what the server looks like."""

    models: list[ModelStatus] = field(default_factory=list)
    server_up: bool = False
    server_restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)
    all_pinned_after: float | None = None  # seconds from start to the first time all were pinned
    # `server_restarts` at the last look at /api/ps: until the first look after a (re)start the
    # states still describe runners that died with the old `ollama serve`.
    observed_restarts: int = -1
    # The last live reload that failed (file gone, a bad line), until a good version arrives:
    # the set in force stays, and /status says why the edit did not apply.
    config_error: str | None = None
    # `watch` on this host: runners of the store that no live `ollama serve` owns (reported only).
    leftover_runners: list[LeftoverRunner] = field(default_factory=list)
    # Update checks and applied updates by result, for /metrics.
    update_checks: dict[str, int] = field(default_factory=dict)
    update_results: dict[str, int] = field(default_factory=dict)
    # Requests through the guard per model and outcome; None while the guard is off.
    traffic: GuardTraffic | None = None
    # Declared models a guard client dropped mid-answer, for an early probe (stays empty
    # without the guard).
    drops: ClientDrops = field(default_factory=ClientDrops)

    @classmethod
    def for_specs(cls, specs: Sequence[ModelSpec]) -> Board:
        return cls(models=[ModelStatus(spec=s, kind=s.kind) for s in specs])

    def redeclare(self, specs: Sequence[ModelSpec]) -> Redeclared:
        """Make `specs` the declared set, in their priority order (a live reload).

        A model in both keeps its status (state, counters, what /api/ps showed), with the new
        entry and priority; one only in `specs` gets a fresh status; one only in the old set
        leaves the Board. The list object is replaced, not mutated: a reader iterating over
        the old one (a scrape, a cycle) sees a whole set, never half of each.
        """
        current = {m.key: m for m in self.models}
        kept: list[ModelStatus] = []
        added: list[ModelStatus] = []
        changed: list[ModelStatus] = []
        for spec in specs:
            status = current.pop(spec.key, None)
            if status is None:
                status = ModelStatus(spec=spec, kind=spec.kind)
                added.append(status)
            else:
                status.take_spec(spec)
                if status.respec:
                    changed.append(status)
            kept.append(status)
        self.models = kept
        return Redeclared(tuple(added), tuple(current.values()), tuple(changed))

    def get(self, key: str) -> ModelStatus | None:
        for m in self.models:
            if m.key == key:
                return m
        return None

    @property
    def all_ready(self) -> bool:
        """Every declared model is pinned (or loaded once, for a finite keep_alive)."""
        return all(m.state in DONE_STATES for m in self.models)

    @property
    def ready(self) -> bool:
        """What /readyz and `health` answer: `ollama serve` is up and every model is pinned."""
        return self.server_up and self.observed and self.all_ready

    @property
    def observed(self) -> bool:
        """/api/ps was read since `ollama serve` last became ready."""
        return self.observed_restarts == self.server_restarts

    def document(
        self, undeclared: Sequence[LoadedModel], *, live_reason: str | None = None
    ) -> dict[str, Any]:
        """Everything `status --json` and `/status` show, as plain JSON data."""
        now = datetime.now(UTC)
        pinned = sum(m.state == State.PINNED for m in self.models)
        return {
            "version": __version__,
            "ready": self.ready,
            "reason": self.not_ready_reason(),
            "live": live_reason is None,
            "live_reason": live_reason,
            "server_up": self.server_up,
            "server_restarts": self.server_restarts,
            "uptime_seconds": round(time.monotonic() - self.started_at, 3),
            "all_pinned_after": None
            if self.all_pinned_after is None
            else round(self.all_pinned_after, 3),
            "config_error": self.config_error,
            "leftover_runners": [r.as_dict() for r in self.leftover_runners],
            "declared": len(self.models),
            "pinned": pinned,
            "models": [m.as_dict(now) for m in self.models],
            "undeclared": [loaded_as_dict(m, now) for m in undeclared],
            **({"guard": self.traffic.as_dict()} if self.traffic is not None else {}),
        }

    def ready_message(self) -> str:
        """The one line /readyz and `health` give when ready."""
        if not self.models:
            return "ollama serve is up; no models are declared"
        return f"all {len(self.models)} declared models are {self.done_summary()}"

    def done_summary(self) -> str:
        """`loaded and pinned`, or what each finite keep_alive entry is now (ready_message,
        preload.complete): never "pinned" for one that is not, nor "loaded" once it expired."""
        loaded = sum(m.state == State.LOADED for m in self.models)
        expired = sum(m.state == State.EXPIRED for m in self.models)
        if not loaded and not expired:
            return "loaded and pinned"
        pinned = len(self.models) - loaded - expired
        parts = [f"{pinned} pinned"] if pinned else []
        if loaded:
            parts.append(f"{loaded} loaded with a finite keep_alive")
        if expired:
            parts.append(f"{expired} expired as its keep_alive asked")
        return "loaded once: " + ", ".join(parts)

    def not_ready_reason(self) -> str | None:
        if not self.server_up:
            return "ollama serve is not ready"
        if not self.observed:
            return "ollama serve (re)started; checking which models are loaded"
        waiting = [m for m in self.models if m.state not in DONE_STATES]
        if not waiting:
            return None
        parts = []
        for m in waiting:
            state = m.state.value
            if m.state == State.PULLING and m.pull_percent is not None:
                state = f"pulling {m.pull_percent}%"
            if m.reason and m.state in (State.FAILED, State.WEDGED):
                state = f"{m.state.value}: {m.reason}"
            parts.append(f"{m.spec.display} {state}")
        return "; ".join(parts)
