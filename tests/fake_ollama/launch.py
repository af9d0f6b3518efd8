"""Starting one runner for a load request: the fake llama-server is spawned and its load time
waited out, with the faults (load failure, out of memory), a timeout, a client that goes away
and a shutdown cutting it short."""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time
from typing import Any

from .catalog import DEFAULT_UNLOAD_SECONDS
from .envconfig import Settings
from .eventlog import Logger
from .faults import Faults
from .gotime import SECOND
from .options import SchedError
from .runners import LoadRequest, Runner, kill_process

OOM_MESSAGE = "llama-server reported out-of-memory during startup: cudaMalloc failed: out of memory"
DEFAULT_LOAD_FAIL = "llama-server process has terminated: exit status 2"


class RunnerLaunch:
    """Mixed into Scheduler (scheduler.py), whose state below it reads and updates."""

    settings: Settings
    log: Logger
    faults: Faults
    cond: threading.Condition
    procs: set[subprocess.Popen[bytes]]
    loaded: dict[str, Runner]
    load_counts: collections.Counter[str]
    stopping: bool

    def _unload_seconds(self, rt: dict[str, Any]) -> float:
        """How long an unloading runner stays listed: a GPU waits for its VRAM to come back;
        on CPU the kit's real server lists nothing once the runner is killed."""
        value = rt.get("unload_seconds")
        if value is None:
            return DEFAULT_UNLOAD_SECONDS if self.settings.gpu else 0.0
        return float(value)

    def _attempt(
        self, req: LoadRequest, ctx: int, rt: dict[str, Any]
    ) -> Runner | tuple[str, SchedError]:
        s = self.settings
        model = req.model
        parallel = 1 if model.is_embedding else max(1, s.num_parallel)
        need = int(rt.get("vram", model.size))
        args = [
            "--model",
            str(model.model_path),
            "--ctx-size",
            str(ctx * parallel),
            "--parallel",
            str(parallel),
            "--port",
            "0",
        ]
        if model.is_embedding:
            args.append("--embedding")
        # A Python that sleeps, named `llama-server` in /proc/<pid>/cmdline (argv[0]) with the
        # real one's flags after its script: what the supervisor's leftover search looks for.
        argv = ["llama-server", "-c", "import time; time.sleep(10**9)", *args]
        # Same process group as `ollama serve` (no new session), like the real server (§7.5).
        proc = subprocess.Popen(
            argv,
            executable=sys.executable,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        with self.cond:
            self.procs.add(proc)
            if self.stopping:
                kill_process(proc)
                return "error", SchedError(500, "server shutting down")
        self.log.slog_info(
            "llama_server.go:433",
            "starting llama-server",
            cmd=" ".join(["fake-llama-server", *args]),
            pid=proc.pid,
        )
        fail = self.faults.take("load_fail", model.display, model=True)
        oom = self.faults.take("load_oom", model.display, model=True) is not None or (
            s.gpu and need > s.vram
        )
        load_s = s.scaled(float(rt.get("load_seconds", 0.1)))
        fail_at = load_s * 0.5 if (fail is not None or oom) else None
        timeout_ns = s.load_timeout()
        timeout = None if timeout_ns is None else timeout_ns / SECOND
        start = time.monotonic()
        error: tuple[str, SchedError] | None = None
        while True:
            el = time.monotonic() - start
            if self.stopping:
                error = ("error", SchedError(500, "server shutting down"))
                break
            if req.is_gone():
                self.log.slog_info(
                    "server.go:1300",
                    "client connection closed before llama-server finished loading, aborting load",
                )
                self.log.event("load_aborted", model.display, pid=proc.pid)
                error = ("canceled", SchedError(499, "request canceled"))
                break
            if fail_at is not None and el >= fail_at:
                if oom:
                    error = ("oom", SchedError(500, OOM_MESSAGE))
                else:
                    assert fail is not None
                    status = int(fail.get("status", 500))
                    error = (
                        "error",
                        SchedError(status, str(fail.get("message", DEFAULT_LOAD_FAIL))),
                    )
                break
            if timeout is not None and el >= timeout:
                error = ("error", SchedError(500, "timed out waiting for llama-server to start"))
                break
            if el >= load_s:
                break
            time.sleep(max(0.0, min(0.02, load_s - el)))
        if error is not None:
            kill_process(proc)
            with self.cond:
                self.procs.discard(proc)
            if error[0] != "canceled":
                self.log.event("load_failed", model.display, error=error[1].message)
            return error
        self.log.slog_info(
            "server.go:1400",
            f"llama runner started in {time.monotonic() - start:.2f} seconds",
        )
        ka = req.keep_alive if req.keep_alive is not None else s.keep_alive()
        runner = Runner(
            key=req.key,
            model=model,
            opts=req.opts,
            options=req.options,
            context_length=ctx,
            parallel=parallel,
            session_duration=ka,
            proc=proc,
            size=need,
            size_vram=need if s.gpu else 0,
            token_seconds=s.scaled(float(rt.get("token_seconds", 0.002))),
            unload_seconds=s.scaled(self._unload_seconds(rt)),
            refcount=1,
            slots=threading.Semaphore(parallel),
        )
        req.loaded_ns = int((time.monotonic() - start) * SECOND)
        with self.cond:
            self.loaded[req.key] = runner
            self.load_counts[model.display] += 1
            self.cond.notify_all()
        self.log.event(
            "load",
            model.display,
            pid=proc.pid,
            keep_alive_ns=ka,
            context_length=ctx,
            options=req.opts.as_dict(),
            request_name=req.request_name,
        )
        return runner
