"""Requests the guard saw, per model and outcome: what `status` and `/status` show.

The guard (guard/proxy.py) counts here; the status views read it from the Board. /metrics has
finer series (by endpoint and HTTP status); this is the short answer to "who is using which
model, and is the guard changing or refusing their requests".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

# What happened to one request, in the order `status` shows them.
OUTCOMES = ("ok", "error", "rejected", "unauthorized", "dropped", "unavailable")


def outcome_of(status: int, *, by_guard: bool = False) -> str:
    """One request's outcome from its HTTP status; `by_guard`: the guard answered it itself."""
    if status == 499:
        return "dropped"  # the client went away before its answer ended
    if by_guard and status == 400:
        return "rejected"
    if by_guard and status == 401:
        return "unauthorized"
    if by_guard and status == 503:
        return "unavailable"
    return "ok" if status < 400 else "error"


@dataclass
class ModelTraffic:
    outcomes: dict[str, int] = field(default_factory=dict)
    rewritten: int = 0  # requests with at least one field replaced

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.total,
            **{name: self.outcomes.get(name, 0) for name in OUTCOMES},
            "rewritten": self.rewritten,
        }


@dataclass
class GuardTraffic:
    """Per model label (the guard's bounded labels: declared names, a few undeclared ones,
    `(other)`, `(none)` for requests that name no model)."""

    models: dict[str, ModelTraffic] = field(default_factory=dict)

    def count(self, model: str, outcome: str, *, rewritten: bool) -> None:
        entry = self.models.setdefault(model, ModelTraffic())
        entry.outcomes[outcome] = entry.outcomes.get(outcome, 0) + 1
        if rewritten:
            entry.rewritten += 1

    def as_dict(self) -> dict[str, Any]:
        return {name: entry.as_dict() for name, entry in self.models.items()}


class ClientDrops:
    """Declared models whose client went away before its answer ended, for the probe.

    To Ollama a dropped client is a cancelled request, and a cancellation can leave the model's
    runner wedged (ollama-behaviour.md §9.5a): the guard notes the model here and the probe
    (reconcile/probing.py) looks at it soon instead of at its next interval. Shared state, so
    the guard below and the probe above meet without importing each other.
    """

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._event = asyncio.Event()

    def note(self, key: str) -> None:
        """A client of the model with this key (ModelStatus.key) went away mid-answer."""
        self._keys.add(key)
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """True as soon as a drop is noted (maybe already); False after `seconds`."""
        if not self._event.is_set():
            try:
                async with asyncio.timeout(max(0.0, seconds)):
                    await self._event.wait()
            except TimeoutError:
                return False
        return True

    def take(self) -> set[str]:
        """The models noted since the last take; the signal is cleared."""
        keys, self._keys = self._keys, set()
        self._event.clear()
        return keys
