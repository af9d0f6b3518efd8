"""Request bodies bound as Go's ShouldBindJSON binds them, and HTTPError, the handlers' error."""

from __future__ import annotations

import json
from typing import Any

from .gotime import DurationError, decode_keep_alive

_OPTS = "map[string]interface {}"
FIELDS: dict[str, dict[str, str]] = {
    "GenerateRequest": {
        "model": "string",
        "prompt": "string",
        "suffix": "string",
        "system": "string",
        "template": "string",
        "stream": "bool",
        "raw": "bool",
        "options": _OPTS,
        "images": "[]api.ImageData",
        "context": "[]int",
    },
    "ChatRequest": {
        "model": "string",
        "messages": "[]api.Message",
        "stream": "bool",
        "options": _OPTS,
        "tools": "api.Tools",
    },
    "EmbedRequest": {"model": "string", "truncate": "bool", "options": _OPTS, "dimensions": "int"},
    "EmbeddingsRequest": {"model": "string", "prompt": "string", "options": _OPTS},
    "PullRequest": {"model": "string", "name": "string", "insecure": "bool", "stream": "bool"},
    "ShowRequest": {
        "model": "string",
        "name": "string",
        "system": "string",
        "verbose": "bool",
        "options": _OPTS,
    },
    "DeleteRequest": {"model": "string", "name": "string"},
    "CopyRequest": {"source": "string", "destination": "string"},
}
_KEEP_ALIVE_STRUCTS = {"GenerateRequest", "ChatRequest", "EmbedRequest", "EmbeddingsRequest"}


class HTTPError(Exception):
    """Abort the handler with a JSON error response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json_kind(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _type_ok(gotype: str, v: object) -> bool:
    if v is None:
        return True
    if gotype == "string":
        return isinstance(v, str)
    if gotype == "bool":
        return isinstance(v, bool)
    if gotype == "int":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if gotype == _OPTS:
        return isinstance(v, dict)
    if gotype.startswith("[]") or gotype == "api.Tools":
        return isinstance(v, list)
    return True


def _reject_constant(c: str) -> object:
    raise ValueError(c)


def bind_json(raw: bytes, struct: str) -> dict[str, Any]:
    """ShouldBindJSON: parse and type-check; raises HTTPError(400) with Go-like messages."""
    if not raw.strip():
        raise HTTPError(400, "missing request body")
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as e:
        text = raw.decode("utf-8", "replace").strip()
        pos = getattr(e, "pos", 0) or 0
        if pos >= len(text):
            raise HTTPError(400, "unexpected EOF") from None
        ch = text[pos] if pos < len(text) else ""
        raise HTTPError(400, f"invalid character '{ch}' looking for beginning of value") from None
    if not isinstance(obj, dict):
        raise HTTPError(
            400, f"json: cannot unmarshal {_json_kind(obj)} into Go value of type api.{struct}"
        )
    # encoding/json matches keys case-insensitively (exact match preferred)
    out: dict[str, Any] = {}
    fields = dict(FIELDS.get(struct, {}))
    if struct in _KEEP_ALIVE_STRUCTS:
        fields["keep_alive"] = "api.Duration"
    if struct == "EmbedRequest":
        fields["input"] = "any"
    if struct in {"ChatRequest", "GenerateRequest"}:
        fields.setdefault("format", "any")
        fields.setdefault("think", "any")
    lower = {k.lower(): k for k in obj}
    for f in fields:
        if f in obj:
            out[f] = obj[f]
        elif f.lower() in lower:
            out[f] = obj[lower[f.lower()]]
    if struct in _KEEP_ALIVE_STRUCTS and "keep_alive" in out:
        try:
            out["keep_alive"] = decode_keep_alive(out["keep_alive"])
        except DurationError as e:
            raise HTTPError(400, str(e)) from None
    for f, gotype in fields.items():
        if f in out and not _type_ok(gotype, out[f]):
            raise HTTPError(
                400,
                f"json: cannot unmarshal {_json_kind(out[f])} into Go struct field "
                f"{struct}.{f} of type {gotype}",
            )
    return out
