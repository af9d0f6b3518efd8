"""entry.plain_run: the `run` spellings that skip typer read the env file exactly as typer does."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_preloader import launch
from ollama_preloader.cli import app
from ollama_preloader.entry import plain_run

SAME_AS_TYPER = [
    ["run"],
    ["run", "--env-file", "custom.env"],
    ["run", "--env-file=custom.env"],
    ["run", "--env-file", "with space.env"],
    ["run", "--env-file", "~/x.env"],
]


def typer_env_file(args: list[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The env file typer's `run` command hands to launch.run for these arguments."""
    seen: list[Path] = []

    def record(env_file: Path) -> None:
        seen.append(env_file)

    monkeypatch.setattr(launch, "run", record)
    app(args, standalone_mode=False)
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("args", SAME_AS_TYPER)
@pytest.mark.parametrize("variable", [None, "", "from-variable.env"])
def test_a_plain_run_reads_the_env_file_typer_would(
    args: list[str], variable: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if variable is None:
        monkeypatch.delenv("PRELOADER_ENV_FILE", raising=False)
    else:
        monkeypatch.setenv("PRELOADER_ENV_FILE", variable)
    assert plain_run(args) == typer_env_file(args, monkeypatch)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["watch"],
        ["run", "--help"],
        ["run", "--env-file"],
        ["run", "--env-file", "--help"],
        ["run", "--env-file", ""],
        ["run", "--env-file="],
        ["run", "--env-file", "a", "--env-file", "b"],
        ["run", "--env", "a"],
        ["run", "extra"],
        ["--version", "run"],
    ],
)
def test_every_other_spelling_is_left_to_typer(args: list[str]) -> None:
    assert plain_run(args) is None
