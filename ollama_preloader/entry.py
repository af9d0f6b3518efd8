"""The console script: `health` and a plain `run` go straight to their code, the rest to typer.

Docker and Kubernetes run `ollama-preloader health` every few seconds; importing typer,
pydantic and the Ollama client first would cost more than the check itself. `run` spawns
`ollama serve` as soon as the settings are valid, and typer (with the rich it loads) would add
~80 ms before the spawn: a plain `run` or `run --env-file PATH` goes to launch.py, any other
spelling (`--help`, a typo, an option twice) to the typer app, for its usual help and errors.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

ENV_FILE_OPTION = "--env-file"
ENV_FILE_VARIABLE = "PRELOADER_ENV_FILE"


def plain_run(args: list[str]) -> Path | None:
    """The env file of a `run` typer would read the same way, or None to let typer parse it.

    Only the spellings whose meaning is certain: `run`, `run --env-file PATH` and
    `run --env-file=PATH`. As typer does, an empty PRELOADER_ENV_FILE counts as unset.
    """
    if args[:1] != ["run"]:
        return None
    rest = args[1:]
    value: str | None = None
    if len(rest) == 2 and rest[0] == ENV_FILE_OPTION:
        value = rest[1]
    elif len(rest) == 1 and rest[0].startswith(ENV_FILE_OPTION + "="):
        value = rest[0].removeprefix(ENV_FILE_OPTION + "=")
    elif rest:
        return None
    if value is not None:
        # A value that looks like an option (`--env-file --help`) or is empty: typer's call.
        return Path(value) if value and not value.startswith("-") else None
    return Path(os.environ.get(ENV_FILE_VARIABLE) or ".env")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["health"]:
        from ollama_preloader.observe.healthcheck import run_health

        sys.exit(run_health(args[1:]))
    env_file = plain_run(args)
    if env_file is not None:
        from ollama_preloader.launch import run

        try:
            run(env_file)
        except KeyboardInterrupt:
            # A Ctrl-C before any handler of ours: 128+SIGINT, as typer exits for it.
            from ollama_preloader.errors import exit_code_for_signal

            sys.exit(exit_code_for_signal(signal.SIGINT))
    from ollama_preloader.cli import main as cli_main

    cli_main()
