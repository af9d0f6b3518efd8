"""A pull done outside the supervisor while the model was pinned (ollama-behaviour.md §9.4):
the new copy is pinned by the loop, and the old runner, which no name reaches any more, is
reported as it is (status, /status, the metric, one warning with both digests)."""

from __future__ import annotations

from typing import Any

from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import LoadedModel
from ollama_preloader.ollama.psformat import human_bytes
from ollama_preloader.state.board import ModelStatus
from ollama_preloader.state.runner_facts import RunnerInfo
from ollama_preloader.state.updates import StaleRunner

log = get_logger()


def _warn_once(status: ModelStatus, key: str, event: str, msg: str, **fields: Any) -> None:
    if key not in status.warned:
        status.warned.add(key)
        log.warning(event, msg=msg, model=status.spec.display, **fields)


def note_stale(
    status: ModelStatus,
    entry: LoadedModel,
    loaded: list[LoadedModel],
    *,
    old_blob: str | None,
    runners: list[RunnerInfo],
) -> None:
    """`entry` is the runner serving `status` (the copy on disk, when it is loaded)."""
    if status.swapping or status.held or not status.digest:
        return  # an update swap is under way: the old runner goes at its end
    if entry.digest != status.digest:
        if entry.key == status.key:
            _warn_once(
                status,
                f"new:{status.digest}",
                "model.new_download",
                f"{status.spec.display} was pulled again outside the supervisor "
                f"({entry.digest[:12]} -> {status.digest[:12]}); pinning the new copy",
                loaded_digest=entry.digest,
                disk_digest=status.digest,
            )
        return
    old = next((m for m in loaded if m.key == status.key and m.digest != status.digest), None)
    if old is None:
        status.stale_runner = None
        return
    pid = next((r.pid for r in runners if old_blob and r.blob == old_blob), None)
    status.stale_runner = StaleRunner(old.digest, old.size, pid)
    _warn_once(
        status,
        f"stale:{old.digest}",
        "model.stale_runner",
        f"{status.spec.display}: the new copy ({status.digest[:12]}) is pinned, but the old "
        f"runner ({old.digest[:12]}, {human_bytes(old.size)}"
        + (f", pid {pid}" if pid else "")
        + ") stays loaded beside it: after a pull done outside the supervisor no name "
        "reaches it (`ollama stop` would unload the new copy). Restart Ollama to free it; "
        "next time update with `ollama-preloader update` (or through the guard)",
        old_digest=old.digest,
        new_digest=status.digest,
        size=old.size,
        pid=pid,
    )
