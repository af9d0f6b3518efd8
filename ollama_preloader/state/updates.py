"""What is known of each model's upstream version, and of an old runner a re-pull left behind.

Shared state: the update checks (reconcile/) write it, `status`, /status and /metrics
(observe/) read it, like the rest of the Board.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class UpdateState(StrEnum):
    UNKNOWN = "unknown"  # not checked yet (or checks are off)
    CURRENT = "current"  # the registry serves the digest on disk
    AVAILABLE = "available"  # the registry serves another digest
    UPDATING = "updating"  # a swap is under way
    FAILED = "failed"  # the last check or update failed: `reason`
    LOCAL = "local"  # the registry does not have it (made with `ollama create`)


@dataclass
class UpdateInfo:
    state: UpdateState = UpdateState.UNKNOWN
    registry_digest: str | None = None
    download_bytes: int | None = None
    checked_at: datetime | None = None
    reason: str | None = None
    # The digest on disk the last check compared with: `local` is checked again only when
    # it changes (a model made locally does not appear upstream by itself).
    checked_digest: str | None = None
    # The state the last event was logged for: one event per change, not one per check.
    announced: UpdateState | None = None
    # (registry digest, reason) of the last apply that failed: the same version failing
    # again (not enough disk, every interval) stays `failed`, said once, tried each round.
    apply_failure: tuple[str | None, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "registry_digest": self.registry_digest,
            "download_bytes": self.download_bytes,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class StaleRunner:
    """A runner still loaded with an older download of the model (a pull done by hand while
    it was pinned, ollama-behaviour.md §9.4): no name reaches it any more."""

    digest: str
    size: int
    pid: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "pid": self.pid}
