"""The option drift warning: a declared model found running with another context length than
the one the supervisor loaded, because a client reloaded it with its own `num_ctx`.

Ollama reloads a model whenever a request's runner options differ (ollama-behaviour.md §7.4),
so a client and the preload list that disagree on num_ctx reload each other, forever. An entry
that sets runner options wins (the supervisor loads its own back), and the warning names the
model, both values and the fix, once per change rather than every cycle. An entry without
runner options leaves them to the clients: the model is kept as the last client loaded it, and
nobody fights (`adopts_context`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import TypeVar

from ollama_preloader.config.modelspec import ModelSpec
from ollama_preloader.errors import OllamaAPIError
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import OllamaAPI
from ollama_preloader.reconcile.plan import find_loaded
from ollama_preloader.state.board import READY_STATES, ModelStatus

log = get_logger()
T = TypeVar("T")


def adopts_context(spec: ModelSpec) -> bool:
    """An entry without runner options: re-pin whatever runner a client left, as it is."""
    return not spec.options_dict()


async def note_loaded(api: OllamaAPI, status: ModelStatus, *, with_options: bool = True) -> None:
    """Right after one of the supervisor's loads, record the context length it got (and the
    runner's size and expiry, so `status` shows them at once, not a cycle later).

    Read at once rather than at the next cycle: a client that reloads the model with its own
    num_ctx within that second would otherwise be taken for what the supervisor loaded. If
    /api/ps cannot be read, the next cycle's look records it instead (check_context).
    """
    try:
        entry = find_loaded(status, await api.ps())
    except OllamaAPIError:
        return
    if entry is None:
        return
    status.size, status.size_vram = entry.size, entry.size_vram
    status.context_length, status.expires_at = entry.context_length, entry.expires_at
    status.listed_at = time.monotonic()  # runner start lines before this were our own load's
    if entry.context_length is not None:
        status.loaded_context, status.context_load = entry.context_length, status.loads
        # drift_context is kept: the client's runner this load replaced may still be compared
        # by its start line at the next look, and must not warn a second time. A look that
        # shows our own context again clears it (_compare), so a later change warns anew.
        if not with_options:
            status.default_context = entry.context_length  # what "no num_ctx" gives here


async def watching_context(
    api: OllamaAPI, status: ModelStatus, load: Awaitable[T], interval: float
) -> T:
    """Run one of the supervisor's loads while reading /api/ps every `interval`.

    A client whose request reloads the model with its own num_ctx leaves a gap in /api/ps while
    its runner loads (a model is listed only once loaded, ollama-behaviour.md §5.2), which the
    supervisor sees as an eviction and answers with a load of its own. That load waits behind
    the client's request, and only meanwhile is the client's runner, with its context length,
    listed: the watch loop itself is blocked on the load, so this is where it can be seen.
    """
    task = asyncio.ensure_future(load)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
            with contextlib.suppress(OllamaAPIError):
                entry = find_loaded(status, await api.ps())
                if entry is not None and entry.context_length is not None:
                    _compare(status, entry.context_length)
    finally:
        task.cancel()  # only has an effect when we are cancelled ourselves


def check_context(status: ModelStatus, observed: int | None, *, adopt: bool = False) -> int | None:
    """Record or compare the context length /api/ps shows for a loaded model.

    The first look after each of the supervisor's own loads records the value it loaded with,
    unless note_loaded already did; with `adopt` (an entry without runner options) every look
    does, since what a client loaded is what the model is kept with.
    Later looks that show another value are a drift: the first look at each new value logs
    `model.context_drift` and returns the value the supervisor loaded; otherwise None.
    """
    if observed is None or status.state not in READY_STATES:
        return None
    if adopt or status.context_load != status.loads:
        status.loaded_context, status.context_load = observed, status.loads
        status.drift_context = None
        return None
    return _compare(status, observed)


def note_runner_start(status: ModelStatus, context: int | None) -> None:
    """Ollama started a runner for this model's file with `context` (its log line, `run`).

    The real server answers a small model within milliseconds, so a client's runner may be
    replaced by the supervisor's own before any look at /api/ps lists it: its start line is
    where the client's context length shows. Only entries that set options fight for them.
    """
    if context is None or adopts_context(status.spec):
        return
    if context == status.loaded_context:
        # Our own load's runner. Only a look at /api/ps that lists ours clears the warned mark:
        # the client's runner it replaces may still be listed at the next look (seen in CI: a
        # second warning for one change).
        return
    _compare(status, context)


def _compare(status: ModelStatus, observed: int) -> int | None:
    """Warn when `observed` differs from what the supervisor loaded, once per new value."""
    expected = status.loaded_context
    if expected is None or observed == expected:
        status.drift_context = None
        return None
    if observed == status.drift_context:
        return None  # already warned about this one
    status.drift_context = observed
    status.context_drifts += 1
    _warn(status, expected, observed)
    return expected


def _warn(status: ModelStatus, expected: int, observed: int) -> None:
    spec = status.spec
    own = spec.options_dict().get("num_ctx")
    where = (
        f"the preload entry sets num_ctx={own}"
        if own is not None
        else "the preload entry sets no num_ctx (server default)"
    )
    log.warning(
        "model.context_drift",
        msg=f"{spec.display} was reloaded by a client with context length {observed}; the "
        f"supervisor loaded it with {expected} ({where}). Each time they disagree Ollama "
        f"reloads the model. Fix: set num_ctx on the preload entry "
        f"({spec.name}?num_ctx={observed}) or OLLAMA_CONTEXT_LENGTH={observed} to match the "
        f"clients, or make the clients send num_ctx={expected}",
        model=spec.display,
        loaded_context=expected,
        context=observed,
    )
