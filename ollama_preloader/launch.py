"""`run`'s start without typer: the settings, the checks, `ollama serve` spawned, the supervisor.

entry.py calls `run` here for a plain `ollama-preloader run [--env-file PATH]`, and the typer
command does the same for every other spelling (so `--help` and usage errors stay typer's).
Nothing on the way to the spawn imports typer or rich: Ollama's GPU discovery starts only
with the child, so every millisecond spent before it is added to the user's wait.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ollama_preloader.errors import EXIT_CONFIG, EXIT_INTERNAL, ConfigError, PreloaderError

if TYPE_CHECKING:
    from ollama_preloader.config.precheck import Draft
    from ollama_preloader.config.settings import Settings
    from ollama_preloader.ollama.host import OllamaHost
    from ollama_preloader.server.owned import OwnedServer


def fail(message: str, code: int) -> SystemExit:
    """One line on stderr (after the log lines still queued), then the documented exit code."""
    from ollama_preloader.observe import output

    output.drain()
    print(f"ollama-preloader: error: {message}", file=sys.stderr, flush=True)
    return SystemExit(code)


def settings_or_exit(env_file: Path) -> Settings:
    """Settings or a one-line exit 2. Callers import `ollama` only after this: importing it
    builds a default client from OLLAMA_HOST and would crash on a value refused here."""
    from ollama_preloader.config.settings import load_settings

    try:
        return load_settings(env_file)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


def exit_for(exc: Exception) -> SystemExit:
    """The documented exit for what ended a command: a PreloaderError's code and message, or an
    internal error (logged with its traceback) for anything else."""
    if isinstance(exc, PreloaderError):
        return fail(str(exc), exc.exit_code)
    from ollama_preloader.observe.logs import get_logger

    get_logger().exception("supervisor.crashed", msg=f"Internal error: {exc!r}")
    return fail(f"internal error: {exc!r} (please report it)", EXIT_INTERNAL)


def run_to_exit(
    main: Coroutine[Any, Any, int], stop_now: Callable[[], None] | None = None
) -> NoReturn:
    """Run the command's coroutine; its code, or a PreloaderError's, is the exit code.

    Whatever ends it, `stop_now` (run: the child's group, TERM then KILL) runs before we
    leave: an exception that escaped the supervisor's own shutdown must not leave
    `ollama serve` and its runners behind.
    """
    import asyncio

    try:
        code = asyncio.run(main)
    except Exception as exc:
        raise exit_for(exc) from None
    finally:
        if stop_now is not None:
            stop_now()
    raise SystemExit(code)


def leave_out_unused() -> None:
    """Keep out of the process what a supervisor never uses, before anything imports it.

    httpx's package imports its command-line client (`httpx._main`), and with it click,
    pygments and rich whenever they are installed (typer installs them): ~4 MB resident for as
    long as the supervisor runs. A None entry makes that import fail, and httpx then defines
    its stub `main` instead, as when its `cli` extra is not installed.
    """
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def catch_stop_signals() -> tuple[list[int], list[int]]:
    """(the signals caught, the list they are recorded in) until the supervisor takes over.

    Installed before `ollama serve` is spawned: from then on a `docker stop` or Ctrl-C must
    not take the default action's death, which would skip stopping it.
    """
    early: list[int] = []
    caught: list[int] = [signal.SIGTERM, signal.SIGINT]
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:  # under nohup it stays ignored
        caught.append(signal.SIGHUP)
    for signum in caught:
        signal.signal(signum, lambda number, _frame: early.append(number))
    return caught, early


def run(env_file: Path) -> NoReturn:
    """Start `ollama serve`, pull and pin the declared models, keep them pinned until stopped."""
    from ollama_preloader.config.cafile import start_ca_check

    # OpenSSL's load of the CA file runs beside the settings' imports (see config/cafile.py).
    start_ca_check(os.environ)
    from ollama_preloader import deferred

    # Imported by the settings' libraries, needed only once the child is spawned.
    deferred.defer("asyncio")
    leave_out_unused()
    from ollama_preloader.config.precheck import precheck

    draft = precheck(env_file)
    if draft is not None and not draft.guard:
        settings, server, seen_env, (caught, early) = _spawn_first(env_file, draft)
        mode_defaults = None
    else:
        settings, server, seen_env, mode_defaults, (caught, early) = _validate_first(env_file)
    deferred.load("asyncio")
    run_to_exit(
        _supervise(settings, server, env_file, seen_env, mode_defaults, caught=caught, early=early),
        server.stop_now,
    )


def _check_before_spawn(host: OllamaHost, health_host: str, health_port: int | None) -> None:
    """Exit 2 for an address `run` can never use, before anything is started."""
    from ollama_preloader.server.owned import check_owned_host

    try:
        check_owned_host(host)
        if health_port is not None:
            from ollama_preloader.observe.listen import check_free

            check_free(health_host, health_port)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


def _spawn_now(server: OwnedServer) -> tuple[list[int], list[int]]:
    """`ollama serve` spawned before the event loop exists (Ollama's GPU discovery starts only
    with the child); the stop signals caught from here on (see catch_stop_signals)."""
    caught = catch_stop_signals()
    try:
        server.spawn_now()
    except Exception as exc:
        server.stop_now()  # whatever failed after the spawn, `ollama serve` is not left
        raise exit_for(exc) from None
    return caught


def _spawn_first(
    env_file: Path, draft: Draft
) -> tuple[Settings, OwnedServer, dict[str, str], tuple[list[int], list[int]]]:
    """The precheck vouched for the input: spawn, then build Settings while Ollama starts."""
    from ollama_preloader.config.environ import server_environment
    from ollama_preloader.observe.logs import configure
    from ollama_preloader.server.owned import OwnedServer

    _check_before_spawn(draft.ollama_host, draft.health_host, draft.health_port)
    configure(draft.log_level, draft.log_format)  # the stale-runner check and the spawn log
    env = server_environment(env_file=env_file)
    server = OwnedServer(draft, env)
    signals = _spawn_now(server)
    from ollama_preloader.config.settings import load_settings

    try:
        # The validator of record; the precheck ran the CA check. Refusing what the precheck
        # vouched for would be a precheck bug: the child goes, and the exit is still 2.
        settings = load_settings(env_file, check_ca=False)
    except Exception as exc:
        server.stop_now()
        raise exit_for(exc) from None  # a ConfigError's is exit 2 with its one line
    server.settings = settings
    return settings, server, env, signals


def _validate_first(
    env_file: Path,
) -> tuple[
    Settings,
    OwnedServer,
    dict[str, str],
    Callable[[Settings], Settings] | None,
    tuple[list[int], list[int]],
]:
    """Settings first (exit 2 with nothing started), then the spawn: for an input the precheck
    left to Settings, and for the guard, which binds its address first."""
    from ollama_preloader.config.environ import server_environment
    from ollama_preloader.observe.logs import configure

    settings = settings_or_exit(env_file)
    from ollama_preloader.server.owned import OwnedServer

    # With the guard, the health endpoints are the guard's: it binds them itself.
    health_port = None if settings.guard else settings.health_port
    _check_before_spawn(settings.ollama_host, settings.health_host, health_port)
    configure(settings.log_level, settings.log_format)
    env = server_environment(env_file=env_file)
    # What a SIGHUP compares its re-read against: with the guard, `ollama serve` gets the
    # upstream as OLLAMA_HOST, but the environment and .env still say the guard's address.
    seen_env, mode_defaults = env, None
    if settings.guard:
        from ollama_preloader.guard.wiring import for_run, moved_behind

        try:
            settings, env = for_run(settings, env)
        except ConfigError as exc:
            raise fail(str(exc), EXIT_CONFIG) from None
        mode_defaults = moved_behind
    server = OwnedServer(settings, env)
    signals: tuple[list[int], list[int]] = ([], [])
    if not settings.guard:
        # With the guard on, the guard binds its address first (a taken one must stop the run
        # with nothing started), so the supervisor spawns it as before.
        signals = _spawn_now(server)
    return settings, server, seen_env, mode_defaults, signals


async def _supervise(
    settings: Settings,
    server: OwnedServer,
    env_file: Path,
    seen_env: dict[str, str],
    mode_defaults: Callable[[Settings], Settings] | None,
    *,
    caught: list[int],
    early: list[int],
) -> int:
    """Import and build the supervisor while the `ollama serve` spawned before starts.

    Ollama's GPU discovery begins only with the child, so every import done before the spawn
    (the supervisor's path is ~0.4 s: the Ollama client, prometheus-client, ...) would add to
    the user's wait.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    for signum in caught:
        loop.add_signal_handler(signum, early.append, signum)
    await server.attach()  # its output relayed at once: Ollama must never block on a pipe
    from ollama_preloader.reconcile.supervisor import Supervisor

    supervisor = Supervisor(
        settings, server, env_file=env_file, server_env=seen_env, mode_defaults=mode_defaults
    )
    # The hand-over: the supervisor's run installs its own handlers (replacing these, with no
    # await before it) and then meets the signals caught meanwhile again, in order. So
    # `docker stop` or Ctrl-C in the first fraction of a second is the same clean stop as
    # later (a second one kills at once), and a SIGHUP is a hang-up or a re-read as later;
    # never the default action's death, which would skip stopping `ollama serve`.
    for signum in early:
        loop.call_soon(signal.raise_signal, signum)
    return await supervisor.run()
