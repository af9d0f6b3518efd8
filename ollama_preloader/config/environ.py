"""Where the settings' text comes from: the environment, `.env`, a baked image's list.

Without pydantic: settings.py reads through it, and so does `run`'s precheck (precheck.py)
before pydantic is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from ollama_preloader.config.models_file import ENV_MODELS_FILE
from ollama_preloader.config.modelspec import ENV_MODELS
from ollama_preloader.errors import ConfigError
from ollama_preloader.observe.healthcheck import EnvFileError, read_env_file

# Written by the Dockerfile's `baked` stage; used only when neither OLLAMA_PRELOAD_MODELS nor
# PRELOADER_MODELS_FILE is set. The variable moves it, for tests and derived images.
BAKED_MODELS_FILE = Path("/etc/ollama-preloader/baked-models.txt")
ENV_BAKED_MODELS_FILE = "PRELOADER_BAKED_MODELS_FILE"

Origin = Literal["environment", "env-file"]


def baked_models_file() -> Path:
    """Where a baked image records its models (the Dockerfile's `baked` stage writes it)."""
    return Path(os.environ.get(ENV_BAKED_MODELS_FILE) or BAKED_MODELS_FILE)


def raw_variable(name: str, dotenv: Mapping[str, str]) -> tuple[str | None, Origin]:
    """A variable's text as Settings sees it (the real environment wins over `.env`), and which
    of the two it came from."""
    if name in os.environ:
        return os.environ[name], "environment"
    return dotenv.get(name), "env-file"


def declared_list(env_file: Path | None, dotenv: Mapping[str, str]) -> tuple[str | None, Origin]:
    """OLLAMA_PRELOAD_MODELS's text and origin; ConfigError when PRELOADER_MODELS_FILE is set too.

    Checked before anything is parsed: a bad entry in a list that must go anyway is not the
    error to show first.
    """
    models_file, file_origin = raw_variable(ENV_MODELS_FILE, dotenv)
    raw, models_origin = raw_variable(ENV_MODELS, dotenv)
    if (models_file or "").strip() and (raw or "").strip().strip("\"'").strip():
        raise ConfigError(
            f"{ENV_MODELS_FILE} (from {_where(file_origin, env_file)}) and {ENV_MODELS} (from "
            f"{_where(models_origin, env_file)}) are both set: declare the models in one place; "
            f"move the list into the file and remove {ENV_MODELS}, or unset {ENV_MODELS_FILE}"
        )
    return raw, models_origin


def _where(origin: Origin, env_file: Path | None) -> str:
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
