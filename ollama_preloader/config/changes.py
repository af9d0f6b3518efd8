"""What a new model list changes against the one in force: pure, for the live reload.

Models are matched by their normalised name (`devstral` and `devstral:latest` are one model), so
respelling an entry changes nothing. An entry is *changed* when what its load request sends
differs (keep_alive, runner options, kind): only then must the model be loaded again. The list
is *reordered* when the models in both lists are in another relative order; models added or
removed around them shift priorities without reordering anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ollama_preloader.config.durations import format_seconds
from ollama_preloader.config.modelspec import ModelSpec


def load_request(spec: ModelSpec) -> tuple[object, ...]:
    """What the supervisor's load request for this entry depends on."""
    return (spec.keep_alive_value, spec.options, spec.kind)


def reload_needed(old: ModelSpec, new: ModelSpec) -> bool:
    """The same model with another load request: it must be loaded again to apply."""
    return load_request(old) != load_request(new)


def repull_needed(old: ModelSpec, new: ModelSpec) -> bool:
    """The same model with another pull request (`insecure`): a registry failure may be fixed by
    it, so a failed pull is tried again at once; a loaded model is left as it is."""
    return old.insecure != new.insecure


def describe_parameters(spec: ModelSpec) -> str:
    """`keep_alive=1h num_ctx=8192`, or `defaults` for a bare name (pinned, server options)."""
    parts = [] if spec.pinned else [f"keep_alive={format_seconds(spec.keep_alive)}"]
    parts += [f"{key}={str(value).lower()}" for key, value in spec.options]
    if spec.insecure:
        parts.append("insecure=true")
    if spec.kind is not None:
        parts.append(f"kind={spec.kind.value}")
    return " ".join(parts) or "defaults"


@dataclass(frozen=True)
class Changed:
    """One model whose entry now asks for another load request."""

    old: ModelSpec
    new: ModelSpec

    def describe(self) -> str:
        was, now = describe_parameters(self.old), describe_parameters(self.new)
        return f"{self.new.display} ({now}, was {was})"


@dataclass(frozen=True)
class ModelSetDiff:
    """Old list vs new list. Every tuple is in the new list's priority order, except `removed`
    (the old one's)."""

    added: tuple[ModelSpec, ...]
    removed: tuple[ModelSpec, ...]
    changed: tuple[Changed, ...]
    unchanged: tuple[ModelSpec, ...]
    pull_changed: tuple[Changed, ...]  # among `unchanged`: only how it is pulled differs
    reordered: bool
    new: tuple[ModelSpec, ...]

    @property
    def empty(self) -> bool:
        """Nothing for the supervisor to do (comments, blank lines or spellings changed)."""
        return not (
            self.added or self.removed or self.changed or self.reordered or self.pull_changed
        )

    def summary(self) -> str:
        """One human line for the `config.reloaded` event."""
        if self.empty:
            return f"no change to the model set ({_count(len(self.new))})"
        parts = []
        if self.added:
            parts.append("added " + ", ".join(s.display for s in self.added))
        if self.removed:
            parts.append("removed " + ", ".join(s.display for s in self.removed))
        if self.changed:
            parts.append("changed " + ", ".join(c.describe() for c in self.changed))
        if self.pull_changed:
            parts.append("pull settings of " + ", ".join(c.describe() for c in self.pull_changed))
        if self.reordered:
            parts.append("new order " + ", ".join(s.display for s in self.new))
        if self.unchanged:
            parts.append(f"{len(self.unchanged)} unchanged")
        return "; ".join(parts)

    def fields(self) -> dict[str, Any]:
        """The event's key=value fields: model names, so `grep added=` finds them."""
        return {
            "added": [s.display for s in self.added],
            "removed": [s.display for s in self.removed],
            "changed": [c.new.display for c in self.changed],
            "pull_changed": [c.new.display for c in self.pull_changed],
            "reordered": self.reordered,
            "models": len(self.new),
        }


def _count(n: int) -> str:
    return "1 model" if n == 1 else f"{n} models"


def diff_models(old: Sequence[ModelSpec], new: Sequence[ModelSpec]) -> ModelSetDiff:
    """Compare two parsed lists (each already free of duplicates, as the parsers make them)."""
    before = {s.key: s for s in old}
    after = {s.key for s in new}
    added = tuple(s for s in new if s.key not in before)
    removed = tuple(s for s in old if s.key not in after)
    changed = tuple(
        Changed(before[s.key], s)
        for s in new
        if s.key in before and reload_needed(before[s.key], s)
    )
    unchanged = tuple(s for s in new if s.key in before and not reload_needed(before[s.key], s))
    pull_changed = tuple(
        Changed(before[s.key], s) for s in unchanged if repull_needed(before[s.key], s)
    )
    kept_before = [s.key for s in old if s.key in after]
    kept_after = [s.key for s in new if s.key in before]
    return ModelSetDiff(
        added=added,
        removed=removed,
        changed=changed,
        unchanged=unchanged,
        pull_changed=pull_changed,
        reordered=kept_before != kept_after,
        new=tuple(new),
    )
