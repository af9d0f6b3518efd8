"""The model scheduler (§7): the load queue, keep_alive timers, eviction and reloads. Starting a
runner is launch.py's; request and runner options options.py's; a runner runners.py's."""

from __future__ import annotations

import collections
import contextlib
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from .envconfig import Settings
from .eventlog import Logger
from .faults import Faults
from .gotime import MAX_INT64, SECOND, duration_string, rfc3339nano
from .launch import RunnerLaunch
from .options import RUNNER_FIELDS, SchedError
from .runners import LoadRequest, Runner, kill_process
from .store import LocalModel

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
CTX_TIERS = (262144, 32768, 4096)


def _uint64(d: int) -> int:
    return d & ((1 << 64) - 1)


class Scheduler(RunnerLaunch):
    """Single-threaded load queue plus keep_alive timers, mirroring server/sched.go."""

    def __init__(
        self,
        settings: Settings,
        logger: Logger,
        faults: Faults,
        runtime_for: Callable[[LocalModel], dict[str, Any]],
    ) -> None:
        self.settings = settings
        self.log = logger
        self.faults = faults
        self.runtime_for = runtime_for
        self.cond = threading.Condition()
        self.loaded: dict[str, Runner] = {}
        self.pending: queue.Queue[LoadRequest | None] = queue.Queue(
            maxsize=max(1, settings.max_queue)
        )
        self.max_runners: int | None = None
        self.unload_seq = 0
        self.load_counts: collections.Counter[str] = collections.Counter()
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.stopping = False
        self._threads = [
            threading.Thread(target=self._process_loop, name="sched-pending", daemon=True),
            threading.Thread(target=self._timer_loop, name="sched-timers", daemon=True),
            threading.Thread(target=self._reap_loop, name="sched-reaper", daemon=True),
        ]

    def start(self) -> None:
        """Start the scheduler threads."""
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------ public API
    def get_runner(self, req: LoadRequest) -> Runner:
        """Block until a runner serves req (refcount taken) or raise SchedError."""
        with self.cond:
            r = self.loaded.get(req.key)
            if r is not None and not r.unloading and self._needs_reload(r, req) is None:
                self._use(r, req)
                return r
        try:
            self.pending.put_nowait(req)
        except queue.Full:
            raise SchedError(503, BUSY_MESSAGE) from None
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.runner is not None
        return req.runner

    def release(self, r: Runner) -> None:
        """A request using r finished: re-arm the keep_alive timer or unload."""
        with self.cond:
            r.refcount -= 1
            if r.refcount > 0:
                return
            r.refcount = 0
            if r.unloading:
                return
            if r.session_duration <= 0:
                self.log.slog_debug(
                    "sched.go:388", "runner with zero duration has gone idle, expiring to unload"
                )
                self._start_unload(r, "keep_alive")
                return
            r.deadline = time.monotonic() + r.session_duration / SECOND
            r.expires_at_ns = time.time_ns() + r.session_duration
            self.cond.notify_all()

    def expire_runner(self, model: LocalModel) -> bool:
        """keep_alive:0 unload fast path (expireRunner); True if a runner was loaded."""
        with self.cond:
            r = self.loaded.get(str(model.model_path))
            if r is None:
                return False
            if r.unloading:
                return True
            r.expires_at_ns = time.time_ns()
            r.deadline = None
            r.session_duration = 0
            if r.refcount <= 0:
                self._start_unload(r, "keep_alive_0")
            return True

    def evict(self, name: str, reason: str = "control") -> bool:
        """Scheduler-style eviction of the runner listed under name."""
        with self.cond:
            r = self._find_by_name(name)
            if r is None:
                return False
            self.log.event("evict", r.display, reason=reason, pid=r.pid)
            self._evict(r, reason)
            return True

    def crash_runner(self, name: str) -> int | None:
        """Kill a runner process but leave it listed (§9.5); returns the pid."""
        with self.cond:
            r = self._find_by_name(name)
            if r is None:
                return None
            pid = r.pid
            kill_process(r.proc)
        # The real server logs nothing when a runner dies: nothing watches it (§5.2). Its
        # warning comes with the next request for the model (see _process).
        self.log.event("runner_crash", r.display, pid=pid)
        return pid

    def runtime_oom(self) -> None:
        """expireRunnersForRuntimeOOM: every runner unloads once idle."""
        with self.cond:
            for r in list(self.loaded.values()):
                r.session_duration = 0
                r.deadline = None
                if r.refcount <= 0:
                    self._start_unload(r, "runtime_oom")

    def ps(self) -> list[dict[str, Any]]:
        """/api/ps models, sorted by expires_at, latest first."""
        now = time.time_ns()
        with self.cond:
            runners = list(self.loaded.values())
            # By whole seconds, as the kit's real v0.33 server sorts: two models pinned within
            # the same second may come in either order (observed), here in load order.
            runners.sort(key=lambda r: r.expires_ns(now) // SECOND, reverse=True)
            return [r.ps_entry(now) for r in runners]

    def state(self) -> list[dict[str, Any]]:
        """Detailed runner state for /_fake/state."""
        now = time.time_ns()
        out = []
        with self.cond:
            for r in self.loaded.values():
                out.append(
                    {
                        "model": r.display,
                        "key": r.key,
                        "digest": r.model.digest,
                        "pid": r.pid,
                        "alive": r.alive(),
                        "refcount": r.refcount,
                        "keep_alive_ns": r.session_duration,
                        "keep_alive": "forever"
                        if r.session_duration >= MAX_INT64
                        else duration_string(r.session_duration),
                        "pinned": r.session_duration >= MAX_INT64,
                        "expires_at": rfc3339nano(r.expires_ns(now)),
                        "options": r.opts.as_dict(),
                        "request_options": r.options,
                        "context_length": r.context_length,
                        "parallel": r.parallel,
                        "size": r.size,
                        "size_vram": r.size_vram,
                        "unloading": r.unloading,
                        "loaded_at": r.loaded_at,
                    }
                )
        return out

    def shutdown(self) -> None:
        """Stop threads and SIGKILL every runner process (also ones still loading)."""
        with self.cond:
            self.stopping = True
            procs = list(self.procs)
            self.cond.notify_all()
        with contextlib.suppress(queue.Full):
            self.pending.put_nowait(None)
        for p in procs:
            kill_process(p)

    # ------------------------------------------------------------- internals
    def _find_by_name(self, name: str) -> Runner | None:
        from .names import normalize

        want = normalize(name)
        for r in self.loaded.values():
            if normalize(r.display) == want or r.key == name:
                return r
        return None

    def _needs_reload(self, r: Runner, req: LoadRequest) -> str | None:
        if not r.alive():
            return "runner_died"
        new = req.opts
        for f in RUNNER_FIELDS:
            if f == "num_gpu" and new.num_gpu is not None and new.num_gpu < 0:
                continue
            if getattr(r.opts, f) != getattr(new, f):
                return "options"
        return None

    def _use(self, r: Runner, req: LoadRequest) -> None:
        r.refcount += 1
        r.deadline = None
        if req.keep_alive is not None:
            r.session_duration = req.keep_alive
        req.runner = r

    def _evict(self, r: Runner, reason: str) -> None:
        """Expire without touching expires_at; unload once idle (caller holds cond)."""
        r.deadline = None
        r.session_duration = 0
        if r.refcount <= 0:
            self._start_unload(r, reason)

    def _start_unload(self, r: Runner, reason: str) -> None:
        if r.unloading:
            return
        r.unloading = True
        r.deadline = None
        if r.unload_seconds <= 0:
            # A CPU runner dies at once on SIGKILL: the real CPU-only server has it out of
            # /api/ps before it answers the keep_alive:0 request (observed on the kit's v0.33).
            self._do_unload(r, reason)
            return
        threading.Thread(target=self._do_unload, args=(r, reason), daemon=True).start()

    def _do_unload(self, r: Runner, reason: str) -> None:
        kill_process(r.proc)
        self.log.slog_debug("sched.go:430", "runner released", model=r.display, reason=reason)
        if r.unload_seconds > 0:
            time.sleep(r.unload_seconds)
        with self.cond:
            self.procs.discard(r.proc)
            if self.loaded.get(r.key) is r:
                del self.loaded[r.key]
            self.unload_seq += 1
            self.cond.notify_all()
        self.log.event("unload", r.display, reason=reason, pid=r.pid)

    def _find_victim(self) -> Runner:
        runners = sorted(self.loaded.values(), key=lambda r: (_uint64(r.session_duration), r.key))
        for r in runners:
            if r.refcount <= 0:
                return r
        return runners[0]

    def _wait_unload_since(self, seq: int) -> None:
        while self.unload_seq == seq and not self.stopping:
            self.cond.wait(0.1)

    def _timer_loop(self) -> None:
        with self.cond:
            while not self.stopping:
                now = time.monotonic()
                nxt: float | None = None
                for r in list(self.loaded.values()):
                    if r.unloading or r.refcount > 0 or r.deadline is None:
                        continue
                    if r.deadline <= now:
                        r.deadline = None
                        self.log.event("expire", r.display, pid=r.pid)
                        self._start_unload(r, "expired")
                    elif nxt is None or r.deadline < nxt:
                        nxt = r.deadline
                self.cond.wait(1.0 if nxt is None else max(0.001, min(1.0, nxt - now)))

    def _reap_loop(self) -> None:
        """Collect runners that died on their own, as Go's exec does at once: a runner killed
        from outside must not linger as a zombie child of `ollama serve` (observed: the real
        server's killed llama-server is gone from the process table at once)."""
        while not self.stopping:
            with self.cond:
                procs = list(self.procs)
            for p in procs:
                p.poll()
            time.sleep(0.05)

    def _process_loop(self) -> None:
        while True:
            req = self.pending.get()
            if req is None or self.stopping:
                if req is not None:
                    req.fail(SchedError(500, "server shutting down"))
                return
            try:
                self._process(req)
            except Exception as e:  # keep the scheduler alive whatever happens
                self.log.slog_warn("sched.go:240", "fake scheduler error", error=repr(e))
                if not req.done.is_set():
                    req.fail(SchedError(500, str(e)))

    def _process(self, req: LoadRequest) -> None:
        s = self.settings
        while True:
            if req.is_gone():
                req.fail(SchedError(499, "request canceled"))
                return
            with self.cond:
                if self.stopping:
                    req.fail(SchedError(500, "server shutting down"))
                    return
                if self.max_runners is None:
                    self.max_runners = s.max_loaded_models or 3
                r = self.loaded.get(req.key)
                if r is not None:
                    seq = self.unload_seq
                    if r.unloading:
                        self._wait_unload_since(seq)
                        continue
                    reason = self._needs_reload(r, req)
                    if reason is None:
                        self._use(r, req)
                        req.succeed(r)
                        return
                    if reason == "runner_died":
                        # What the kit's real server logs here (v0.33, llama_server.go:1196).
                        code = r.proc.returncode or 0
                        self.log.slog_warn(
                            "llama_server.go:1196",
                            "llama-server process no longer running",
                            sys=-code if code < 0 else code,
                            string=f"signal: {(signal.strsignal(-code) or '').lower()}"
                            if code < 0
                            else f"exit status {code}",
                        )
                    self.log.event("reload", r.display, reason=reason, pid=r.pid)
                    self._evict(r, "reload")
                    self._wait_unload_since(seq)
                    continue
                victim: Runner | None = None
                why = ""
                if self.max_runners > 0 and len(self.loaded) >= self.max_runners:
                    victim, why = self._find_victim(), "max_loaded_models"
                elif s.gpu and self.loaded:
                    need = int(self.runtime_for(req.model).get("vram", req.model.size))
                    free = s.vram - sum(x.size_vram for x in self.loaded.values())
                    if need <= s.vram and need > 0.8 * free:
                        victim, why = self._find_victim(), "vram"
                if victim is not None:
                    seq = self.unload_seq
                    self.log.event("evict", victim.display, reason=why, for_model=req.model.display)
                    self._evict(victim, why)
                    self._wait_unload_since(seq)
                    continue
            self._load(req)
            return

    def _load(self, req: LoadRequest) -> None:
        s = self.settings
        rt = self.runtime_for(req.model)
        training = req.model.context_length
        auto = req.opts.num_ctx is None
        ctx = req.opts.num_ctx if req.opts.num_ctx is not None else min(s.default_num_ctx, training)
        retried = False
        while True:
            result = self._attempt(req, ctx, rt)
            if isinstance(result, Runner):
                req.succeed(result)
                return
            kind, err = result
            if kind == "oom" and not retried:
                lower = next((t for t in CTX_TIERS if t < ctx), None) if auto else None
                with self.cond:
                    others = list(self.loaded.values())
                if lower is None and not others:
                    req.fail(err)
                    return
                self.log.event(
                    "oom", req.model.display, evicting=[o.display for o in others], retry=True
                )
                if lower is not None:
                    ctx = min(lower, training)
                with self.cond:
                    for o in others:
                        self.log.event(
                            "evict", o.display, reason="oom", for_model=req.model.display
                        )
                        self._evict(o, "oom")
                    while self.loaded and not self.stopping:
                        self.cond.wait(0.1)
                retried = True
                continue
            if kind == "oom":
                self.log.event("oom", req.model.display, evicting=[], retry=False)
            req.fail(err)
            return
