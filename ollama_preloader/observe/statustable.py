"""The `status` command's table, in the spirit of `ollama ps`, from the `/status` document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ollama_preloader.ollama.psformat import human_bytes

HEADER = ("NAME", "KIND", "STATE", "UNTIL", "SIZE", "PROCESSOR", "CONTEXT", "REASON", "UPDATE")
GUARD_HEADER = (
    "THROUGH THE GUARD",
    "REQUESTS",
    "OK",
    "ERROR",
    "REJECTED",
    "UNAUTHORIZED",
    "DROPPED",
    "UNAVAILABLE",
    "REWRITTEN",
)
NONE = "-"
UNDECLARED = "not declared"


def _text(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


def _size(value: Any) -> str:
    return human_bytes(int(value)) if isinstance(value, int) else NONE


def _update(m: Mapping[str, Any]) -> str:
    """The update column: the state once checked, and an old runner left beside the model."""
    update = m.get("update") or {}
    state = update.get("state")
    text = NONE if state in (None, "unknown") else str(state)
    stale = m.get("stale_runner")
    if stale:
        text += f" (old runner {str(stale.get('digest', ''))[:12]} still loaded)"
    return text


def rows(document: Mapping[str, Any]) -> list[list[str]]:
    """One row per declared model (priority order), then the undeclared loaded ones."""
    out = []
    for m in document.get("models") or []:
        reason = m.get("reason") if m.get("state") == "failed" else None
        out.append(
            [
                _text(m.get("name")),
                _text(m.get("kind")),
                _text(m.get("state_text") or m.get("state")),
                _text(m.get("until")),
                _size(m.get("size")),
                _text(m.get("processor")),
                _text(m.get("context_length")),
                _text(reason),
                _update(m),
            ]
        )
    for m in document.get("undeclared") or []:
        out.append(
            [
                _text(m.get("name")),
                NONE,
                UNDECLARED,
                _text(m.get("until")),
                _size(m.get("size")),
                _text(m.get("processor")),
                _text(m.get("context_length")),
                NONE,
                NONE,
            ]
        )
    return out


def guard_rows(document: Mapping[str, Any]) -> list[list[str]]:
    """Requests through the guard per model (busiest first); none without the guard."""
    counts: Mapping[str, Mapping[str, Any]] = document.get("guard") or {}
    ordered = sorted(counts.items(), key=lambda item: (-int(item[1].get("requests", 0)), item[0]))
    keys = [h.lower() for h in GUARD_HEADER[1:]]
    return [[name, *(str(c.get(k, 0)) for k in keys)] for name, c in ordered]


def table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, three spaces apart, no borders."""
    all_rows = [list(header), *[list(r) for r in body]]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    lines = ["   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in all_rows]
    return "\n".join(lines) + "\n"


def render(document: Mapping[str, Any]) -> str:
    """The table and a last line saying whether every declared model is pinned."""
    text = table(HEADER, rows(document))
    guarded = guard_rows(document)
    if guarded:
        text += "\n" + table(GUARD_HEADER, guarded)
    if document.get("ready"):
        declared = document.get("declared", 0)
        summary = (
            f"ready: all {declared} declared models are loaded and pinned"
            if declared
            else "ready: ollama serve is up; no models are declared"
        )
    else:
        summary = f"not ready: {document.get('reason') or 'unknown'}"
    if document.get("live") is False:
        summary += f" (not live: {document.get('live_reason')})"
    return text + "\n" + summary + "\n"
