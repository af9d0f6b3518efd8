"""The typer app: builds Settings, configures logs, runs a command, maps errors to exit codes.

This module and launch.py (`run`'s start, which entry.py calls without loading typer) are the
only ones that decide exit codes (see errors.py for the table).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from ollama_preloader import __version__, launch
from ollama_preloader.errors import (
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_PULL_FAILED,
    ConfigError,
    PreloaderError,
    exit_code_for_signal,
)
from ollama_preloader.launch import fail as _fail
from ollama_preloader.launch import settings_or_exit as _settings

EXIT_NOT_READY = EXIT_INTERNAL  # `status` and `health`: 1 means "not every model is pinned"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Keep Ollama models pulled, loaded and pinned: a supervisor for `ollama serve`.",
)

EnvFile = Annotated[
    Path,
    typer.Option(
        "--env-file",
        help="Read variables from this file too (real ones win).",
        envvar="PRELOADER_ENV_FILE",
    ),
]


@app.command()
def run(env_file: EnvFile = Path(".env")) -> None:
    """Start `ollama serve`, pull and pin the declared models, keep them pinned until stopped."""
    # entry.py calls the same function directly for a plain `run [--env-file PATH]`.
    launch.run(env_file)


@app.command()
def watch(env_file: EnvFile = Path(".env")) -> None:
    """Keep the declared models pinned on an Ollama you run yourself (at OLLAMA_HOST).

    Sidecar mode, for the Linux systemd service, the desktop apps or a remote server: it waits
    for the server whenever it is away and never starts, stops or signals it.
    """
    from ollama_preloader.observe.logs import configure

    launch.leave_out_unused()
    settings = _settings(env_file)
    from ollama_preloader.reconcile.supervisor import Supervisor
    from ollama_preloader.server.remote import (
        RemoteServer,
        check_sidecar_settings,
        sidecar_settings,
    )

    try:
        check_sidecar_settings(settings)
        if settings.guard:
            from ollama_preloader.guard.wiring import for_watch

            settings = for_watch(settings)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    settings = sidecar_settings(settings)
    configure(settings.log_level, settings.log_format)
    supervisor = Supervisor(
        settings, RemoteServer(settings), env_file=env_file, mode_defaults=sidecar_settings
    )
    launch.run_to_exit(supervisor.run())


@app.command()
def pull(env_file: EnvFile = Path(".env")) -> None:
    """Pull the declared models with a temporary `ollama serve`, then stop it (no loads).

    For a `RUN` step in a Dockerfile: exit 0 when every model is in the store, 4 naming the
    models that could not be pulled.
    """
    from ollama_preloader.config.environ import server_environment
    from ollama_preloader.observe.logs import configure

    settings = _settings(env_file)
    configure(settings.log_level, settings.log_format)
    from ollama_preloader.bake import Baker

    baker = Baker(settings, server_env=server_environment(env_file=env_file))
    try:
        result = asyncio.run(baker.run())
    except PreloaderError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    if result.interrupted_by is not None:
        raise typer.Exit(exit_code_for_signal(result.interrupted_by))
    if result.failed:
        failures = "; ".join(f"{name} ({reason})" for name, reason in result.failed)
        raise _fail(
            f"{len(result.failed)} of {len(settings.models)} models could not be pulled: "
            f"{failures}",
            EXIT_PULL_FAILED,
        )
    raise typer.Exit(0)


@app.command()
def update(
    models: Annotated[
        list[str] | None, typer.Argument(help="Models to update (default: the declared ones).")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Only compare with the registries: exit 0 current, 100 available."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Find updates of the models in their registries and apply them without a gap.

    Without --check each update is applied to the server at OLLAMA_HOST, one model at a time:
    the new copy is pinned before the old runner goes. Exit 0 when every model is current
    (afterwards), 100 when an update is available (--check), 1 when a check or update failed.
    """
    from ollama_preloader.observe.logs import configure

    settings = _settings(env_file)
    configure(settings.log_level, settings.log_format)
    from ollama_preloader.update import run_update

    try:
        code = asyncio.run(run_update(settings, models or [], check_only=check, as_json=as_json))
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    except PreloaderError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    raise typer.Exit(code)


@app.command()
def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the /status document as JSON, for scripts.")
    ] = False,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Show each declared model's state, as the running supervisor sees it.

    Exit 0 when every declared model is loaded and pinned, 1 otherwise (or when no supervisor
    answers on 127.0.0.1:PRELOADER_HEALTH_PORT).
    """
    import json

    from ollama_preloader.observe.healthcheck import (
        HealthConfigError,
        Unreachable,
        fetch,
        resolve_address,
    )
    from ollama_preloader.observe.statustable import render

    try:
        address = resolve_address(env_file)
    except HealthConfigError as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    try:
        _, document = fetch(address, "/status")
    except Unreachable as exc:
        raise _fail(str(exc), EXIT_NOT_READY) from None
    if as_json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(render(document), end="")
    raise typer.Exit(EXIT_OK if document.get("ready") else EXIT_NOT_READY)


@app.command()
def health(
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Exit 0 when the supervisor and `ollama serve` are up, whatever the "
            "models are doing.",
        ),
    ] = False,
    env_file: EnvFile = Path(".env"),
) -> None:
    """Exit 0 when every declared model is loaded and pinned, 1 otherwise, with a reason.

    For Docker's HEALTHCHECK and Kubernetes exec probes. The console script runs this without
    loading the rest of the app (see entry.py); this command is the same code.
    """
    from ollama_preloader.observe.healthcheck import run_health

    args = ["--env-file", str(env_file)]
    raise typer.Exit(run_health(["--live", *args] if live else args))


def _version(value: bool) -> None:
    if value:
        print(f"ollama-preloader {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """ollama-preloader."""


def main() -> None:
    app()
