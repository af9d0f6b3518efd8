"""`run`'s start without typer: the settings, the checks, `ollama serve` spawned, the supervisor.

entry.py calls `run` here for a plain `ollama-preloader run [--env-file PATH]`, and the typer
command does the same for every other spelling (so `--help` and usage errors stay typer's).
Nothing on the way to the spawn imports typer or rich: Ollama's GPU discovery starts only
with the child, so every millisecond spent before it is added to the user's wait.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ollama_preloader.errors import EXIT_CONFIG, EXIT_INTERNAL, EXIT_OK, ConfigError, PreloaderError

if TYPE_CHECKING:
    from ollama_preloader.config.settings import Settings
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


def run_to_exit(
    main: Coroutine[Any, Any, int], stop_now: Callable[[], None] | None = None
) -> NoReturn:
    """Run the command's coroutine; its code, or a PreloaderError's, is the exit code.

    Whatever ends it, `stop_now` (run: the child's group, TERM then KILL) runs before we
    leave: an exception that escaped the supervisor's own shutdown must not leave
    `ollama serve` and its runners behind.
    """
    try:
        code = asyncio.run(main)
    except PreloaderError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except Exception as exc:
        from ollama_preloader.observe.logs import get_logger

        get_logger().exception("supervisor.crashed", msg=f"Internal error: {exc!r}")
        raise fail(f"internal error: {exc!r} (please report it)", EXIT_INTERNAL) from None
    finally:
        if stop_now is not None:
            stop_now()
    raise SystemExit(code)


def run(env_file: Path) -> NoReturn:
    """Start `ollama serve`, pull and pin the declared models, keep them pinned until stopped."""
    from ollama_preloader.config.settings import server_environment
    from ollama_preloader.observe.logs import configure

    settings = settings_or_exit(env_file)
    from ollama_preloader.server.owned import OwnedServer, check_owned_settings

    try:
        check_owned_settings(settings)
        if settings.health_port is not None and not settings.guard:
            from ollama_preloader.observe.listen import check_free

            check_free(settings.health_host, settings.health_port)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    # Before the spawn: the stale-runner check and the spawn itself log events.
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
    run_to_exit(_supervise(settings, server, env_file, seen_env, mode_defaults), server.stop_now)


async def _supervise(
    settings: Settings,
    server: OwnedServer,
    env_file: Path,
    seen_env: dict[str, str],
    mode_defaults: Callable[[Settings], Settings] | None,
) -> int:
    """Spawn `ollama serve` first, then import and build the supervisor while it starts.

    Ollama's GPU discovery begins only with the child, so every import done before the spawn
    (the supervisor's path is ~0.4 s: the Ollama client, prometheus-client, ...) would add to
    the user's wait. With the guard on, the guard binds its address before the spawn (a taken
    one must stop the run with nothing started), so the supervisor spawns as before.
    """
    early: list[int] = []  # a stop asked for while the supervisor was still being built
    if not settings.guard:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, early.append, signum)
        await server.spawn()
    from ollama_preloader.observe.logs import get_logger
    from ollama_preloader.reconcile.supervisor import Supervisor

    log = get_logger()
    supervisor = Supervisor(
        settings, server, env_file=env_file, server_env=seen_env, mode_defaults=mode_defaults
    )
    await asyncio.sleep(0)  # a signal that came during the imports is handled here
    if early:
        # `docker stop` or Ctrl-C in the first fraction of a second: the same clean stop of
        # the child and the same exit code as later, never the default action's death.
        log.info(
            "supervisor.stopping",
            msg=f"Received {signal.Signals(early[0]).name}; stopping",
            signal=signal.Signals(early[0]).name,
        )
        await server.stop()
        return EXIT_OK
    # No await between here and the supervisor's own add_signal_handler calls, which replace
    # these: a signal from now on is the supervisor's.
    return await supervisor.run()
