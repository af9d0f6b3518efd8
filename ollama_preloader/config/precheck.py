"""`run`'s precheck: the settings vouched for without pydantic, so that `ollama serve` is spawned
before pydantic and pydantic-settings are imported (~110-125 ms of a quiet machine's start).

It never finds an input wrong. What it cannot vouch for, a bad value or a spelling that
pydantic-settings reads its own way (a lower-case name, JSON for a tuple, `1_0` for a number),
is left to Settings before the spawn, as before, with Settings' error and exit 2. When it
vouches, `run` spawns and then builds Settings, the validator of record, while Ollama starts.
Every field's reader is the validator Settings runs (values.py); the tests hold the table below
to Settings' fields, names and defaults, and its verdicts to Settings' own
(tests/unit/test_precheck.py).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from ollama_preloader.config import values
from ollama_preloader.config.cafile import check_ca_file
from ollama_preloader.config.environ import (
    baked_models_file,
    declared_list,
    raw_variable,
    read_dotenv,
)
from ollama_preloader.config.models_file import load_models_file
from ollama_preloader.config.modelspec import ENV_MODELS, SpecError, parse_model_list
from ollama_preloader.config.profiles import Profile, Quantization
from ollama_preloader.errors import ConfigError
from ollama_preloader.observe.healthcheck import DEFAULT_HOST, DEFAULT_PORT
from ollama_preloader.ollama.host import InvalidHost, OllamaHost, parse_ollama_host


class Unsure(Exception):
    """Settings may read this text otherwise (or refuse it): let it decide."""


@dataclass(frozen=True)
class Draft:
    """What `run` reads of the settings up to the spawn (server/owned.py's ServeSettings, the
    health port's check, the logs), from a vouched-for input."""

    ollama_host: OllamaHost
    ollama_command: str
    log_polls: bool
    stale_runners: values.StaleRunnerPolicy
    profile: Profile
    quantization: Quantization | None
    ready_timeout: float
    on_server_exit: values.ServerExitPolicy
    shutdown_grace: float
    health_host: str
    health_port: int | None
    guard: bool
    log_level: values.LogLevel
    log_format: values.LogFormat


Reader = Callable[[str], Any]

# pydantic's own spellings of a boolean; it compares them lower-cased, without stripping.
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def _boolean(text: str) -> bool:
    word = text.lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise Unsure


def _number(value: Any, *, positive: bool) -> Any:
    """A finite float (above 0 with `positive`) as the reader made it; Unsure otherwise."""
    if not isinstance(value, float) or not math.isfinite(value) or (positive and value <= 0):
        raise Unsure
    return value


def _read(reader: Reader) -> Reader:
    """The validator's own refusals (ValueError, InvalidHost, SpecError) become Unsure."""

    def read(text: str) -> Any:
        try:
            return reader(text)
        except (ValueError, InvalidHost, SpecError):
            raise Unsure from None

    return read


def _seconds(text: str) -> float:
    return _number(_read(values.seconds)(text), positive=True)  # type: ignore[no-any-return]


def _optional(reader: Reader, *, positive: bool) -> Reader:
    def read(text: str) -> Any:
        value = _read(reader)(text)
        return None if value is None else _number(value, positive=positive)

    return read


def _choice(kind: Any, reader: Reader = values.lower, *, unset: bool = False) -> Reader:
    """A Literal's value as `reader` makes it (None too, with `unset`)."""
    allowed = get_args(kind)

    def read(text: str) -> Any:
        value = reader(text)
        if value in allowed or (unset and value is None):
            return value
        raise Unsure

    return read


_COUNT = re.compile(r"[0-9]{1,3}")


def _pull_attempts(text: str) -> int:
    # pydantic also reads `3.0`, ` 3 ` and `1_0`; vouch for plain digits only.
    if _COUNT.fullmatch(text) and 1 <= int(text) <= 100:
        return int(text)
    raise Unsure


def _window(text: str) -> Any:
    # A tuple: pydantic-settings first decodes it as JSON when it can. HH:MM-HH:MM never is.
    if not text.strip():
        raise Unsure
    return _read(values.window)(text)


def _models(text: str) -> Any:
    return _read(parse_model_list)(text).specs


def _path(text: str) -> Path | None:
    path = values.path_or_unset(text)
    return None if path is None else Path(path)


def _never(text: str) -> Any:
    raise Unsure


@dataclass(frozen=True)
class Rule:
    variable: str
    read: Reader
    default: Any = None  # kept only for what `run` reads before Settings is built


_PARSE_RESULTS = ("parse_warnings", "models_source")

# Every field of Settings, by its variable, with the text → value its validator makes.
RULES: Mapping[str, Rule] = {
    "models": Rule(ENV_MODELS, _models),
    "ollama_host": Rule("OLLAMA_HOST", _read(parse_ollama_host), parse_ollama_host(None)),
    "ollama_max_loaded_models": Rule("OLLAMA_MAX_LOADED_MODELS", _read(values.optional_count)),
    "ollama_keep_alive": Rule("OLLAMA_KEEP_ALIVE", _read(values.ollama_keep_alive)),
    "models_file": Rule("PRELOADER_MODELS_FILE", _path),
    "on_remove": Rule("PRELOADER_ON_REMOVE", _choice(values.RemovePolicy)),
    "stale_runners": Rule("PRELOADER_STALE_RUNNERS", _choice(values.StaleRunnerPolicy), "stop"),
    "watch_interval": Rule("PRELOADER_WATCH_INTERVAL", _seconds),
    "api_timeout": Rule("PRELOADER_API_TIMEOUT", _seconds),
    "refresh_interval": Rule("PRELOADER_REFRESH_INTERVAL", _seconds),
    "capacity_backoff": Rule("PRELOADER_CAPACITY_BACKOFF", _seconds),
    "oom_retry": Rule("PRELOADER_OOM_RETRY", _seconds),
    "pull_policy": Rule("PRELOADER_PULL_POLICY", _choice(values.PullPolicy)),
    "ready_timeout": Rule("PRELOADER_READY_TIMEOUT", _seconds, 300.0),
    "shutdown_grace": Rule("PRELOADER_SHUTDOWN_GRACE", _seconds, 20.0),
    "on_server_exit": Rule("PRELOADER_ON_SERVER_EXIT", _choice(values.ServerExitPolicy), "restart"),
    "pull_attempts": Rule("PRELOADER_PULL_ATTEMPTS", _pull_attempts),
    "pull_stall_timeout": Rule("PRELOADER_PULL_STALL_TIMEOUT", _seconds),
    "retry_initial": Rule("PRELOADER_RETRY_INITIAL", _seconds, 1.0),
    "retry_max": Rule("PRELOADER_RETRY_MAX", _seconds, 60.0),
    "ollama_command": Rule("PRELOADER_OLLAMA_COMMAND", str, "ollama"),
    "log_polls": Rule("PRELOADER_LOG_POLLS", _boolean, False),
    "log_level": Rule("PRELOADER_LOG_LEVEL", _choice(values.LogLevel), "info"),
    "log_format": Rule("PRELOADER_LOG_FORMAT", _choice(values.LogFormat), "auto"),
    "profile": Rule("PRELOADER_PROFILE", _choice(Profile, values.profile), "auto"),
    "quantization": Rule(
        "PRELOADER_QUANTIZATION", _choice(Quantization, values.lower_or_unset, unset=True)
    ),
    "warmup": Rule("PRELOADER_WARMUP", _boolean),
    "health_port": Rule("PRELOADER_HEALTH_PORT", _read(values.health_port), DEFAULT_PORT),
    "health_host": Rule("PRELOADER_HEALTH_HOST", values.health_host, DEFAULT_HOST),
    "probe_interval": Rule(
        "PRELOADER_PROBE_INTERVAL",
        _optional(values.interval_or_off, positive=True),
        values.PROBE_INTERVAL,
    ),
    "probe_timeout": Rule("PRELOADER_PROBE_TIMEOUT", _seconds, values.PROBE_TIMEOUT),
    "update": Rule("PRELOADER_UPDATE", _choice(values.UpdateMode)),
    "update_interval": Rule(
        "PRELOADER_UPDATE_INTERVAL", _optional(values.go_duration, positive=True)
    ),
    "update_window": Rule("PRELOADER_UPDATE_WINDOW", _window),
    "state_dir": Rule("PRELOADER_STATE_DIR", _path),
    "guard": Rule("PRELOADER_GUARD", _boolean, False),
    "guard_upstream": Rule("PRELOADER_GUARD_UPSTREAM", _read(values.host)),
    "guard_listen": Rule("PRELOADER_GUARD_LISTEN", _read(values.optional_host)),
    "guard_keep_alive": Rule("PRELOADER_GUARD_KEEP_ALIVE", _choice(values.GuardKeepAlive)),
    "guard_options": Rule("PRELOADER_GUARD_OPTIONS", _choice(values.GuardOptions)),
    "guard_undeclared_keep_alive": Rule(
        "PRELOADER_GUARD_UNDECLARED_KEEP_ALIVE", _optional(values.optional_seconds, positive=False)
    ),
    "guard_hold": Rule("PRELOADER_GUARD_HOLD", _seconds),
    "guard_api_keys_file": Rule("PRELOADER_GUARD_API_KEYS_FILE", _path),
    # Parse results, not variables (docs/configuration.md has none of them); pydantic-settings
    # would still read a PRELOADER_ variable of their name, so one that is set is left to it.
    **{field: Rule(f"PRELOADER_{field.upper()}", _never) for field in _PARSE_RESULTS},
}

_NAMES = {rule.variable.lower(): rule.variable for rule in RULES.values()}


def precheck(env_file: Path | None) -> Draft | None:
    """The Draft when every setting is certainly valid as Settings reads it, else None.

    Also checked, as load_settings checks them: the models file and OLLAMA_PRELOAD_MODELS not
    both set, the pairs of settings (values.check_across), SSL_CERT_FILE, a models file (or a
    baked image's list) that parses.
    """
    try:
        return _vouch(env_file)
    except (Unsure, ConfigError):
        return None


def _vouch(env_file: Path | None) -> Draft:
    dotenv = read_dotenv(env_file)
    raw_models, _ = declared_list(env_file, dotenv)
    for source in (os.environ, dotenv):
        for key in source:
            # Settings matches names without regard to case: `preloader_guard` counts too.
            if _NAMES.get(key.lower(), key) != key:
                raise Unsure
    read: dict[str, Any] = {}
    for field, rule in RULES.items():
        text, _ = raw_variable(rule.variable, dotenv)
        read[field] = rule.default if text is None else rule.read(text)
    values.check_across(
        read["retry_initial"], read["retry_max"], read["probe_interval"], read["probe_timeout"]
    )
    check_ca_file(os.environ)
    models_file = read["models_file"]
    if models_file is None and raw_models is None:
        baked = baked_models_file()
        models_file = baked if baked.is_file() else None
    if models_file is not None:
        load_models_file(models_file)
    return Draft(**{name: read[name] for name in Draft.__dataclass_fields__})
