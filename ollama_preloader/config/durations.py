"""Go-style duration parsing, the way Ollama reads keep_alive and OLLAMA_* durations."""

from __future__ import annotations

import math
import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds for a Go `time.ParseDuration` string (`5m`, `1h30m`, `-1s`, `0`).

    Raises ValueError with Go's wording when the text is not a duration.
    """
    s = text.strip()
    orig = s
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {orig!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        match = _PART.match(s, pos)
        if match is None:
            if re.match(r"\d+\.?\d*$|\.\d+$", s[pos:]):
                raise ValueError(f"missing unit in duration {orig!r}")
            unit = re.match(r"[\d.]*([^\d.]+)", s[pos:])
            if unit:
                raise ValueError(f"unknown unit {unit.group(1)!r} in duration {orig!r}")
            raise ValueError(f"invalid duration {orig!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def parse_seconds_or_duration(text: str) -> float:
    """Seconds from a Go duration, or from a plain number of seconds (Ollama's env fallback)."""
    try:
        return parse_go_duration(text)
    except ValueError as duration_error:
        try:
            value = float(text.strip())
        except ValueError:
            raise duration_error from None
        if math.isnan(value) or math.isinf(value):
            raise duration_error from None
        return value


def format_seconds(seconds: float) -> str:
    """A short human form: `forever` for negative, else `1h30m`, `45s`, `1.5s`."""
    if seconds < 0:
        return "forever"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    out = f"{hours}h" if hours else ""
    out += f"{minutes}m" if minutes else ""
    out += f"{secs}s" if secs else ""
    return out
