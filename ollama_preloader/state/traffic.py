"""Requests the guard saw, per model and outcome: what `status` and `/status` show.

The guard (guard/proxy.py) counts here; the status views read it from the Board. /metrics has
finer series (by endpoint and HTTP status); this is the short answer to "who is using which
model, and is the guard changing or refusing their requests".
"""

from __future__ import annotations

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
