"""The backoff of a failed model or an unreachable server: one formula for both, kept below
server/ and reconcile/ so each reaches it going down."""

from __future__ import annotations

from ollama_preloader.config.settings import Settings


def backoff_seconds(settings: Settings, failures: int, *, floor: float = 0.0) -> float:
    """Delay before retrying a model that failed `failures` times in a row (capped)."""
    delay = settings.retry_initial * 2.0 ** max(0, failures - 1)
    return max(floor, min(settings.retry_max * 5, delay))
