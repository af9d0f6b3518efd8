"""Finding updates: each declared model's digest on disk against its registry's, and the one
event per change of state that a user sees (a registry down for a day is one warning)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.psformat import human_bytes
from ollama_preloader.ollama.registry import RegistryCheckError, RegistryClient, short
from ollama_preloader.state.board import Board, ModelStatus
from ollama_preloader.state.updates import UpdateState

log = get_logger()


async def check_model(
    registry: RegistryClient, status: ModelStatus, have: Callable[[str], bool]
) -> UpdateState | None:
    """Compare one model with its registry; the result (None: nothing to compare)."""
    info = status.update
    if not status.present or not status.digest:
        return None  # not on disk: the ordinary pull brings the registry's version anyway
    if info.state == UpdateState.LOCAL and info.checked_digest == status.digest:
        return None  # made locally: checked once; again only if the copy on disk changes
    ref = status.spec.ref
    info.checked_at, info.checked_digest = datetime.now(UTC), status.digest
    try:
        manifest = await registry.manifest(ref, insecure=status.spec.insecure)
    except RegistryCheckError as exc:
        info.state, info.reason = UpdateState.FAILED, str(exc)
        return UpdateState.FAILED
    if manifest is None:
        info.state, info.registry_digest, info.download_bytes = UpdateState.LOCAL, None, None
        info.reason = f"{ref.host} does not have {status.spec.display} (made locally?)"
        return UpdateState.LOCAL
    info.registry_digest, info.reason = manifest.digest, None
    if manifest.digest == status.digest:
        info.state, info.download_bytes = UpdateState.CURRENT, 0
    else:
        info.state, info.download_bytes = UpdateState.AVAILABLE, manifest.download_bytes(have)
    return info.state


def count_check(board: Board, result: UpdateState) -> None:
    board.update_checks[result.value] = board.update_checks.get(result.value, 0) + 1


def announce(status: ModelStatus) -> None:
    """Log the model's update state when it changed since the last event about it."""
    info = status.update
    if info.state in (info.announced, UpdateState.UPDATING):
        return
    first = info.announced is None
    info.announced = info.state
    name = status.spec.display
    if info.state == UpdateState.AVAILABLE:
        log.info(
            "update.available",
            msg=f"An update of {name} is available: {short(status.digest)} on disk, "
            f"{short(info.registry_digest)} in the registry "
            f"({human_bytes(info.download_bytes or 0)} to download)",
            model=name,
            local_digest=status.digest,
            registry_digest=info.registry_digest,
            download_bytes=info.download_bytes,
        )
    elif info.state == UpdateState.FAILED:
        log.warning(
            "update.failed",
            msg=f"Could not check {name} for updates: {info.reason} (it stays as it is; "
            "said once until the check works again)",
            model=name,
            stage="check",
            reason=info.reason,
        )
    elif info.state == UpdateState.CURRENT and not first:
        log.info("update.current", msg=f"{name} is current", model=name, digest=status.digest)
