"""How each setting's text is read, without pydantic.

Settings (settings.py) runs these as its fields' validators, and `run`'s precheck
(precheck.py) runs the same ones before pydantic is imported: one reading of every value.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from ollama_preloader.config.durations import parse_go_duration, parse_seconds_or_duration
from ollama_preloader.config.profiles import PROFILE_ALIASES
from ollama_preloader.errors import ConfigError
from ollama_preloader.observe.healthcheck import parse_health_port
from ollama_preloader.ollama.host import parse_ollama_host

PullPolicy = Literal["if-missing", "always", "never"]
ServerExitPolicy = Literal["restart", "exit"]
LogFormat = Literal["auto", "console", "plain", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
UpdateMode = Literal["off", "check", "apply"]
RemovePolicy = Literal["release", "unload", "keep"]
StaleRunnerPolicy = Literal["stop", "keep"]
GuardKeepAlive = Literal["pin", "pass"]
GuardOptions = Literal["entry", "reject", "pass"]

# The default probe interval: a probe costs 3.5-5 ms of latency and 6-8 ms of serve + runner
# CPU on the kit's tiny models (docs/benchmarks.md, "Probe"); every 30 s for three models the
# idle tree used about 1 % of a core more than with probes off, and a wedged model is found
# within 30 s plus the timeout.
PROBE_INTERVAL = 30.0
PROBE_TIMEOUT = 10.0


def seconds(value: Any) -> Any:
    """Accept `5`, `2.5`, `5s`, `2m`: the same forms Ollama accepts for its durations."""
    if isinstance(value, str):
        try:
            return parse_seconds_or_duration(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a duration (use seconds like 30 or a duration like 30s, 5m)"
            ) from None
    return value


def interval_or_off(value: Any) -> Any:
    """PRELOADER_PROBE_INTERVAL: `off` turns the probe off (None); otherwise a duration."""
    if isinstance(value, str) and value.strip().strip("\"'").lower() == "off":
        return None
    return seconds(value)


def optional_count(value: Any) -> Any:
    """OLLAMA_MAX_LOADED_MODELS as Ollama reads it: 0, empty or unparsable means automatic."""
    if isinstance(value, str):
        text = value.strip().strip("\"'")
        return int(text) if text.isdigit() and int(text) > 0 else None
    return value


def health_port(value: Any) -> Any:
    """`off` turns the health endpoints off (None); otherwise a TCP port."""
    return parse_health_port(value) if isinstance(value, str) else value


def health_host(value: Any) -> Any:
    """Read as `status` and `health` read it: spaces, quotes and IPv6 brackets dropped."""
    return value.strip().strip("\"'").strip().strip("[]") if isinstance(value, str) else value


def lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def profile(value: Any) -> Any:
    value = lower(value)
    return PROFILE_ALIASES.get(value, value) if isinstance(value, str) else value


def lower_or_unset(value: Any) -> Any:
    """An empty value means "not set", as for Ollama's own variables."""
    value = lower(value)
    return None if value == "" else value


def path_or_unset(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


def go_duration(value: Any) -> Any:
    """A Go duration (`24h`, `90m`, `1h30m`): PRELOADER_UPDATE_INTERVAL."""
    if isinstance(value, str):
        try:
            return parse_go_duration(value.strip().strip("\"'"))
        except ValueError:
            raise ValueError(
                f"{value!r} is not a Go duration (use for example 24h, 6h or 90m)"
            ) from None
    return value


_WINDOW = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])-([01]?[0-9]|2[0-3]):([0-5][0-9])$")


def window(value: Any) -> Any:
    """PRELOADER_UPDATE_WINDOW `HH:MM-HH:MM` (local time) -> (start, end) in minutes."""
    if not isinstance(value, str):
        return value
    text = value.strip().strip("\"'").replace(" ", "")
    if not text:
        return None
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(
            f"{value!r} is not a window: use HH:MM-HH:MM in local time, e.g. 02:00-05:00"
        )
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if (h1, m1) == (h2, m2):
        raise ValueError(f"{value!r} is an empty window: give a start and an end that differ")
    return (h1 * 60 + m1, h2 * 60 + m2)


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def ollama_keep_alive(value: Any) -> Any:
    """OLLAMA_KEEP_ALIVE exactly as `ollama serve` reads it (envconfig.KeepAlive): a Go duration,
    else whole seconds, else silently 5m; negative is forever (-1 here). What the server uses
    is what matters, so a value it ignores is ignored here too, without an error."""
    if not isinstance(value, str):
        return value
    text = value.strip().strip("\"'")
    seconds = 300.0
    if text:
        try:
            seconds = parse_go_duration(text)
        except ValueError:
            if _WHOLE_NUMBER.fullmatch(text):
                seconds = float(int(text))
    return -1.0 if seconds < 0 else seconds


def optional_host(value: Any) -> Any:
    """PRELOADER_GUARD_LISTEN: unset or empty is None, otherwise read like OLLAMA_HOST."""
    if isinstance(value, str):
        return parse_ollama_host(value) if value.strip().strip("\"'").strip() else None
    return value


def host(value: Any) -> Any:
    return parse_ollama_host(value) if isinstance(value, str) or value is None else value


def optional_seconds(value: Any) -> Any:
    """Unset, empty or `off` is None (no cap); otherwise a duration, negative meaning forever."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "off"):
            return None
        return seconds(text)
    return value


def check_across(
    retry_initial: float, retry_max: float, probe_interval: float | None, probe_timeout: float
) -> None:
    """ConfigError for settings each valid alone that cannot go together."""
    if retry_max < retry_initial:
        raise ConfigError(
            "PRELOADER_RETRY_MAX must be at least PRELOADER_RETRY_INITIAL "
            f"({retry_max:g}s < {retry_initial:g}s)"
        )
    if probe_interval is not None and probe_timeout >= probe_interval:
        raise ConfigError(
            f"PRELOADER_PROBE_TIMEOUT ({probe_timeout:g}s) must be shorter than "
            f"PRELOADER_PROBE_INTERVAL ({probe_interval:g}s): a probe must end before the next "
            "one; lower the timeout or raise the interval"
        )
