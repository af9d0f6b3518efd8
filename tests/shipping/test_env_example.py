""".env.example: every variable the product reads, once each with its default; nothing else."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from shipping.checkers import REPO
from shipping.variables import (
    OTHER_VARIABLES,
    cli_variables,
    known_variables,
    readme_ollama_variables,
    settings_variables,
)

from ollama_preloader.config.settings import Settings, load_settings

EXAMPLE = REPO / ".env.example"
EXAMPLES_MARKER = "===== Example configurations"
DECLARATION = re.compile(r"^# ?([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class Declaration:
    name: str
    value: str
    comment: str  # the one-line comment above it


def _sections() -> tuple[list[str], list[str]]:
    lines = EXAMPLE.read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if EXAMPLES_MARKER in line)
    return lines[:marker], lines[marker + 1 :]


def declarations() -> list[Declaration]:
    """`# NAME=default` lines of the variables part, with the comment line above each."""
    head, _ = _sections()
    out = []
    for index, line in enumerate(head):
        match = DECLARATION.match(line)
        if match:
            above = head[index - 1] if index else ""
            comment = "" if DECLARATION.match(above) or not above.startswith("# ") else above
            out.append(Declaration(match.group(1), match.group(2), comment))
    return out


def example_blocks() -> dict[str, dict[str, str]]:
    """The commented example configurations: title -> {name: value}."""
    _, tail = _sections()
    blocks: dict[str, dict[str, str]] = {}
    title = ""
    for line in tail:
        header = re.match(r"^# --- (.+?) ---$", line)
        if header:
            title = header.group(1)
            blocks[title] = {}
            continue
        match = DECLARATION.match(line)
        if match:
            assert title, f"{line!r} is outside an example block"
            blocks[title][match.group(1)] = match.group(2)
    return blocks


def _load(tmp_path: Path, values: dict[str, str]) -> Settings:
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return load_settings(env_file)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("OLLAMA_", "PRELOADER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_lists_every_variable_and_nothing_else() -> None:
    """Declared names == Settings' variables + the Ollama variables docs/configuration.md lists."""
    declared = {d.name for d in declarations()}
    expected = known_variables()
    missing, extra = sorted(expected - declared), sorted(declared - expected)
    assert not missing, f".env.example lacks {missing}: add each with a comment and its default"
    assert not extra, f".env.example lists {extra}, which the product does not read or document"


def test_each_variable_once_with_a_one_line_comment() -> None:
    """No variable is declared twice, and each has its own comment line above it."""
    names = [d.name for d in declarations()]
    assert len(names) == len(set(names)), f"declared twice: {names}"
    uncommented = [d.name for d in declarations() if len(d.comment) < 10]
    assert not uncommented, f"no comment above {uncommented}"


def test_groups_ollama_first_then_preloader() -> None:
    """Ollama's own variables come first, then the supervisor's PRELOADER_ knobs, then the few
    others it reads (SSL_CERT_FILE)."""
    names = [d.name for d in declarations()]
    kinds = [
        0 if n.startswith("OLLAMA_") else 1 if n.startswith("PRELOADER_") else 2 for n in names
    ]
    assert kinds == sorted(kinds), names
    assert all(n.startswith(("OLLAMA_", "PRELOADER_")) or n in OTHER_VARIABLES for n in names)


def test_shown_values_are_the_real_defaults(tmp_path: Path) -> None:
    """Setting each variable to the value shown changes nothing: it is Settings' default."""
    defaults = load_settings(None)
    fields = settings_variables()
    shown = [d for d in declarations() if d.name in fields]
    assert {d.name for d in shown} == set(fields)
    for decl in shown:
        field = fields[decl.name]
        loaded = _load(tmp_path, {decl.name: decl.value})
        assert getattr(loaded, field) == getattr(defaults, field), decl


def test_cli_variables_are_explained() -> None:
    """Variables read by the CLI itself (not settable in the file) are mentioned in its header."""
    text = EXAMPLE.read_text()
    for name in cli_variables():
        assert name in text, f"{name} is read by the CLI but .env.example does not mention it"


def test_readme_documents_the_variables_settings_read() -> None:
    """The OLLAMA_* variables Settings reads are in docs/configuration.md's Ollama table too."""
    read = {n for n in settings_variables() if n.startswith("OLLAMA_")}
    assert read <= readme_ollama_variables()


EXPECTED_EXAMPLES = {
    "Minimal": (
        ["qwen3-coder:30b", "qwen2.5-coder:1.5b-base"],
        "3",
    ),
    "Recommended for Continue.dev": (
        [
            "qwen3-coder:30b",
            "devstral:latest",
            "qwen2.5-coder:1.5b-base",
            "nomic-embed-text:latest",
        ],
        "6",
    ),
    "Maximum": (
        [
            "qwen3-coder:30b",
            "devstral:latest",
            "gpt-oss:20b",
            "qwen2.5-coder:7b-base",
            "nomic-embed-text:latest",
        ],
        "8",
    ),
}


def test_the_three_example_configurations_are_valid(tmp_path: Path) -> None:
    """Minimal, Continue.dev and maximum: known variables only, and they load as settings."""
    blocks = example_blocks()
    titles = {title.split(":")[0]: values for title, values in blocks.items()}
    assert set(titles) == set(EXPECTED_EXAMPLES)
    for title, values in titles.items():
        assert set(values) <= known_variables(), (title, values)
        models, max_loaded = EXPECTED_EXAMPLES[title]
        settings = _load(tmp_path, values)
        assert [m.display for m in settings.models] == models, title
        assert values["OLLAMA_MAX_LOADED_MODELS"] == max_loaded
        assert values["OLLAMA_KEEP_ALIVE"] == "-1"
