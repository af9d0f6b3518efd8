"""Settings: every knob, read once from the environment and `.env`, frozen, passed down."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from ollama_preloader.config import values
from ollama_preloader.config.cafile import check_ca_file
from ollama_preloader.config.environ import baked_models_file, declared_list, read_dotenv
from ollama_preloader.config.models_file import load_models_file
from ollama_preloader.config.modelspec import ModelSpec, SpecError, parse_model_list
from ollama_preloader.config.profiles import Profile, Quantization
from ollama_preloader.config.values import (
    PROBE_INTERVAL,
    PROBE_TIMEOUT,
    GuardKeepAlive,
    GuardOptions,
    LogFormat,
    LogLevel,
    PullPolicy,
    RemovePolicy,
    ServerExitPolicy,
    StaleRunnerPolicy,
    UpdateMode,
    check_across,
)
from ollama_preloader.errors import ConfigError
from ollama_preloader.observe.healthcheck import DEFAULT_HOST, DEFAULT_PORT
from ollama_preloader.ollama.host import InvalidHost, OllamaHost, parse_ollama_host

# Where the declared list came from: it decides what a live reload can re-read.
ModelsSource = Literal["unset", "environment", "env-file", "models-file"]


Seconds = Annotated[float, BeforeValidator(values.seconds), Field(gt=0)]


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
    ollama_max_loaded_models: Annotated[int | None, BeforeValidator(values.optional_count)] = Field(
        default=None, validation_alias=AliasChoices("OLLAMA_MAX_LOADED_MODELS")
    )
    # The server's default keep-alive: what a removed model is released to (PRELOADER_ON_REMOVE).
    ollama_keep_alive: Annotated[float, BeforeValidator(values.ollama_keep_alive)] = Field(
        default=300.0, validation_alias=AliasChoices("OLLAMA_KEEP_ALIVE")
    )
    # The list as a file, re-read live; excludes OLLAMA_PRELOAD_MODELS (see load_settings).
    models_file: Annotated[Path | None, BeforeValidator(values.path_or_unset)] = None
    on_remove: Annotated[RemovePolicy, BeforeValidator(values.lower)] = "release"
    # `run`: runners of this store left by an earlier run (server/stale.py).
    stale_runners: Annotated[StaleRunnerPolicy, BeforeValidator(values.lower)] = "stop"
    watch_interval: Seconds = 1.0
    api_timeout: Seconds = 10.0
    refresh_interval: Seconds = 300.0
    capacity_backoff: Seconds = 900.0
    oom_retry: Seconds = 30.0
    pull_policy: Annotated[PullPolicy, BeforeValidator(values.lower)] = "if-missing"
    ready_timeout: Seconds = 300.0
    shutdown_grace: Seconds = 20.0
    on_server_exit: Annotated[ServerExitPolicy, BeforeValidator(values.lower)] = "restart"
    pull_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    pull_stall_timeout: Seconds = 300.0
    retry_initial: Seconds = 1.0
    retry_max: Seconds = 60.0
    ollama_command: str = "ollama"
    log_polls: bool = False
    log_level: Annotated[LogLevel, BeforeValidator(values.lower)] = "info"
    log_format: Annotated[LogFormat, BeforeValidator(values.lower)] = "auto"
    profile: Annotated[Profile, BeforeValidator(values.profile)] = "auto"
    quantization: Annotated[Quantization | None, BeforeValidator(values.lower_or_unset)] = None
    warmup: bool = False
    health_port: Annotated[int | None, BeforeValidator(values.health_port)] = DEFAULT_PORT
    health_host: Annotated[str, BeforeValidator(values.health_host)] = DEFAULT_HOST
    # A real request per pinned model (reconcile/probing.py); None: `off`.
    probe_interval: Annotated[
        Annotated[float, Field(gt=0)] | None, BeforeValidator(values.interval_or_off)
    ] = PROBE_INTERVAL
    probe_timeout: Seconds = PROBE_TIMEOUT
    # Updates (README "Keeping models current"): off sends nothing to any registry.
    update: Annotated[UpdateMode, BeforeValidator(values.lower)] = "off"
    update_interval: Annotated[float, BeforeValidator(values.go_duration), Field(gt=0)] = 86400.0
    update_window: Annotated[tuple[int, int] | None, BeforeValidator(values.window)] = None
    # Where the swap lock lives (shared by the supervisor and `update` on one machine).
    state_dir: Annotated[Path | None, BeforeValidator(values.path_or_unset)] = None
    # The guard (guard/): an opt-in proxy in front of Ollama that keeps clients from undoing
    # the pin. In `run` it takes OLLAMA_HOST's address and `ollama serve` moves to the upstream.
    guard: bool = False
    guard_upstream: Annotated[OllamaHost, NoDecode, BeforeValidator(values.host)] = Field(
        default_factory=lambda: parse_ollama_host("127.0.0.1:11433")
    )
    guard_listen: Annotated[OllamaHost | None, NoDecode, BeforeValidator(values.optional_host)] = (
        None
    )
    guard_keep_alive: Annotated[GuardKeepAlive, BeforeValidator(values.lower)] = "pin"
    guard_options: Annotated[GuardOptions, BeforeValidator(values.lower)] = "entry"
    guard_undeclared_keep_alive: Annotated[
        float | None, BeforeValidator(values.optional_seconds)
    ] = None
    guard_hold: Seconds = 30.0
    # One API key a line: clients then need `Authorization: Bearer <key>` (guard/keys.py).
    guard_api_keys_file: Annotated[Path | None, BeforeValidator(values.path_or_unset)] = None

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
    env_file: Path | None = Path(".env"), *, read_models_file: bool = True, check_ca: bool = True
) -> Settings:
    """Build Settings from the environment and `.env`; ConfigError with one line on bad input.

    With PRELOADER_MODELS_FILE the models come from that file (ModelsFileError, a ConfigError
    naming the path, when it is missing or has a bad line); `read_models_file=False` leaves
    `models` empty for a caller that reads the file itself (the live reload). `check_ca=False`:
    the caller has checked SSL_CERT_FILE already (`run`'s precheck).
    """
    dotenv = read_dotenv(env_file)
    raw, models_origin = declared_list(env_file, dotenv)
    try:
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    except SettingsError as exc:
        # A value pydantic-settings decodes as JSON first, that is not JSON.
        field = re.search(r'field "(\w+)"', str(exc))
        name = variable_name(field.group(1)) if field else "a setting"
        raise ConfigError(f"{name}: {exc}; correct the value or unset it") from None
    check_across(
        settings.retry_initial, settings.retry_max, settings.probe_interval, settings.probe_timeout
    )
    if check_ca:
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
