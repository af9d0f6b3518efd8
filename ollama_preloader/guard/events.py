"""The guard's log events, rate limited: a client in a loop must not flood the log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ollama_preloader.guard.rewrite import Change
from ollama_preloader.observe.logs import get_logger

log = get_logger()

WINDOW = 60.0  # one event per (event, client, model, field) per window; the rest are counted
_MAX_KEYS = 4096


class Limiter:
    """Lets the first of each kind through per window; the next one says how many it hid."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last: dict[tuple[str, ...], float] = {}
        self._hidden: dict[tuple[str, ...], int] = {}

    def allow(self, key: tuple[str, ...]) -> int | None:
        """None to stay silent; otherwise how many of this kind were hidden since the last."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < WINDOW:
            self._hidden[key] = self._hidden.get(key, 0) + 1
            return None
        if len(self._last) >= _MAX_KEYS:
            self._last.clear()
            self._hidden.clear()
        self._last[key] = now
        return self._hidden.pop(key, 0)


class GuardEvents:
    """guard.rewrote, guard.rejected, guard.client.dropped, through one limiter."""

    def __init__(self, limiter: Limiter | None = None) -> None:
        self.limiter = limiter or Limiter()

    def rewrote(self, client: str, model: str, change: Change) -> None:
        hidden = self.limiter.allow(("rewrote", client, model, change.field))
        if hidden is None:
            return
        self._emit(
            "info",
            "guard.rewrote",
            f"Kept {model} pinned: {client} sent {change.field}={change.before}, "
            f"sent {change.after} instead",
            hidden,
            client=client,
            model=model,
            field=change.field,
            before=change.before,
            after=change.after,
        )

    def rejected(self, client: str, model: str, message: str) -> None:
        hidden = self.limiter.allow(("rejected", client, model))
        if hidden is not None:
            self._emit("warning", "guard.rejected", message, hidden, client=client, model=model)

    def dropped(self, client: str, model: str, endpoint: str, phase: str) -> None:
        """The client went away; the guard closed the upstream connection (Ollama sees a
        client drop, which can wedge the model's runner: ollama-behaviour.md §9.5a)."""
        hidden = self.limiter.allow(("dropped", client, model, endpoint))
        if hidden is None:
            return
        self._emit(
            "info",
            "guard.client.dropped",
            f"{client} went away ({phase}) from {endpoint} for {model}; cancelled upstream",
            hidden,
            client=client,
            model=model,
            endpoint=endpoint,
            phase=phase,
        )

    @staticmethod
    def _emit(level: str, event: str, msg: str, hidden: int, **fields: Any) -> None:
        if hidden:
            fields["suppressed"] = hidden
        getattr(log, level)(event, msg=msg, **fields)
