"""Observing Ollama for the loop: /api/tags and /api/ps read, and applied to each model's state.

The reads: the store (/api/tags) only when it may have changed or the refresh interval is up,
the runners (/api/ps) every cycle, with shared runners resolved through /api/show. What they
mean: a model already pinned, evicted, served by another name's runner or an older download,
room freed for a model that gave way, and the memory estimate for the pinned set.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

from ollama_preloader.config.durations import format_seconds
from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import OllamaAPIError
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.observe.resources import (
    ModelSize,
    assess,
    describe_figures,
    gather_figures,
    held_by_runners,
)
from ollama_preloader.observe.summary import note_all_ready
from ollama_preloader.ollama.api import LoadedModel, LocalModel, OllamaAPI
from ollama_preloader.ollama.names import name_key
from ollama_preloader.reconcile import capacity, evictions
from ollama_preloader.reconcile.drift import adopts_context, check_context, note_runner_start
from ollama_preloader.reconcile.kinds import detect_kind
from ollama_preloader.reconcile.plan import find_loaded
from ollama_preloader.reconcile.runner_events import mark_client_reload
from ollama_preloader.reconcile.stale import note_stale
from ollama_preloader.reconcile.update_notice import DigestRecheck, ManifestStamps, server_store
from ollama_preloader.reconcile.updating import hold_name, is_hold
from ollama_preloader.server.base import Server
from ollama_preloader.server.runners import blob_name
from ollama_preloader.state.board import READY_STATES, Board, ModelStatus, Seen, State
from ollama_preloader.state.runner_facts import RunnerExit, RunnerInfo

log = get_logger()

# How long after Ollama's `starting llama-server` line for a model's file a model missing from
# /api/ps counts as being reloaded, though its new runner was not seen yet.
START_FRESH = 2.0


class Observer:
    """The loop's eyes: what Ollama has on disk and loaded, and what that means per model."""

    def __init__(self, settings: Settings, api: OllamaAPI, board: Board, server: Server) -> None:
        self.settings = settings
        self.api = api
        self.board = board
        self.server = server
        self.undeclared: list[LoadedModel] = []  # loaded, but not in OLLAMA_PRELOAD_MODELS
        self.tags_dirty = True  # the store may have changed: read /api/tags next cycle
        self._writes_seen = 0  # store-changing requests in Ollama's log at the last tags read
        self._old_blobs: dict[str, str | None] = {}  # model file before a new download
        self._tags_read_at = 0.0
        self._manifests = ManifestStamps(server_store(server.environment))
        self._recheck = DigestRecheck()
        # Model file of each runner /api/ps lists, by (name, digest): resolves shared runners.
        self._blobs: dict[tuple[str, str], str | None] = {}
        self._sizes_checked: tuple[ModelSize, ...] | None = None
        self._resources_warned: tuple[str, tuple[str, ...]] | None = None
        self.exits: list[RunnerExit] = []  # runners gone since the last look (`run` only)
        self._ps_read_at = 0.0  # when the /api/ps the next observe() gets was asked for
        # Keys /api/ps listed at the read before the last and at the last (this loop's and the
        # loader's reads after each load): what is new tells what pushed a model out.
        self._listed_before: set[str] = set()
        self._listed_last: set[str] = set()
        self._observed_at = time.monotonic()

    def listed_before(self) -> set[str]:
        """Keys /api/ps listed at the read before the last (after a load: before it)."""
        return self._listed_before

    def runner_exited(self, exit_: RunnerExit) -> None:
        """The runner watch saw a runner exit: judged at the next look (supervisor wakes it)."""
        self.exits.append(exit_)

    def declared_changed(self) -> None:
        """A live reload changed the declared set: read the store for the new models, and
        check the memory estimate for the new set."""
        self.tags_dirty = True
        self._sizes_checked = None

    def store_changed(self) -> None:
        """A pull, a deletion or a restart may have changed the store: read it next cycle."""
        self.tags_dirty = True

    async def read_tags(self) -> list[LocalModel] | None:
        """/api/tags when due (None otherwise); marks each model present or not, with its digest."""
        if time.monotonic() - self._tags_read_at > self.settings.refresh_interval:
            self.tags_dirty = True  # notice re-pulls and deletions made by hand, now and then
        if self.server.runners.store_writes != self._writes_seen:
            self.tags_dirty = True  # Ollama's log showed a pull, copy or delete (`run` only)
        if self._manifests.changed(s.spec.ref for s in self.board.models):
            self.tags_dirty = True  # a declared model's manifest was rewritten (`watch` too)
        if not self.tags_dirty:
            return None
        self._tags_read_at = time.monotonic()
        self._writes_seen = self.server.runners.store_writes
        tags = await self.api.tags()
        self._recheck.tags_read()
        on_disk = {m.key: m for m in tags}
        for status in self.board.models:
            local = on_disk.get(status.key)
            status.present = local is not None
            before, status.digest = status.digest, local.digest if local else None
            status.held = name_key(hold_name(status)) in on_disk
            if before and status.digest and before != status.digest and not status.swapping:
                await self._new_download(status)
        self.tags_dirty = False
        return [m for m in tags if not is_hold(m.name)]  # a hold is nobody's model

    async def _new_download(self, status: ModelStatus) -> None:
        """The copy on disk changed under a loaded model: its model file is another now (the
        old one's is kept to find the old runner's process)."""
        self._old_blobs[status.key] = status.blob
        try:
            status.blob = (await self.api.show(status.spec.name)).blob
        except OllamaAPIError:
            status.blob = None

    async def read_ps(self) -> list[LoadedModel]:
        """/api/ps, each runner with its model file when that is needed to match a model."""
        self._ps_read_at = time.monotonic()
        loaded = await self.api.ps()
        self._listed_before, self._listed_last = self._listed_last, {m.key for m in loaded}
        await self._learn_kinds(loaded)
        if self.exits:
            await self._resolve_blobs()
        return await self._with_blobs(loaded)

    async def _learn_kinds(self, loaded: list[LoadedModel]) -> None:
        """The kind of each declared model listed before the supervisor loaded it (already
        pinned at start, or loaded by a client): no load of ours asked /api/show for it."""
        listed = {m.key for m in loaded}
        for status in self.board.models:
            if status.kind is None and status.key in listed:
                try:
                    await detect_kind(self.api, status)
                except OllamaAPIError:
                    continue  # asked again at the next look

    async def _resolve_blobs(self) -> None:
        """A runner exited: the model file of each declared model names whose it was (models
        declared with kind= skipped /api/show until now)."""
        for status in self.board.models:
            if status.blob is None and status.ever_loaded:
                try:
                    status.blob = (await self.api.show(status.spec.name)).blob
                except OllamaAPIError:
                    continue

    async def _with_blobs(self, loaded: list[LoadedModel]) -> list[LoadedModel]:
        """Fill in each runner's model file, but only when a declared model is not listed under
        its own name: then it may be served by a runner loaded under another name (§9.3)."""
        names = {m.key for m in loaded}
        if not any(s.blob and s.key not in names for s in self.board.models):
            return loaded
        out = []
        for entry in loaded:
            cache_key = (entry.key, entry.digest)
            if cache_key not in self._blobs:
                try:
                    self._blobs[cache_key] = (await self.api.show(entry.name)).blob
                except OllamaAPIError:
                    out.append(entry)  # not cached: try again next cycle
                    continue
            out.append(dataclasses.replace(entry, blob=self._blobs[cache_key]))
        return out

    def _warn_once(
        self, status: ModelStatus, key: str, event: str, msg: str, **fields: Any
    ) -> None:
        if key not in status.warned:
            status.warned.add(key)
            log.warning(event, msg=msg, model=status.spec.display, **fields)

    def _observe_runner(
        self, status: ModelStatus, entry: LoadedModel, loaded: list[LoadedModel]
    ) -> None:
        """One-off warnings about how a declared model is being served."""
        spec = status.spec
        if entry.key != status.key:
            status.shared_with = entry.name
            self._warn_once(
                status,
                f"shared:{entry.key}",
                "model.shared_runner",
                f"{spec.display} shares its model file with {entry.name} and is served by its "
                "runner; it counts as pinned while that runner is",
                shared_with=entry.name,
            )
            other = self.board.get(entry.key)
            if other is not None and other.spec.options != spec.options:
                self._warn_once(
                    status,
                    f"shared-options:{entry.key}",
                    "model.shared_options",
                    f"{spec.display} and {other.spec.display} share a model file but have "
                    "different options, so requests for one reload the other; give them the "
                    "same options",
                    shared_with=other.spec.display,
                )
        else:
            status.shared_with = None
        runners = [m.digest for m in loaded if m.key == status.key]
        if self._recheck.unknown(status.key, status.digest, runners):
            self.tags_dirty = True  # read what is on disk before calling a runner stale
            return
        note_stale(
            status,
            entry,
            loaded,
            old_blob=blob_name(self._old_blobs.get(status.key)),
            runners=self.server.runners.known(),
        )

    def observe(self, loaded: list[LoadedModel]) -> None:
        """Apply one look at /api/ps to each declared model: pinned, evicted, warnings."""
        now = datetime.now(UTC)
        mono = time.monotonic()
        exits, self.exits = self._exits_to_judge()
        # A fresh look at the processes only when something left or exited (it costs /proc
        # reads); the pids said in messages come from the watch's last look.
        missing = any(find_loaded(m, loaded) is None for m in self.board.models)
        runners = self.server.runners.current() if exits or missing else self.server.runners.known()
        keys = set()
        # Runner starts and this listing compared in the order they happened: starts before
        # /api/ps was asked come first, so a client's runner that ours had replaced by then is
        # judged before the listing that shows ours clears the drift mark (no second warning).
        asked = self._ps_read_at if self._observed_at < self._ps_read_at <= mono else mono
        for status in self.board.models:
            entry = find_loaded(status, loaded)
            blob = blob_name(status.blob)
            for started in self.server.runners.starts_since(blob, self._observed_at, asked):
                note_runner_start(status, started)
            if entry is not None:
                keys.add(entry.key)
                self._observe_runner(status, entry, loaded)
                status.size, status.size_vram = entry.size, entry.size_vram
                status.context_length, status.expires_at = entry.context_length, entry.expires_at
                status.listed_at = mono
                status.runner_pid = next((r.pid for r in runners if r.blob == blob), None)
                # A runner of this file just exited: the listing may predate a client's reload
                # (its new runner still loading), so it is no proof of the pinned runner yet.
                exited = blob is not None and any(e.runner.blob == blob for e in exits)
                if status.state == State.PINNED and entry.is_pinned(now) and not exited:
                    status.last_pinned = Seen(
                        status.runner_pid, entry.context_length, entry.expires_at
                    )
                check_context(status, entry.context_length, adopt=adopts_context(status.spec))
            else:
                status.size = status.size_vram = status.context_length = status.expires_at = None
                status.runner_pid = None
            for started in self.server.runners.starts_since(blob, asked):
                note_runner_start(status, started)
            gone = [e for e in exits if blob is not None and e.runner.blob == blob]
            if gone and self._judge_exit(status, entry, gone[-1], runners):
                continue
            if status.client_reload:
                self._follow_client_reload(status, entry, now, runners)
                continue
            if status.undeclared_watch is not None:
                self._follow_undeclared(status, loaded, mono)
            if status.state in (State.QUEUED, State.PULLING, State.LOADING) or status.swapping:
                continue
            if status.state == State.WEDGED:
                # Listed, yet not serving: the probe owns it. Gone and not being re-pinned
                # (unloaded by hand meanwhile): load it again like any evicted model.
                if entry is None and not status.wedge_repin:
                    status.state, status.reason = State.EVICTED, "evicted"
                continue
            if status.retry_at > mono:
                continue  # gave way (capacity) or failed: leave it alone until its retry
            if entry is not None and status.state == State.EXPIRED:
                status.state, status.reason = State.LOADED, None  # a client loaded it again
            elif entry is not None and status.state not in (State.PINNED, State.LOADED):
                # A changed entry (respec) is pinned with its old request: not "already" ours.
                if status.spec.pinned and entry.is_pinned(now) and not status.respec:
                    # Already pinned before we asked (another run of ours, or a sidecar restart).
                    status.state, status.reason = State.PINNED, None
                    status.ever_loaded, status.last_load_at = True, mono
                    log.info(
                        "model.pinned",
                        msg=f"✓ {status.spec.display} is already loaded and pinned",
                        model=status.spec.display,
                        already=True,
                    )
            elif entry is None and status.state == State.LOADED:
                status.state, status.reason = State.EXPIRED, None
                log.info(
                    "model.expired",
                    msg=f"{status.spec.display} is no longer loaded (its keep_alive of "
                    f"{format_seconds(status.spec.keep_alive)} let it expire); the supervisor "
                    "leaves it so, Ollama loads it again on the next request",
                    model=status.spec.display,
                    keep_alive=status.spec.keep_alive_value,
                )
            elif entry is None and status.state == State.PINNED:
                if adopts_context(status.spec) and self._client_reloading(status, runners):
                    mark_client_reload(status)
                    continue
                self._evicted(status, loaded, mono)
        self.undeclared = [m for m in loaded if m.key not in keys]
        self.board.observed_restarts = self.board.server_restarts
        self._observed_at = mono
        self._note_capacity_freed(len(loaded))
        note_all_ready(self.board)

    def _evicted(self, status: ModelStatus, loaded: list[LoadedModel], now: float) -> None:
        """A pinned model left /api/ps: say what took its place, if anything, and put it back.

        Only declared models taking its place count for the reload-storm guard (`pushed_by`);
        an undeclared one is named in a warning; nothing new listed is a client's unload.
        """
        declared, other = evictions.newcomers(
            status, self.board.models, loaded, self._listed_before
        )
        status.state, status.reason = State.EVICTED, "evicted"
        status.pushed_by = tuple(declared)
        if declared or other:
            how = f"pushed out by {', '.join(declared or other)}"
            how += "" if declared else " (not declared)"
        elif self._undeclared_starting(status):
            # Its runner is loading and not listed yet: wait one look or two to name it (and
            # not queue our load behind it).
            status.undeclared_watch = (frozenset(self._listed_before), now + START_FRESH)
            status.retry_at = now + START_FRESH
            how = "pushed out by a model that is not declared, still loading"
        else:
            how = "unloaded, nothing in its place (`ollama stop`, keep_alive 0, a restart)"
        log.warning(
            "model.evicted",
            msg=f"{status.spec.display} was {how}; loading it again",
            model=status.spec.display,
            by=declared or other,
            declared=bool(declared),
        )
        if other and not declared:
            evictions.warn_undeclared(status, other, now)

    def _undeclared_starting(self, status: ModelStatus) -> bool:
        """Did Ollama start a runner for a file no declared model uses since the last look
        that listed `status`? (`run` only: it sees the runner starts.)"""
        declared = {blob_name(s.blob) for s in self.board.models}
        started = self.server.runners.blobs_started_since(status.listed_at)
        return bool(started - declared)

    def _follow_undeclared(
        self, status: ModelStatus, loaded: list[LoadedModel], now: float
    ) -> None:
        """Waiting to name the undeclared model that pushed `status` out: once it is listed,
        warn and put `status` back at once; after START_FRESH, put it back anyway."""
        before, until = status.undeclared_watch or (frozenset(), 0.0)
        _, other = evictions.newcomers(status, self.board.models, loaded, set(before))
        if other or now >= until or status.state != State.EVICTED:
            status.undeclared_watch = None
            status.retry_at = 0.0 if status.state == State.EVICTED else status.retry_at
        if other:
            evictions.warn_undeclared(status, other, now)

    def _exits_to_judge(self) -> tuple[list[RunnerExit], list[RunnerExit]]:
        """(exits the /api/ps just read can judge, exits seen after it was asked for)."""
        ready = [e for e in self.exits if e.at <= self._ps_read_at]
        later = [e for e in self.exits if e.at > self._ps_read_at]
        return ready, later

    def _judge_exit(
        self,
        status: ModelStatus,
        entry: LoadedModel | None,
        exit_: RunnerExit,
        runners: list[RunnerInfo],
    ) -> bool:
        """A runner of this model's file exited. A crash (Ollama still lists the model and no
        other runner serves the file) is reloaded at once; True when it was one.

        A runner that exits because Ollama unloaded the model (gone from /api/ps) or replaced
        it (a new runner for the same file: a client's request found it dead, or reloaded it
        with other options) is no crash.
        """
        blob = exit_.runner.blob
        if entry is None or any(r.blob == blob for r in runners):
            if entry is not None:
                status.replaced = exit_  # said when it is re-pinned (a client's request)
            log.debug(
                "model.runner_gone",
                msg=f"The runner of {status.spec.display} (pid {exit_.runner.pid}) exited; "
                + ("another serves it now" if entry is not None else "Ollama unloaded it"),
                model=status.spec.display,
                pid=exit_.runner.pid,
            )
            return False
        if entry.key != status.key or not status.spec.pinned:
            return False  # served under another name: that name's entry reloads it
        if status.state not in READY_STATES:
            return False  # being pulled or loaded already
        status.dead_runner = exit_
        status.state, status.reason = State.LOADING, "runner exited"
        note_all_ready(self.board)
        return True

    def _client_reloading(self, status: ModelStatus, runners: list[RunnerInfo]) -> bool:
        """Left /api/ps, yet a runner for its file runs or Ollama just started one: a client's
        request is reloading it (another num_ctx), not an eviction."""
        blob = blob_name(status.blob)
        if blob is None:
            return False
        if any(r.blob == blob for r in runners):
            return True
        # A start line alone (its runner not seen yet) counts only while it is fresh.
        since = max(status.listed_at, time.monotonic() - START_FRESH)
        return bool(self.server.runners.starts_since(blob, since))

    def _follow_client_reload(
        self,
        status: ModelStatus,
        entry: LoadedModel | None,
        now: datetime,
        runners: list[RunnerInfo],
    ) -> None:
        """Listed again: pinned already, or back to `pinned` so the plan re-pins it. Gone
        without a runner: the client's load failed or stopped; load it as after an eviction."""
        if entry is None:
            if self._client_reloading(status, runners):
                return
            status.client_reload = False
            status.state, status.reason = State.EVICTED, "evicted"
            log.warning(
                "model.evicted",
                msg=f"{status.spec.display} was not reloaded by the client after all; "
                "loading it again",
                model=status.spec.display,
            )
            return
        status.client_reload = False
        status.state, status.reason = State.PINNED, None
        if entry.is_pinned(now):
            status.loaded_context, status.context_load = entry.context_length, status.loads
            log.info(
                "model.pinned",
                msg=f"✓ {status.spec.display} was reloaded and pinned by a client's request "
                f"(context length {entry.context_length}); kept as it is",
                model=status.spec.display,
                already=True,
                context=entry.context_length,
            )

    def _note_capacity_freed(self, runners: int) -> None:
        """A model that gave way is retried early once fewer runners are loaded than when it
        gave way, and every model before it in the list is resident."""
        for status in self.board.models:
            if status.capacity_loaded is None or runners >= status.capacity_loaded:
                continue
            if capacity.oom_hour_opens(status.oom_times) > time.monotonic():
                continue  # its out-of-memory loads this hour are used up, room or not
            before = [m for m in self.board.models if m.spec.priority < status.spec.priority]
            if all(m.state in READY_STATES for m in before):
                status.capacity_loaded, status.retry_at = None, 0.0
                log.info(
                    "capacity.freed",
                    msg=f"Fewer models are loaded now; trying {status.spec.display} again",
                    model=status.spec.display,
                    runners=runners,
                )

    async def check_resources(self, tags: list[LocalModel], loaded: list[LoadedModel]) -> None:
        """Warn, before loading, when the pinned models clearly cannot all fit; an estimate.

        Sizes come from /api/tags, so a model is counted once it is pulled: this runs again
        whenever the sizes known change. It never stops anything.
        """
        if not self.server.memory_is_local:
            return  # this machine's memory says nothing about a server elsewhere
        on_disk = {m.key: m for m in tags}
        sizes = tuple(
            ModelSize(
                s.spec.display,
                on_disk[s.key].size if s.key in on_disk else None,
                on_disk[s.key].digest if s.key in on_disk else "",
            )
            for s in self.board.models
            if s.spec.pinned  # a finite keep_alive lets the model go again
        )
        if not sizes or sizes == self._sizes_checked:
            return
        self._sizes_checked = sizes
        figures = await gather_figures(self.server.environment, self.server.compute_lines())
        held_system, held_gpu = held_by_runners(
            [(m.size, m.size_vram) for m in loaded], has_gpus=bool(figures.gpus)
        )
        findings = assess(sizes, figures, held_system=held_system, held_gpu=held_gpu)
        log.debug(
            "resources.checked",
            msg=f"Memory for the models: {describe_figures(figures)}",
            models=sum(1 for m in sizes if m.size is not None),
            needed=sum(m.size or 0 for m in sizes),
            fits=not findings,
        )
        for finding in findings:
            key = (finding.scope, finding.over)
            if key == self._resources_warned:
                continue
            self._resources_warned = key
            system, gpus = figures.system, figures.gpus
            log.warning(
                "resources.warning",
                msg=finding.message,
                estimate=True,
                scope=finding.scope,
                models=list(finding.models),
                over=list(finding.over),
                unknown=list(finding.unknown),
                needed=finding.needed,
                available=finding.available,
                held=finding.held,
                system_total=system.total if system else None,
                system_available=system.available if system else None,
                gpu_total=sum(g.total for g in gpus) if gpus else None,
                gpu_free=sum(g.free for g in gpus) if gpus else None,
                gpu_source=figures.gpu_source,
            )
