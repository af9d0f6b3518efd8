"""The events that say what happened to a model's runner: it exited, a client is reloading it, or
a client's request un-pinned it (and what was seen that says so).

Shared by observation.py (what a look at /api/ps and the runners means) and loading.py (acting on
it), so each event is worded in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ollama_preloader.config.durations import format_seconds
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.reconcile.drift import adopts_context
from ollama_preloader.state.board import ModelStatus, State
from ollama_preloader.state.runner_facts import ExitStatus, RunnerExit

log = get_logger()


def mark_client_reload(status: ModelStatus) -> None:
    """Wait for the client's runner instead of loading ours over it; re-pin it once listed."""
    status.client_reload = True
    status.state, status.reason = State.LOADING, "a client's request is reloading it"
    log.info(
        "model.client_reload",
        msg=f"{status.spec.display} left /api/ps while a client's request reloads it; "
        "waiting for that runner, to pin it as it is",
        model=status.spec.display,
    )


def report_exit(
    status: ModelStatus, dead: RunnerExit, shown: ExitStatus, noticed_in: float
) -> None:
    """One `model.runner_exited`: the model, the runner's pid, and how it ended."""
    spec = status.spec
    how = shown.text if shown.text != "unknown" else "an unknown exit status"
    log.warning(
        "model.runner_exited",
        msg=f"The runner of {spec.display} (pid {dead.runner.pid}) exited ({how}) while Ollama "
        "still listed it; loading it again",
        model=spec.display,
        pid=dead.runner.pid,
        status=shown.text,
        signal=shown.signal,
        exit_code=shown.code,
        context=status.context_length,
        reloaded_after=round(max(0.0, noticed_in), 3),
    )


def log_unpinned(status: ModelStatus, live: set[int]) -> None:
    """`model.unpinned`, saying what was seen: a new runner, another context, the expiry.

    `live` are the runner pids alive now (none in `watch`, where only /api/ps shows).
    """
    spec = status.spec
    before = status.last_pinned
    seen: list[str] = []
    reloaded = False
    old = status.replaced.runner.pid if status.replaced is not None else None
    if old is None and before is not None and before.pid and live and before.pid not in live:
        old = before.pid  # gone, though the runner watch has not reported it yet
    if old is not None:
        seen.append(f"its runner (pid {old}) had exited")
        reloaded = True
    if before is not None and before.pid and status.runner_pid and before.pid != status.runner_pid:
        seen.append(f"a new runner (pid {status.runner_pid}, was {before.pid})")
        reloaded = True
    if before is not None and before.context and status.context_length != before.context:
        seen.append(f"context length {status.context_length} (was {before.context})")
        reloaded = True
    if status.expires_at is not None:
        left = (status.expires_at - datetime.now(UTC)).total_seconds()
        seen.append(
            f"it expires at {status.expires_at.astimezone(UTC):%H:%M:%S} UTC "
            f"(in {format_seconds(max(0.0, round(left)))})"
            + (", was Forever" if before is not None else "")
        )
    cause = "a client's request reloaded it" if reloaded else "a client changed its keep_alive"
    keep = " as it is" if adopts_context(spec) else ""
    log.warning(
        "model.unpinned",
        msg=f"{spec.display} is loaded but no longer pinned: {cause} ({'; '.join(seen)}); "
        f"pinning it again{keep}",
        model=spec.display,
        cause="reloaded" if reloaded else "keep_alive",
        seen=seen,
        context=status.context_length,
        previous_context=before.context if before else None,
        pid=status.runner_pid,
        previous_pid=before.pid if before else None,
        expires_at=status.expires_at.isoformat() if status.expires_at else None,
    )
