"""Pulling: one model's pull (progress, retries, the reason it failed) and the supervisor's queue.

`pull_model` is shared by the supervisor's `PullQueue` and the `pull` command (build-time
baking), so both retry, report progress and word failures the same way.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable

from tenacity import RetryCallState

from ollama_preloader.config.durations import format_seconds
from ollama_preloader.config.modelspec import ModelSpec
from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import (
    OllamaAPIError,
    PullStreamError,
    RegistryProblem,
    RegistryTLSError,
)
from ollama_preloader.observe import terminal
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import OllamaAPI
from ollama_preloader.reconcile import capacity
from ollama_preloader.reconcile.retry import fail, pull_retrying
from ollama_preloader.state.backoff import backoff_seconds
from ollama_preloader.state.board import Board, ModelStatus, State

log = get_logger()

PROGRESS_EVERY = 5.0  # seconds between pull progress events off a TTY
# A name the registry does not know, or a registry the configuration cannot reach, will not
# change soon: pull again after this long rather than on the usual backoff.
PERMANENT_BACKOFF = 600.0


def is_not_found(exc: OllamaAPIError) -> bool:
    """The registry does not know the name: retrying soon will not help."""
    return isinstance(exc, PullStreamError) and "file does not exist" in exc.message


def permanent_backoff(exc: OllamaAPIError) -> float | None:
    """The long wait before pulling again after a failure only a change can fix, else None."""
    if is_not_found(exc) or isinstance(exc, RegistryTLSError):
        return PERMANENT_BACKOFF
    return None


def failure_reason(exc: OllamaAPIError, spec: ModelSpec) -> str:
    """The `failed` reason a user reads for a pull that gave up."""
    if is_not_found(exc):
        return (
            "not found in the registry (pull model manifest: file does not exist); "
            "check the name and tag"
        )
    if isinstance(exc, RegistryTLSError):
        message = exc.message.strip()
        fix = _registry_fix(exc.problem, _registry_in(message), spec.source)
        return f"{fix} (Ollama: {message})"
    if isinstance(exc, PullStreamError):
        return f"pull failed: {exc.message}"
    return f"pull failed: {exc}"


def _registry_in(message: str) -> str:
    """The host Ollama was talking to, from the URL in its error (a registry or its blob host)."""
    match = re.search(r"https?://([^/\"\s]+)", message)
    return f"the registry {match.group(1)}" if match else "the registry"


def _registry_fix(problem: RegistryProblem, registry: str, source: str) -> str:
    # SSL_CERT_FILE is read by `ollama serve` (Go's crypto/x509), not by the supervisor: it
    # only has to be in the environment the server starts with, and `run` passes its own on.
    ca = (
        "set SSL_CERT_FILE=/path/ca.pem (that CA's certificate) in the environment of "
        "ollama serve; the supervisor passes its own environment on"
    )
    if problem is RegistryProblem.PLAIN_HTTP:
        return (
            f"{registry} speaks plain HTTP and Ollama uses HTTPS unless told otherwise; "
            f"add ?insecure=true to this entry of {source}"
        )
    if problem is RegistryProblem.HTTPS_ONLY:
        return (
            f"{registry} speaks HTTPS but insecure=true makes Ollama use plain HTTP; "
            f"remove insecure=true from this entry of {source}"
        )
    if problem is RegistryProblem.UNKNOWN_CA:
        return f"ollama serve does not trust the CA that signed the certificate of {registry}; {ca}"
    return (
        f"ollama serve refused the certificate of {registry}; fix the certificate (its names, "
        f"its dates), or if a private CA signed it, {ca}"
    )


async def pull_model(
    api: OllamaAPI, settings: Settings, status: ModelStatus, *, background: bool = False
) -> float:
    """Pull one model with retries (PRELOADER_PULL_ATTEMPTS); return the seconds it took.

    Logs start, progress, each retry and completion, and keeps the progress on `status`.
    Raises the last OllamaAPIError when every attempt failed; the caller decides what a
    failure means (the supervisor retries later, the `pull` command reports it).
    """
    spec = status.spec
    if not background:  # an update behind a loaded copy leaves its state alone
        status.state, status.reason = State.PULLING, None
    status.pull_completed = status.pull_total = 0
    log.info("model.pull.start", msg=f"Pulling {spec.display}", model=spec.display)
    started = time.monotonic()

    def on_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "model.pull.retry",
            msg=f"Pulling {spec.display} failed ({exc}); attempt {state.attempt_number + 1} "
            f"of {settings.pull_attempts} in {wait:.1f}s",
            model=spec.display,
            attempt=state.attempt_number,
            error=str(exc),
            wait=round(wait, 2),
        )

    terminal.pull_started(spec.display)
    try:
        async for attempt in pull_retrying(settings, on_retry):
            with attempt:
                try:
                    await _pull_once(api, status)
                except OllamaAPIError:
                    status.pull_failures += 1
                    raise
    finally:
        terminal.pull_finished(spec.display)
    elapsed = time.monotonic() - started
    status.present, status.pulled = True, True
    await _complete_total(api, status)
    log.info(
        "model.pull.complete",
        msg=f"✓ Pull complete: {spec.display} ({elapsed:.1f}s)",
        model=spec.display,
        seconds=round(elapsed, 3),
        bytes=status.pull_total,
    )
    return elapsed


async def _pull_once(api: OllamaAPI, status: ModelStatus) -> None:
    spec = status.spec
    last_log = 0.0
    layers: dict[str, tuple[int, int]] = {}
    async for progress in api.pull(spec.name, insecure=spec.insecure):
        if progress.digest and progress.total:
            _count_bytes(status, progress.digest, progress.completed, progress.total)
            layers[progress.digest] = (progress.completed, progress.total)
            status.pull_completed = sum(c for c, _ in layers.values())
            status.pull_total = sum(t for _, t in layers.values())
            if terminal.pull_progress(spec.display, status.pull_completed, status.pull_total):
                continue  # a live bar shows it; no periodic events on a terminal
        now = time.monotonic()
        if progress.digest and now - last_log >= PROGRESS_EVERY:
            last_log = now
            percent = status.pull_percent
            log.info(
                "model.pull.progress",
                msg=f"Pulling {spec.display}: {percent}%",
                model=spec.display,
                percent=percent,
                completed=status.pull_completed,
                total=status.pull_total,
            )
    # The stream ended with success: every layer is on disk. Ollama reports progress on a
    # 60 ms tick and sends no final line, so the last numbers seen are usually short of it.
    for digest, (_, total) in layers.items():
        _count_bytes(status, digest, total, total)
    status.pull_completed = status.pull_total
    terminal.pull_progress(spec.display, status.pull_completed, status.pull_total)


async def _complete_total(api: OllamaAPI, status: ModelStatus) -> None:
    """Make `pull_total` the model's whole size when the stream showed only part of it.

    The real server sends a blob's progress on a 60 ms tick, and one fetched within the first
    tick (a small model, a fast registry or a redirect to a blob store) shows no line at all,
    so the stream alone can report 0 bytes. /api/tags has the stored size of every layer.
    """
    try:
        stored = {m.key: m.size for m in await api.tags()}
    except OllamaAPIError:
        return  # the figure from the stream stands; the pull itself succeeded
    size = stored.get(status.spec.key, 0)
    if size > status.pull_total:
        status.pull_total = status.pull_completed = size


def _count_bytes(status: ModelStatus, digest: str, completed: int, total: int) -> None:
    """Add what this progress line shows was downloaded to `status.pull_bytes`.

    A layer already on disk first shows up complete (ollama-behaviour.md §6): nothing was
    downloaded. A layer resumed after a failed attempt continues from what was counted then.
    """
    counted = status.pull_counted.get(digest)
    if counted is None:
        counted = total if completed >= total else 0
    if completed > counted:
        status.pull_bytes += completed - counted
        counted = completed
    status.pull_counted[digest] = counted


class PullQueue:
    """The supervisor's pulls: one model at a time, highest priority first, while loads go on."""

    def __init__(
        self,
        settings: Settings,
        api: OllamaAPI,
        board: Board,
        *,
        store_changed: Callable[[], None],
        wake: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.api = api
        self.board = board
        self._store_changed = store_changed  # a pull (or its failure) changes the store
        self._wake = wake  # a pull that ends starts the next cycle at once
        self._pulls: asyncio.PriorityQueue[tuple[int, str]] = asyncio.PriorityQueue()
        self._queued: set[str] = set()
        self._background: set[str] = set()  # queued updates of models that stay served
        self._running: tuple[str, asyncio.Task[None]] | None = None
        # Models pulled while they wait for room (capacity): the reason and retry time to go
        # back to, so the pull never lets the load jump the wait.
        self._held: dict[str, tuple[str, float]] = {}

    async def put(self, status: ModelStatus, *, background: bool = False) -> None:
        """Queue a pull of `status`, unless one is queued or running already. `background`:
        an update of a model that stays served (and in its state) meanwhile."""
        if status.key not in self._queued:
            self._queued.add(status.key)
            if capacity.waits_for_room(status, time.monotonic()):
                # Pulled while its load waits for room: it gives way again once on disk.
                self._held[status.key] = (status.reason or "", status.retry_at)
            if background:
                self._background.add(status.key)
            else:
                # `pulling` only once its pull starts (pull_model): one runs at a time.
                status.state = State.QUEUED
            await self._pulls.put((status.spec.priority, status.key))

    def release_limit_holds(self) -> None:
        """A live reload judges again who fits under an explicit OLLAMA_MAX_LOADED_MODELS: a
        model queued or pulled while the limit kept it out (a wait with no end) is no longer
        sent back to that wait once on disk, and its load no longer waits for a retry time.
        apply_explicit_limit decides anew."""
        for key, (_, retry_at) in list(self._held.items()):
            if not math.isinf(retry_at):
                continue
            del self._held[key]
            status = self.board.get(key)
            if status is not None and status.state in (State.QUEUED, State.PULLING):
                status.retry_at, status.failures = 0.0, 0

    def forget(self, keys: set[str]) -> None:
        """Models a live reload removed: a queued pull is skipped, a running one cancelled
        (the download stops; Ollama keeps the layers it has, so a later pull resumes)."""
        self._queued -= keys
        for key in keys:
            self._held.pop(key, None)
        if self._running is not None and self._running[0] in keys:
            self._running[1].cancel()

    async def run(self) -> None:
        """The worker: a main-loop task."""
        while True:
            _, key = await self._pulls.get()
            status = self.board.get(key)
            background = key in self._background
            self._background.discard(key)
            # Off the Board (a live reload removed it), or queued twice and pulled already.
            if status is None or (status.state != State.QUEUED and not background):
                self._queued.discard(key)
                continue
            # Its own task, awaited at once, only so that `forget` can cancel this one pull
            # and not the worker; cancelling the worker cancels it too.
            pull = asyncio.create_task(self._pull(status, background=background))
            self._running = (key, pull)
            try:
                await pull
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                log.info(
                    "model.pull.cancelled",
                    msg=f"Stopped pulling {status.spec.display}: it is no longer declared",
                    model=status.spec.display,
                )
            finally:
                self._running = None
                self._queued.discard(key)
                self._wake.set()

    async def _pull(self, status: ModelStatus, *, background: bool = False) -> None:
        # Policy `always` with a copy on disk: that copy can serve, so the first update pull
        # makes one attempt and a failure only delays the update (retried in the background).
        update = self.settings.pull_policy == "always" and status.present is True
        settings = self.settings
        if update and not background:
            settings = settings.model_copy(update={"pull_attempts": 1})
        try:
            await pull_model(self.api, settings, status, background=background)
        except OllamaAPIError as exc:
            held = self._held.pop(status.key, None)
            if update:
                self._update_failed(status, exc, background=background)
            else:
                self._pull_failed(status, failure_reason(exc, status.spec), permanent_backoff(exc))
            if held is not None:
                status.retry_at = max(status.retry_at, held[1])
            return
        # Read only now: a live reload may have ended the wait meanwhile (release_limit_holds).
        held = self._held.pop(status.key, None)
        self._store_changed()  # the new model's size, for the memory check
        status.update_failures = 0
        if background:
            # The runner in memory is the old copy: load the name again (a no-op for Ollama
            # when the pull brought nothing new).
            status.respec = True
            return
        if capacity.waits_for_room(status, time.monotonic()):
            return  # made to give way while it was pulled (a reload's new order): it stays so
        status.state = State.EVICTED if status.ever_loaded else State.PENDING
        status.failures = 0
        if held is not None:
            status.state, status.reason = State.FAILED, held[0]
            status.retry_at = held[1]

    def _update_failed(self, status: ModelStatus, exc: OllamaAPIError, *, background: bool) -> None:
        status.update_failures += 1
        delay = permanent_backoff(exc) or backoff_seconds(
            self.settings, status.update_failures, floor=self.settings.retry_max
        )
        status.update_retry_at = time.monotonic() + delay
        if not background:
            status.state, status.reason = (
                (State.EVICTED if status.ever_loaded else State.PENDING),
                None,
            )
        self._store_changed()
        reason = failure_reason(exc, status.spec)
        log.warning(
            "model.update_failed",
            msg=f"Could not update {status.spec.display} ({reason}); serving the copy on "
            f"disk, trying the update again in {format_seconds(delay)}",
            model=status.spec.display,
            reason=reason,
            retry_in=round(delay, 1),
        )

    def _pull_failed(self, status: ModelStatus, reason: str, retry_in: float | None) -> None:
        delay = retry_in or backoff_seconds(
            self.settings, status.failures + 1, floor=self.settings.retry_max
        )
        self._store_changed()
        fail(status, reason, delay)
