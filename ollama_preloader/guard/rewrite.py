"""The guard's policy: which fields of a client's request body change, read as Ollama reads them.

Pure: bytes in, bytes (or a refusal) out, no I/O. Ollama decodes these bodies as JSON whatever
the Content-Type says, and Go's decoder matches top-level keys case-insensitively with the last
duplicate winning, so `{"keep_alive": -1, "Keep_Alive": 0}` unloads: the guard reads the same
way. Anything it does not understand (not JSON, not an object, a value Ollama would refuse)
passes untouched, and Ollama answers it as it would without the guard.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ollama_preloader.config.durations import parse_go_duration
from ollama_preloader.config.modelspec import ModelSpec
from ollama_preloader.ollama.endpoints import MODEL_PATHS as NATIVE_MODEL_PATHS

# Where Ollama reads `keep_alive` and `options`. The /v1 and Anthropic layers drop both, so
# there is nothing to rewrite on them; they only name the model for metrics.
REWRITTEN_PATHS = NATIVE_MODEL_PATHS
MODEL_PATHS = REWRITTEN_PATHS | {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/api/show",
}
# Runner options Ollama compares to decide a reload (§7.4, api.Runner): a client value that
# differs from the pin's reloads the model, and the reloaded runner takes the client's keep_alive.
RUNNER_OPTIONS = (
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "use_mmap",
    "num_thread",
    "draft_num_predict",
)
_BOOL_OPTIONS = frozenset({"use_mmap"})
FOREVER = math.inf
_MAX_NS = 2**63 - 1

KeepAlivePolicy = Literal["pin", "pass"]
OptionsPolicy = Literal["entry", "reject", "pass"]


@dataclass(frozen=True)
class Policy:
    """PRELOADER_GUARD_KEEP_ALIVE, _OPTIONS and _UNDECLARED_KEEP_ALIVE (seconds, None: no cap)."""

    keep_alive: KeepAlivePolicy = "pin"
    options: OptionsPolicy = "entry"
    undeclared_cap: float | None = None


@dataclass(frozen=True)
class Change:
    """One rewritten field: `before`/`after` as JSON text, "(unset)" for an absent key."""

    field: str
    before: str
    after: str


@dataclass
class Outcome:
    """What to send: `body` None means the client's bytes unchanged; `reject` a 400 message."""

    model: str | None = None
    declared: bool = False
    body: bytes | None = None
    changes: list[Change] = field(default_factory=list)
    reject: str | None = None


def fold(key: str) -> str:
    """Go's case-insensitive key match (simple folding: `K` and `ſ` fold to k and s)."""
    return "".join(c.casefold() if len(c.casefold()) == 1 else c for c in key)


def keep_alive_seconds(value: Any) -> float | None:
    """The duration Ollama makes of a `keep_alive` value: seconds, FOREVER, or None when Ollama
    would refuse it (a 400) or treat it as unset (null), so the guard leaves it alone."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        if value < 0:
            return FOREVER
        ns = value * 1e9
        # Go converts the float to int64: past the range it wraps to MinInt64, which unloads.
        if ns >= _MAX_NS:
            return 0.0
        return math.floor(ns) / 1e9
    if isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError:
            return None
        return FOREVER if seconds < 0 else seconds
    return None


def _as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class _Object(list[tuple[str, Any]]):
    """A JSON object as its pairs in order, duplicates kept (a list would be a JSON array)."""


def _pairs(raw: bytes) -> _Object | None:
    """Top-level key/value pairs in order (duplicates kept), or None for anything else."""
    try:
        value = json.loads(raw, object_pairs_hook=_Object)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, _Object) else None


def _plain(value: Any) -> Any:
    """Pairs back to dicts, the last duplicate winning as in Go."""
    if isinstance(value, _Object):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _last(pairs: _Object, name: str) -> tuple[bool, Any]:
    found, value = False, None
    for key, item in pairs:
        if fold(key) == name:
            found, value = True, item
    return found, value


def model_of(raw: bytes) -> str | None:
    """The `model` a body names, as Ollama reads it; None if it names none."""
    pairs = _pairs(raw)
    if pairs is None:
        return None
    _, model = _last(pairs, "model")
    return model if isinstance(model, str) else None


def rewrite(
    path: str, raw: bytes, policy: Policy, lookup: Callable[[str], ModelSpec | None]
) -> Outcome:
    """Apply the policy to one request body for `path`; `lookup` finds a declared model."""
    pairs = _pairs(raw)
    if pairs is None:
        return Outcome()
    _, model = _last(pairs, "model")
    if not isinstance(model, str):
        return Outcome()
    spec = lookup(model) if model else None
    outcome = Outcome(model=model, declared=spec is not None)
    if path not in REWRITTEN_PATHS:
        return outcome
    top: dict[str, Any] = {}
    for key, item in pairs:
        top[key] = item
    changed = False
    if spec is not None:
        changed |= _pin_keep_alive(pairs, top, spec, policy, outcome)
        if policy.options != "pass":
            changed |= _pin_options(pairs, top, spec, policy, outcome)
    elif policy.undeclared_cap is not None:
        changed |= _cap_keep_alive(pairs, top, policy.undeclared_cap, outcome)
    if outcome.reject is None and changed:
        outcome.body = json.dumps(
            {k: _plain(v) for k, v in top.items()}, ensure_ascii=False, separators=(",", ":")
        ).encode()
    return outcome


def _replace(top: dict[str, Any], name: str, value: Any) -> None:
    """Set `name`, dropping every key Go would read as it (so no other spelling wins)."""
    for key in [k for k in top if fold(k) == name]:
        del top[key]
    if value is not _UNSET:
        top[name] = value


_UNSET = object()


def _pin_keep_alive(
    pairs: _Object,
    top: dict[str, Any],
    spec: ModelSpec,
    policy: Policy,
    outcome: Outcome,
) -> bool:
    if policy.keep_alive == "pass":
        return False
    found, value = _last(pairs, "keep_alive")
    seconds = keep_alive_seconds(value) if found else None
    wanted = FOREVER if spec.pinned else spec.keep_alive
    if seconds is None or seconds >= wanted:
        return False
    _replace(top, "keep_alive", spec.keep_alive_value)
    outcome.changes.append(Change("keep_alive", _as_json(value), _as_json(spec.keep_alive_value)))
    return True


def _cap_keep_alive(pairs: _Object, top: dict[str, Any], cap: float, outcome: Outcome) -> bool:
    found, value = _last(pairs, "keep_alive")
    seconds = keep_alive_seconds(value) if found else None
    limit = FOREVER if cap < 0 else cap
    if seconds is None or seconds <= limit:
        return False
    capped: int | float = -1 if cap < 0 else (int(cap) if float(cap).is_integer() else cap)
    _replace(top, "keep_alive", capped)
    outcome.changes.append(Change("keep_alive", _as_json(value), _as_json(capped)))
    return True


def _same_type(name: str, value: Any) -> bool:
    """A value of the type Ollama expects; a wrong one it answers itself (500), so it passes."""
    if name in _BOOL_OPTIONS:
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _pin_options(
    pairs: _Object,
    top: dict[str, Any],
    spec: ModelSpec,
    policy: Policy,
    outcome: Outcome,
) -> bool:
    pinned = spec.options_dict()
    changed = False
    # Go merges duplicate `options` objects into one map, later keys winning.
    merged: dict[str, Any] = {}
    seen_options = False
    for key, item in pairs:
        if fold(key) == "options" and isinstance(item, _Object):
            seen_options = True
            merged.update(_plain(item))
    if seen_options:
        kept = dict(merged)
        for name in RUNNER_OPTIONS:
            if name not in merged or not _same_type(name, merged[name]):
                continue
            value = merged[name]
            target = pinned.get(name)
            if (
                target is not None
                and value == target
                and isinstance(value, bool) == (isinstance(target, bool))
            ):
                continue
            if name == "num_gpu" and target is None and value < 0:
                continue  # Ollama ignores a negative num_gpu: no reload
            if policy.options == "reject":
                outcome.reject = _refusal(spec, name, value, target)
                return False
            after = "(unset)" if target is None else _as_json(target)
            outcome.changes.append(Change(f"options.{name}", _as_json(value), after))
            if target is None:
                del kept[name]
            else:
                kept[name] = target
            changed = True
        if changed:
            _replace(top, "options", kept)
    found, shift = _last(pairs, "shift")
    # The pin loads with the default context shift (on); `shift: false` is another runner.
    if found and shift is False:
        if policy.options == "reject":
            outcome.reject = _refusal(spec, "shift", False, None)
            return False
        _replace(top, "shift", _UNSET)
        outcome.changes.append(Change("shift", "false", "(unset)"))
        changed = True
    return changed


def _refusal(spec: ModelSpec, name: str, value: Any, target: Any) -> str:
    pinned = "the server's default" if target is None else f"{name}={_as_json(target)}"
    return (
        f"model '{spec.display}' is pinned by ollama-preloader with {pinned}; {name}="
        f"{_as_json(value)} would reload it (PRELOADER_GUARD_OPTIONS=reject): send "
        f"{'no ' + name if target is None else pinned}, or change the model's entry"
    )
