"""Desired vs observed -> actions. Pure: no I/O, no clock reads, no mutation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ollama_preloader.ollama.api import LoadedModel
from ollama_preloader.reconcile.capacity import waits_for_room
from ollama_preloader.state.board import READY_STATES, ModelStatus, State


class ActionKind(StrEnum):
    PULL = "pull"
    LOAD = "load"  # not in /api/ps: first load, or put back after an eviction
    REPIN = "repin"  # in /api/ps but no longer pinned: send the same load request again
    REFRESH = "refresh"  # pinned for a while: the same request again makes Ollama health-check
    # the runner and reload it if it crashed (ollama-behaviour.md §9.5)
    MISSING = "missing"  # not on disk and the pull policy forbids pulling
    UPDATE = "update"  # policy `always`: pull again in the background while the copy on disk serves


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    key: str
    reason: str


def find_loaded(status: ModelStatus, loaded: Sequence[LoadedModel]) -> LoadedModel | None:
    """The runner serving this model. Prefer a pinned one: after a re-pull (§9.4) the same
    name can be listed twice, once per digest. A name that shares its model file with another
    (§9.3) is served by the runner listed under the name that loaded it: matched by model
    file (blob) or, for a copy, by manifest digest."""
    matches = [m for m in loaded if m.key == status.key]
    if not matches and status.blob:
        matches = [m for m in loaded if m.blob == status.blob]
    if not matches and status.digest:
        # A copy (`ollama cp`) has the same manifest digest: known from /api/tags before the
        # name was ever loaded, so a name declared by a reload finds the runner it shares.
        matches = [m for m in loaded if m.digest == status.digest]
    if not matches:
        return None
    # The copy on disk first: an older download beside it is a stale runner, not the model.
    return max(
        matches,
        key=lambda m: (
            m.digest == status.digest,
            m.expires_at.timestamp() if m.expires_at else 0.0,
        ),
    )


def plan(
    models: Sequence[ModelStatus],
    loaded: Sequence[LoadedModel],
    *,
    pull_policy: str,
    now: datetime,
    monotonic_now: float,
    refresh_interval: float = float("inf"),
) -> list[Action]:
    """What to do this cycle, in priority order (the order of `models`)."""
    actions: list[Action] = []
    for status in models:
        if status.dead_runner is not None and status.retry_at <= monotonic_now:
            # Listed, but its runner is dead: the request makes Ollama start a new one.
            actions.append(Action(ActionKind.LOAD, status.key, "runner exited"))
            continue
        if status.state in (State.QUEUED, State.PULLING, State.LOADING) or status.swapping:
            continue  # an update swap pins the new copy itself (reconcile/updating.py)
        backing_off = status.retry_at > monotonic_now
        if status.state == State.WEDGED:
            # The probe killed its runner or unloaded it (probing.py): pin it again, listed
            # or not. Otherwise the probe alone decides when it serves again.
            if status.wedge_repin and not backing_off:
                actions.append(Action(ActionKind.LOAD, status.key, "wedged"))
            continue
        entry = find_loaded(status, loaded)
        spec = status.spec
        if entry is not None:
            if backing_off:
                continue
            if status.respec:
                # A live reload changed its request: the runner listed has the old one.
                actions.append(Action(ActionKind.LOAD, status.key, "changed"))
                continue
            if _new_download(status, entry):
                # Pulled again by someone else: the name now resolves to the new file, so the
                # same load request loads (and pins) the new copy beside the old runner.
                actions.append(Action(ActionKind.LOAD, status.key, "new download"))
                continue
            if _update_due(status, pull_policy, monotonic_now) and status.state in READY_STATES:
                actions.append(Action(ActionKind.UPDATE, status.key, "pull policy always"))
            if not spec.pinned:
                continue
            if not entry.is_pinned(now):
                actions.append(Action(ActionKind.REPIN, status.key, "unpinned"))
            elif (
                status.state == State.PINNED
                and monotonic_now - status.last_load_at >= refresh_interval
            ):
                actions.append(Action(ActionKind.REFRESH, status.key, "refresh"))
            continue
        if status.present is None:
            continue
        if backing_off:
            room = waits_for_room(status, monotonic_now)
            if room and status.present is False and pull_policy != "never":
                actions.append(Action(ActionKind.PULL, status.key, "not on disk"))
            continue
        if not spec.pinned and status.ever_loaded and not status.respec:
            continue  # a finite keep_alive was asked for: it may expire
        if not status.present:
            if pull_policy == "never":
                actions.append(Action(ActionKind.MISSING, status.key, "not on disk"))
            else:
                actions.append(Action(ActionKind.PULL, status.key, "not on disk"))
            continue
        if pull_policy == "always" and not status.pulled and status.update_failures == 0:
            actions.append(Action(ActionKind.PULL, status.key, "pull policy always"))
            continue
        reason = "changed" if status.respec else "evicted" if status.ever_loaded else "preload"
        actions.append(Action(ActionKind.LOAD, status.key, reason))
    return actions


def _new_download(status: ModelStatus, entry: LoadedModel) -> bool:
    """Only an older download of the model is loaded (a hand `ollama pull`, §9.4)."""
    return bool(
        status.spec.pinned
        and status.digest
        and entry.key == status.key
        and entry.digest != status.digest
        and not status.held
        and status.state in READY_STATES
    )


def _update_due(status: ModelStatus, pull_policy: str, monotonic_now: float) -> bool:
    """An update pull that failed (the copy on disk serves meanwhile) is due again."""
    return (
        pull_policy == "always"
        and not status.pulled
        and status.update_failures > 0
        and status.update_retry_at <= monotonic_now
    )


def next_look(
    models: Sequence[ModelStatus],
    *,
    monotonic_now: float,
    interval: float,
    settled_interval: float,
    refresh_interval: float = float("inf"),
) -> float:
    """Seconds until the next look at /api/ps when nothing wakes the loop sooner.

    `interval` while anything is unsettled (loading, failed, followed across a client's reload
    or an undeclared start): those are judged by the looks that follow. Once every model is
    pinned or loaded, `settled_interval` (`run`: its wakes see changes, the timer is a safety
    net), but never past a periodic refresh or an update retry that falls due.
    """
    due = monotonic_now + settled_interval
    for status in models:
        if (
            status.state not in READY_STATES
            or status.dead_runner is not None
            or status.client_reload
            or status.undeclared_watch is not None
            or status.respec
            or status.retry_at > monotonic_now
        ):
            return interval
        if status.update_retry_at > monotonic_now:
            due = min(due, status.update_retry_at)
        if status.state == State.PINNED:
            due = min(due, status.last_load_at + refresh_interval)
    # Overdue (a refresh that did not happen): the usual interval, never a spin.
    return due - monotonic_now if due > monotonic_now else interval
