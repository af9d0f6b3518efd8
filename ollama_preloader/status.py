"""The one per-model state that logs, `status`, health and metrics all read."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ollama_preloader.modelspec import ModelKind, ModelSpec


class State(StrEnum):
    PENDING = "pending"  # declared, nothing done yet
    PULLING = "pulling"
    LOADING = "loading"
    PINNED = "pinned"  # in /api/ps with keep_alive forever
    LOADED = "loaded"  # loaded once with the finite keep_alive its entry asked for; may expire
    EVICTED = "evicted"  # was pinned, gone from /api/ps; being put back
    FAILED = "failed"  # see `reason`; retried after `retry_at`


READY_STATES = frozenset({State.PINNED, State.LOADED})


@dataclass
class ModelStatus:
    """Everything known about one declared model. Mutated only by the supervisor's loop."""

    spec: ModelSpec
    state: State = State.PENDING
    kind: ModelKind | None = None
    reason: str | None = None
    present: bool | None = None  # on disk, per the last /api/tags
    pulled: bool = False  # pulled during this run (policy `always` pulls once)
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
    capacity_loaded: int | None = None  # runners loaded when it gave way; fewer = room freed
    blob: str | None = None  # model file (FROM line of /api/show): names can share a runner
    shared_with: str | None = None  # the name whose runner serves this model, if not its own
    digest: str | None = None  # manifest digest on disk (/api/tags)
    warned: set[str] = field(default_factory=set)  # one-off warnings already logged
    # From the last /api/ps that listed it.
    size: int | None = None
    size_vram: int | None = None
    context_length: int | None = None
    expires_at: datetime | None = None

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def pull_percent(self) -> int | None:
        if self.pull_total <= 0:
            return None
        return min(100, int(self.pull_completed * 100 / self.pull_total))

    def fail(self, reason: str, retry_in: float) -> None:
        self.state = State.FAILED
        self.reason = reason
        self.failures += 1
        self.retry_at = time.monotonic() + retry_in

    def as_dict(self) -> dict[str, Any]:
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
        }


@dataclass
class Board:
    """All declared models in priority order, plus what the server looks like."""

    models: list[ModelStatus] = field(default_factory=list)
    server_up: bool = False
    server_restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)
    all_pinned_after: float | None = None  # seconds from start to the first time all were pinned

    @classmethod
    def for_specs(cls, specs: tuple[ModelSpec, ...]) -> Board:
        return cls(models=[ModelStatus(spec=s, kind=s.kind) for s in specs])

    def get(self, key: str) -> ModelStatus | None:
        for m in self.models:
            if m.key == key:
                return m
        return None

    @property
    def all_ready(self) -> bool:
        """Every declared model is pinned (or loaded once, for a finite keep_alive)."""
        return all(m.state in READY_STATES for m in self.models)

    def not_ready_reason(self) -> str | None:
        if not self.server_up:
            return "ollama serve is not ready"
        waiting = [m for m in self.models if m.state not in READY_STATES]
        if not waiting:
            return None
        parts = []
        for m in waiting:
            state = m.state.value
            if m.state == State.PULLING and m.pull_percent is not None:
                state = f"pulling {m.pull_percent}%"
            if m.reason and m.state == State.FAILED:
                state = f"failed: {m.reason}"
            parts.append(f"{m.spec.display} {state}")
        return "; ".join(parts)
