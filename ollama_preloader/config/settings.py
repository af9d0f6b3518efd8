"""Settings: every knob, read once from the environment and `.env`, frozen, passed down."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ollama_preloader.config.cafile import check_ca_file
from ollama_preloader.config.durations import parse_go_duration, parse_seconds_or_duration
from ollama_preloader.config.models_file import ENV_MODELS_FILE, load_models_file
from ollama_preloader.config.modelspec import ENV_MODELS, ModelSpec, SpecError, parse_model_list
from ollama_preloader.config.profiles import PROFILE_ALIASES, Profile, Quantization
from ollama_preloader.errors import ConfigError
from ollama_preloader.observe.healthcheck import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    EnvFileError,
    parse_health_port,
    read_env_file,
)
from ollama_preloader.ollama.host import InvalidHost, OllamaHost, parse_ollama_host

PullPolicy = Literal["if-missing", "always", "never"]
ServerExitPolicy = Literal["restart", "exit"]
LogFormat = Literal["auto", "console", "plain", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
UpdateMode = Literal["off", "check", "apply"]
RemovePolicy = Literal["release", "unload", "keep"]
StaleRunnerPolicy = Literal["stop", "keep"]
GuardKeepAlive = Literal["pin", "pass"]
GuardOptions = Literal["entry", "reject", "pass"]
# Where the declared list came from: it decides what a live reload can re-read.
# Written by the Dockerfile's `baked` stage; used only when neither OLLAMA_PRELOAD_MODELS nor
# PRELOADER_MODELS_FILE is set. The variable moves it, for tests and derived images.
BAKED_MODELS_FILE = Path("/etc/ollama-preloader/baked-models.txt")
ENV_BAKED_MODELS_FILE = "PRELOADER_BAKED_MODELS_FILE"

ModelsSource = Literal["unset", "environment", "env-file", "models-file"]


def _seconds(value: Any) -> Any:
    """Accept `5`, `2.5`, `5s`, `2m`: the same forms Ollama accepts for its durations."""
    if isinstance(value, str):
        try:
            return parse_seconds_or_duration(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a duration (use seconds like 30 or a duration like 30s, 5m)"
            ) from None
    return value


def _interval_or_off(value: Any) -> Any:
    """PRELOADER_PROBE_INTERVAL: `off` turns the probe off (None); otherwise a duration."""
    if isinstance(value, str) and value.strip().strip("\"'").lower() == "off":
        return None
    return _seconds(value)


def _optional_count(value: Any) -> Any:
    """OLLAMA_MAX_LOADED_MODELS as Ollama reads it: 0, empty or unparsable means automatic."""
    if isinstance(value, str):
        text = value.strip().strip("\"'")
        return int(text) if text.isdigit() and int(text) > 0 else None
    return value


def _health_port(value: Any) -> Any:
    """`off` turns the health endpoints off (None); otherwise a TCP port."""
    return parse_health_port(value) if isinstance(value, str) else value


def _health_host(value: Any) -> Any:
    """Read as `status` and `health` read it: spaces, quotes and IPv6 brackets dropped."""
    return value.strip().strip("\"'").strip().strip("[]") if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _profile(value: Any) -> Any:
    value = _lower(value)
    return PROFILE_ALIASES.get(value, value) if isinstance(value, str) else value


def _lower_or_unset(value: Any) -> Any:
    """An empty value means "not set", as for Ollama's own variables."""
    value = _lower(value)
    return None if value == "" else value


def _path_or_unset(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


def _go_duration(value: Any) -> Any:
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


def _window(value: Any) -> Any:
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


def _ollama_keep_alive(value: Any) -> Any:
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


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
# The default probe interval: a probe costs 3.5-5 ms of latency and 6-8 ms of serve + runner
# CPU on the kit's tiny models (docs/benchmarks.md, "Probe"); every 30 s for three models the
# idle tree used about 1 % of a core more than with probes off, and a wedged model is found
# within 30 s plus the timeout.
PROBE_INTERVAL = 30.0
PROBE_TIMEOUT = 10.0


def _optional_host(value: Any) -> Any:
    """PRELOADER_GUARD_LISTEN: unset or empty is None, otherwise read like OLLAMA_HOST."""
    if isinstance(value, str):
        return parse_ollama_host(value) if value.strip().strip("\"'").strip() else None
    return value


def _host(value: Any) -> Any:
    return parse_ollama_host(value) if isinstance(value, str) or value is None else value


def _optional_seconds(value: Any) -> Any:
    """Unset, empty or `off` is None (no cap); otherwise a duration, negative meaning forever."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "off"):
            return None
        return _seconds(text)
    return value


class Settings(BaseSettings):
    """All configuration. Ollama's own variables keep their meaning; ours use PRELOADER_."""

    model_config = SettingsConfigDict(
        env_prefix="PRELOADER_",
        env_file=".env",
        env_file_encoding="utf-8-sig",  # as read_dotenv reads it (which checks it first)
        extra="ignore",
        frozen=True,
    )

    models: Annotated[tuple[ModelSpec, ...], NoDecode] = Field(
        default=(), validation_alias=AliasChoices("OLLAMA_PRELOAD_MODELS")
    )
    ollama_host: Annotated[OllamaHost, NoDecode] = Field(
        default_factory=lambda: parse_ollama_host(None),
        validation_alias=AliasChoices("OLLAMA_HOST"),
    )
    ollama_max_loaded_models: Annotated[int | None, BeforeValidator(_optional_count)] = Field(
        default=None, validation_alias=AliasChoices("OLLAMA_MAX_LOADED_MODELS")
    )
    # The server's default keep-alive: what a removed model is released to (PRELOADER_ON_REMOVE).
    ollama_keep_alive: Annotated[float, BeforeValidator(_ollama_keep_alive)] = Field(
        default=300.0, validation_alias=AliasChoices("OLLAMA_KEEP_ALIVE")
    )
    # The list as a file, re-read live; excludes OLLAMA_PRELOAD_MODELS (see load_settings).
    models_file: Annotated[Path | None, BeforeValidator(_path_or_unset)] = None
    on_remove: Annotated[RemovePolicy, BeforeValidator(_lower)] = "release"
    # `run`: runners of this store left by an earlier run (server/stale.py).
    stale_runners: Annotated[StaleRunnerPolicy, BeforeValidator(_lower)] = "stop"
    watch_interval: Seconds = 1.0
    api_timeout: Seconds = 10.0
    refresh_interval: Seconds = 300.0
    capacity_backoff: Seconds = 900.0
    oom_retry: Seconds = 30.0
    pull_policy: Annotated[PullPolicy, BeforeValidator(_lower)] = "if-missing"
    ready_timeout: Seconds = 300.0
    shutdown_grace: Seconds = 20.0
    on_server_exit: Annotated[ServerExitPolicy, BeforeValidator(_lower)] = "restart"
    pull_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    pull_stall_timeout: Seconds = 300.0
    retry_initial: Seconds = 1.0
    retry_max: Seconds = 60.0
    ollama_command: str = "ollama"
    log_polls: bool = False
    log_level: Annotated[LogLevel, BeforeValidator(_lower)] = "info"
    log_format: Annotated[LogFormat, BeforeValidator(_lower)] = "auto"
    profile: Annotated[Profile, BeforeValidator(_profile)] = "auto"
    quantization: Annotated[Quantization | None, BeforeValidator(_lower_or_unset)] = None
    warmup: bool = False
    health_port: Annotated[int | None, BeforeValidator(_health_port)] = DEFAULT_PORT
    health_host: Annotated[str, BeforeValidator(_health_host)] = DEFAULT_HOST
    # A real request per pinned model (reconcile/probing.py); None: `off`.
    probe_interval: Annotated[
        Annotated[float, Field(gt=0)] | None, BeforeValidator(_interval_or_off)
    ] = PROBE_INTERVAL
    probe_timeout: Seconds = PROBE_TIMEOUT
    # Updates (README "Keeping models current"): off sends nothing to any registry.
    update: Annotated[UpdateMode, BeforeValidator(_lower)] = "off"
    update_interval: Annotated[float, BeforeValidator(_go_duration), Field(gt=0)] = 86400.0
    update_window: Annotated[tuple[int, int] | None, BeforeValidator(_window)] = None
    # Where the swap lock lives (shared by the supervisor and `update` on one machine).
    state_dir: Annotated[Path | None, BeforeValidator(_path_or_unset)] = None
    # The guard (guard/): an opt-in proxy in front of Ollama that keeps clients from undoing
    # the pin. In `run` it takes OLLAMA_HOST's address and `ollama serve` moves to the upstream.
    guard: bool = False
    guard_upstream: Annotated[OllamaHost, NoDecode, BeforeValidator(_host)] = Field(
        default_factory=lambda: parse_ollama_host("127.0.0.1:11433")
    )
    guard_listen: Annotated[OllamaHost | None, NoDecode, BeforeValidator(_optional_host)] = None
    guard_keep_alive: Annotated[GuardKeepAlive, BeforeValidator(_lower)] = "pin"
    guard_options: Annotated[GuardOptions, BeforeValidator(_lower)] = "entry"
    guard_undeclared_keep_alive: Annotated[float | None, BeforeValidator(_optional_seconds)] = None
    guard_hold: Seconds = 30.0
    # One API key a line: clients then need `Authorization: Bearer <key>` (guard/keys.py).
    guard_api_keys_file: Annotated[Path | None, BeforeValidator(_path_or_unset)] = None

    # Warnings found while parsing (duplicates); logged once logging is configured.
    parse_warnings: tuple[str, ...] = Field(default=(), exclude=True)
    models_source: ModelsSource = Field(default="unset", exclude=True)

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        if isinstance(value, str) or value is None:
            parsed = parse_model_list(value)
            return parsed.specs
        return value

    @field_validator("ollama_host", mode="before")
    @classmethod
    def _parse_host(cls, value: Any) -> Any:
        if isinstance(value, str) or value is None:
            return parse_ollama_host(value)
        return value


def variable_name(field: str) -> str:
    """Field name (or alias) -> the variable a user sets, for messages."""
    if field.isupper():
        return field
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        first = info.validation_alias.choices[0]
        return str(first)
    return f"PRELOADER_{field.upper()}"


def _one_line(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    message = str(err.get("msg", "invalid value"))
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, SpecError | InvalidHost | ValueError) and str(inner):
        message = str(inner)
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    given = err.get("input")
    name = variable_name(field)
    if isinstance(inner, SpecError):
        return message  # already names OLLAMA_PRELOAD_MODELS and the entry
    if isinstance(given, str):
        return f"{name}={given!r}: {message}"
    return f"{name}: {message}"


def load_settings(
    env_file: Path | None = Path(".env"), *, read_models_file: bool = True
) -> Settings:
    """Build Settings from the environment and `.env`; ConfigError with one line on bad input.

    With PRELOADER_MODELS_FILE the models come from that file (ModelsFileError, a ConfigError
    naming the path, when it is missing or has a bad line); `read_models_file=False` leaves
    `models` empty for a caller that reads the file itself (the live reload).
    """
    dotenv = read_dotenv(env_file)
    models_file, file_origin = _raw(ENV_MODELS_FILE, dotenv)
    raw, models_origin = _raw(ENV_MODELS, dotenv)
    # Checked before anything is parsed: a bad entry in a list that must go anyway is not the
    # error to show first.
    if (models_file or "").strip() and (raw or "").strip().strip("\"'").strip():
        raise ConfigError(
            f"{ENV_MODELS_FILE} (from {_where(file_origin, env_file)}) and {ENV_MODELS} (from "
            f"{_where(models_origin, env_file)}) are both set: declare the models in one place; "
            f"move the list into the file and remove {ENV_MODELS}, or unset {ENV_MODELS_FILE}"
        )
    try:
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    if settings.retry_max < settings.retry_initial:
        raise ConfigError(
            "PRELOADER_RETRY_MAX must be at least PRELOADER_RETRY_INITIAL "
            f"({settings.retry_max:g}s < {settings.retry_initial:g}s)"
        )
    interval = settings.probe_interval
    if interval is not None and settings.probe_timeout >= interval:
        raise ConfigError(
            f"PRELOADER_PROBE_TIMEOUT ({settings.probe_timeout:g}s) must be shorter than "
            f"PRELOADER_PROBE_INTERVAL ({interval:g}s): a probe must end before the next one; "
            "lower the timeout or raise the interval"
        )
    check_ca_file(os.environ)
    if settings.models_file is None and raw is None:
        # A baked image's list is a default, not the user's OLLAMA_PRELOAD_MODELS: either
        # variable, set by the user, replaces it.
        baked = baked_models_file()
        if baked.is_file():
            settings = settings.model_copy(update={"models_file": baked})
    if settings.models_file is not None:
        if not read_models_file:
            return settings.model_copy(update={"models_source": "models-file"})
        parsed = load_models_file(settings.models_file)
        return settings.model_copy(
            update={
                "models": parsed.specs,
                "parse_warnings": parsed.warnings,
                "models_source": "models-file",
            }
        )
    source: ModelsSource = "unset" if raw is None else models_origin
    return settings.model_copy(
        update={"parse_warnings": parse_model_list(raw).warnings, "models_source": source}
    )


def baked_models_file() -> Path:
    """Where a baked image records its models (the Dockerfile's `baked` stage writes it)."""
    return Path(os.environ.get(ENV_BAKED_MODELS_FILE) or BAKED_MODELS_FILE)


def _raw(
    name: str, dotenv: Mapping[str, str]
) -> tuple[str | None, Literal["environment", "env-file"]]:
    """A variable's text as Settings sees it (the real environment wins over `.env`), and which
    of the two it came from."""
    if name in os.environ:
        return os.environ[name], "environment"
    return dotenv.get(name), "env-file"


def _where(origin: Literal["environment", "env-file"], env_file: Path | None) -> str:
    return "the environment" if origin == "environment" else str(env_file)


def read_dotenv(path: Path | None) -> dict[str, str]:
    """Variables from a `.env` file, if there is one (docker compose reads the same file)."""
    if path is None:
        return {}
    try:
        return read_env_file(path)
    except EnvFileError as exc:
        raise ConfigError(str(exc)) from None


def server_environment(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> dict[str, str]:
    """The environment for `ollama serve`: ours, plus OLLAMA_* set only in `.env`."""
    source = dict(os.environ if environ is None else environ)
    extra = {
        k: v
        for k, v in read_dotenv(env_file).items()
        if k.startswith("OLLAMA_") and k not in source
    }
    return {**source, **extra}
