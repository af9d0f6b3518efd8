"""What is said about the preload as a whole: the plan, the startup summary, its completion.

The summary line (which models, of which kind, what must be pulled, how many bytes) is logged
once, when `ollama serve` first answers. Sizes come from /api/tags, so they are known
only for models already on disk: the registry tells a model's size only once its pull starts,
and the line says "unknown" for those rather than guess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ollama_preloader.config.models_file import empty_list
from ollama_preloader.errors import OllamaAPIError
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import LocalModel, OllamaAPI
from ollama_preloader.ollama.psformat import human_bytes
from ollama_preloader.state.board import Board

if TYPE_CHECKING:
    from ollama_preloader.config.profiles import ProfileResult
    from ollama_preloader.config.settings import Settings

log = get_logger()


@dataclass(frozen=True)
class Line:
    """What the summary knows about one declared model."""

    name: str
    kind: str | None  # None: known after the pull
    size: int | None  # bytes on disk; None: not on disk (or /api/tags failed)
    action: str  # "load", "pull", or "missing" (policy never)


def log_plan(settings: Settings, board: Board, profile: ProfileResult) -> None:
    """Before anything starts: configuration warnings, the profile, the models in order."""
    for warning in settings.parse_warnings:
        log.warning("config.warning", msg=warning)
    log.info(
        "server.profile",
        msg=profile.describe(),
        profile=profile.profile,
        quantization=profile.quantization,
        env=profile.effective,
        kept=list(profile.kept),
    )
    models = board.models
    if not models:
        log.info(
            "preload.plan",
            msg=f"No models to preload ({empty_list(settings.models_file)}); supervising "
            "ollama serve only",
            models=0,
        )
        return
    names = ", ".join(m.spec.display for m in models)
    log.info(
        "preload.plan",
        msg=f"Preloading {len(models)} models in priority order: {names}",
        models=len(models),
        pull_policy=settings.pull_policy,
    )


async def log_startup_summary(api: OllamaAPI, board: Board, pull_policy: str) -> None:
    """Read /api/tags (and /api/show for kinds not declared) and log `preload.summary`."""
    if not board.models:
        return
    problem = None
    on_disk: dict[str, LocalModel] = {}
    try:
        on_disk = {m.key: m for m in await api.tags()}
    except OllamaAPIError as exc:
        problem = f"could not list the models on disk: {exc}"
    lines = []
    for status in board.models:
        local = on_disk.get(status.key)
        kind = status.kind.value if status.kind else None
        if kind is None and local is not None:
            try:
                kind = (await api.show(status.spec.name)).kind.value
            except OllamaAPIError:
                kind = None
        if local is None:
            action = "missing" if pull_policy == "never" else "pull"
        else:
            action = "pull" if pull_policy == "always" else "load"
        lines.append(Line(status.spec.display, kind, local.size if local else None, action))
    message, fields = describe(lines, pull_policy)
    if problem:
        message += f" ({problem})"
    log.info("preload.summary", msg=message, **fields)


def describe(lines: list[Line], pull_policy: str) -> tuple[str, dict[str, object]]:
    """The human line and its fields. Pure, for tests."""
    kinds: dict[str, int] = {}
    for line in lines:
        key = line.kind or "unknown kind"
        kinds[key] = kinds.get(key, 0) + 1
    kind_text = ", ".join(f"{n} {k}" for k, n in kinds.items())
    to_pull = [line for line in lines if line.action == "pull"]
    missing = [line for line in lines if line.action == "missing"]
    known = sum(line.size for line in lines if line.size is not None)
    unknown = [line for line in lines if line.size is None]
    parts = [f"Plan: {len(lines)} models ({kind_text})"]
    present = [line for line in lines if line.size is not None]
    if present:
        parts.append(f"on disk: {len(present)} ({human_bytes(known)})")
    if to_pull:
        names = ", ".join(
            f"{line.name} ({human_bytes(line.size) if line.size is not None else 'size unknown'})"
            for line in to_pull
        )
        parts.append(f"to pull: {names}")
    else:
        parts.append("nothing to pull")
    if missing:
        parts.append(
            f"missing and not pulled (PRELOADER_PULL_POLICY={pull_policy}): "
            + ", ".join(line.name for line in missing)
        )
    why = "the registry gives a size only once a pull starts"
    if not unknown:
        parts.append(f"total {human_bytes(known)}")
    elif known:
        plural = "s" if len(unknown) > 1 else ""
        parts.append(
            f"total {human_bytes(known)} on disk + {len(unknown)} model{plural} of unknown "
            f"size ({why})"
        )
    else:
        parts.append(f"total size unknown until the pulls start ({why})")
    fields: dict[str, object] = {
        "models": len(lines),
        "completion": sum(line.kind == "completion" for line in lines),
        "embedding": sum(line.kind == "embedding" for line in lines),
        "unknown_kind": sum(line.kind is None for line in lines),
        "pull": len(to_pull),
        "known_bytes": known,
        "unknown_sizes": len(unknown),
    }
    if to_pull:
        fields["to_pull"] = ",".join(line.name for line in to_pull)
    if missing:
        fields["missing"] = ",".join(line.name for line in missing)
    if not unknown:
        fields["total_bytes"] = known
    return "; ".join(parts), fields


def note_all_ready(board: Board) -> None:
    """`preload.complete`, the first time every declared model is loaded (pinned if it asks)."""
    if board.models and board.all_ready and board.all_pinned_after is None:
        elapsed = time.monotonic() - board.started_at
        board.all_pinned_after = elapsed
        log.info(
            "preload.complete",
            msg=f"✓ Preloading complete: all {len(board.models)} models "
            f"{board.done_summary()} in {elapsed:.1f}s",
            models=len(board.models),
            seconds=round(elapsed, 3),
        )
