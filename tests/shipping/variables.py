"""Which environment variables the product reads: from the code and docs/configuration.md."""

from __future__ import annotations

import re

import typer.main
from pydantic import AliasChoices
from shipping.checkers import REPO

from ollama_preloader.cli import app
from ollama_preloader.config.settings import Settings


def settings_variables() -> dict[str, str]:
    """Variable name -> Settings field, for every field a user can set."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    out: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        if info.exclude:
            continue  # internal state carried on Settings, not a knob
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                out[str(choice)] = field
        elif isinstance(alias, str):
            out[alias] = field
        else:
            out[f"{prefix}{field}".upper()] = field
    return out


def cli_variables() -> set[str]:
    """Variables the CLI reads for its options (e.g. PRELOADER_ENV_FILE)."""
    names: set[str] = set()
    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    for command in commands.values():
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif isinstance(envvar, list | tuple):
                names.update(str(e) for e in envvar)
    return names


def readme_ollama_variables() -> set[str]:
    """The Ollama variables in docs/configuration.md's "Ollama's own variables" table."""
    text = (REPO / "docs" / "configuration.md").read_text()
    match = re.search(r"^## Ollama's own variables\n(.*?)^#", text, re.MULTILINE | re.DOTALL)
    assert match, "docs/configuration.md has no '## Ollama's own variables' section"
    rows = [line for line in match.group(1).splitlines() if line.startswith("| `")]
    return {m.group(1) for row in rows if (m := re.match(r"\| `(OLLAMA_[A-Z0-9_]+)`", row))}


# Read outside Settings: config/settings.py checks at start that SSL_CERT_FILE loads.
OTHER_VARIABLES = {"SSL_CERT_FILE"}


def known_variables() -> set[str]:
    """Every variable the product reads or documents as passed through to `ollama serve`."""
    return set(settings_variables()) | readme_ollama_variables() | OTHER_VARIABLES
