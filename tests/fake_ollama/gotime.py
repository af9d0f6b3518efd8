"""Go-compatible durations, keep_alive decoding, timestamps and human formatting."""

from __future__ import annotations

import datetime as _dt
import json
import math

NANOSECOND = 1
MICROSECOND = 1000
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}


class DurationError(ValueError):
    """A Go `time.ParseDuration` error; str() is Go's exact message."""


def go_quote(s: str) -> str:
    """Quote like Go's time.quote (used in ParseDuration errors)."""
    out = ['"']
    for ch in s:
        if ord(ch) >= 0x80 or ch < " ":
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
        else:
            if ch in ('"', "\\"):
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def parse_duration(orig: str) -> int:
    """Go's time.ParseDuration; returns nanoseconds or raises DurationError."""
    s = orig
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    invalid = DurationError("time: invalid duration " + go_quote(orig))
    if s == "":
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or _is_digit(s[0])):
            raise invalid
        # leading integer
        i = 0
        v = 0
        while i < len(s) and _is_digit(s[i]):
            if v > (1 << 63) // 10:
                raise invalid
            v = v * 10 + ord(s[i]) - 48
            if v > 1 << 63:
                raise invalid
            i += 1
        pre = i > 0
        s = s[i:]
        f = 0
        scale = 1.0
        post = False
        if s and s[0] == ".":
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and _is_digit(s[i]):
                if not overflow:
                    if f > (MAX_INT64) // 10:
                        overflow = True
                    else:
                        y = f * 10 + ord(s[i]) - 48
                        if y > 1 << 63:
                            overflow = True
                        else:
                            f = y
                            scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise invalid
        i = 0
        while i < len(s) and not (s[i] == "." or _is_digit(s[i])):
            i += 1
        if i == 0:
            raise DurationError("time: missing unit in duration " + go_quote(orig))
        u = s[:i]
        s = s[i:]
        unit = _UNITS.get(u)
        if unit is None:
            raise DurationError(
                "time: unknown unit " + go_quote(u) + " in duration " + go_quote(orig)
            )
        if v > (1 << 63) // unit:
            raise invalid
        v *= unit
        if f > 0:
            v += int(float(f) * (float(unit) / scale))
            if v > 1 << 63:
                raise invalid
        total += v
        if total > 1 << 63:
            raise invalid
    if neg:
        return -total
    if total > MAX_INT64:
        raise invalid
    return total


def float_to_int64(x: float) -> int:
    """Go's float64 -> int64 conversion on amd64 (out of range gives MinInt64)."""
    if math.isnan(x) or x >= 2.0**63 or x < -(2.0**63):
        return MIN_INT64
    return int(x)


def wrap_int64(x: int) -> int:
    """Two's complement wrap like Go int64 arithmetic overflow."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def go_type_name(v: object) -> str:
    """Name of the Go type encoding/json would produce for a decoded JSON value."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "[]interface {}"
    return "map[string]interface {}"


def decode_keep_alive(v: object) -> int | None:
    """api.Duration.UnmarshalJSON: JSON value -> nanoseconds; None when null/omitted.

    Raises DurationError (message is the exact 400 body text) for bad values.
    """
    if v is None:
        return None
    if isinstance(v, bool):
        raise DurationError("Unsupported type: 'bool'")
    if isinstance(v, (int, float)):
        if v < 0:
            return MAX_INT64
        try:
            return float_to_int64(float(v) * float(SECOND))
        except OverflowError:
            return MIN_INT64
    if isinstance(v, str):
        d = parse_duration(v)
        return MAX_INT64 if d < 0 else d
    raise DurationError(f"Unsupported type: '{go_type_name(v)}'")


def env_keep_alive(raw: str) -> int:
    """envconfig.KeepAlive(): ParseDuration, then integer seconds, else silently 5m."""
    ka = 5 * MINUTE
    if raw != "":
        try:
            ka = parse_duration(raw)
        except DurationError:
            if _go_int(raw):
                ka = wrap_int64(int(raw, 10) * SECOND)
    if ka < 0:
        return MAX_INT64
    return ka


def env_load_timeout(raw: str) -> int | None:
    """envconfig.LoadTimeout(): duration or integer seconds; <=0 means infinite (None)."""
    lt = 5 * MINUTE
    if raw != "":
        try:
            lt = parse_duration(raw)
        except DurationError:
            if _go_int(raw):
                lt = wrap_int64(int(raw, 10) * SECOND)
    if lt <= 0:
        return None
    return lt


def _go_int(s: str) -> bool:
    """strconv.ParseInt(s, 10, 64) accepts it."""
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body or not all(_is_digit(c) for c in body):
        return False
    return MIN_INT64 <= int(s, 10) <= MAX_INT64


def duration_string(d: int) -> str:
    """Go's time.Duration.String()."""
    if d == 0:
        return "0s"
    neg = d < 0
    u = -d if neg else d
    if u < SECOND:
        if u < MICROSECOND:
            prec, unit = 0, "ns"
        elif u < MILLISECOND:
            prec, unit = 3, "\u00b5s"
        else:
            prec, unit = 6, "ms"
        out = _frac_str(u, prec) + unit
    else:
        secs = u // SECOND
        frac = u % SECOND
        fs = f".{frac:09d}".rstrip("0") if frac else ""
        hours, rem = divmod(secs, 3600)
        minutes, seconds = divmod(rem, 60)
        if hours:
            out = f"{hours}h{minutes}m{seconds}{fs}s"
        elif minutes:
            out = f"{minutes}m{seconds}{fs}s"
        else:
            out = f"{seconds}{fs}s"
    return "-" + out if neg else out


def _frac_str(u: int, prec: int) -> str:
    if prec == 0:
        return str(u)
    div = 10**prec
    whole, frac = divmod(u, div)
    fs = f".{frac:0{prec}d}".rstrip("0") if frac else ""
    return f"{whole}{fs}"


def _offset_str(dt: _dt.datetime) -> str:
    off = dt.utcoffset()
    if off is None or off == _dt.timedelta(0):
        return "Z"
    total = int(off.total_seconds())
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{sign}{total // 3600:02d}:{(total % 3600) // 60:02d}"


def _to_datetime(unix_ns: int, utc: bool) -> tuple[_dt.datetime, int]:
    sec, ns = divmod(unix_ns, SECOND)
    dt = _dt.datetime.fromtimestamp(sec, tz=_dt.UTC)
    if not utc:
        dt = dt.astimezone()
    return dt, ns


def rfc3339nano(unix_ns: int, *, utc: bool = False) -> str:
    """Go RFC3339Nano (trailing fraction zeros trimmed), local tz unless utc."""
    dt, ns = _to_datetime(unix_ns, utc)
    frac = f".{ns:09d}".rstrip("0") if ns else ""
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + _offset_str(dt)


def slog_time(unix_ns: int) -> str:
    """slog TextHandler time: RFC3339 with milliseconds, local tz."""
    dt, ns = _to_datetime(unix_ns, False)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns // MILLISECOND:03d}" + _offset_str(dt)


def gin_time(unix_ns: int) -> str:
    """gin logger time format `2006/01/02 - 15:04:05` (local)."""
    dt, _ = _to_datetime(unix_ns, False)
    return dt.strftime("%Y/%m/%d - %H:%M:%S")


def parse_rfc3339(s: str) -> int:
    """Parse an RFC3339(Nano) timestamp to unix nanoseconds (for the CLI)."""
    main = s
    frac_ns = 0
    tz = ""
    if s.endswith("Z"):
        main, tz = s[:-1], "+00:00"
    else:
        main, tz = s[:-6], s[-6:]
    if "." in main:
        main, frac = main.split(".", 1)
        frac_ns = int((frac + "000000000")[:9])
    dt = _dt.datetime.fromisoformat(main + tz)
    return int(dt.timestamp()) * SECOND + frac_ns


def human_bytes(b: int) -> str:
    """format.HumanBytes (decimal units)."""
    units = [(1000**4, "TB"), (1000**3, "GB"), (1000**2, "MB"), (1000, "KB")]
    for size, name in units:
        if b >= size:
            value = b / size
            unit = name
            break
    else:
        return f"{b} B"
    if value >= 10:
        return f"{int(value)} {unit}"
    if value != math.trunc(value):
        return f"{value:.1f} {unit}"
    return f"{int(value)} {unit}"


def human_duration(d_ns: int) -> str:
    """format.humanDuration."""
    seconds = int(d_ns / SECOND)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(d_ns / MINUTE)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(d_ns / HOUR)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(d_ns / HOUR / 24 / 365)} years"


def _tdiv(a: int, b: int) -> int:
    """Go integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def human_time(t_ns: int | None, now_ns: int, zero_value: str) -> str:
    """format.HumanTime."""
    if t_ns is None:
        return zero_value
    delta = now_ns - t_ns
    if _tdiv(_tdiv(int(delta / HOUR), 24), 365) < -20:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def go_json(obj: object) -> str:
    """encoding/json-like compact output with Go's HTML escaping."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return (
        s.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def go_q(s: str) -> str:
    """Go's %q for simple strings."""
    return json.dumps(s, ensure_ascii=False)
