"""Live reload of the declared model set: watch the models file, answer SIGHUP, report changes.

The source of the list is fixed at start:

- PRELOADER_MODELS_FILE: its *content* is read every POLL_INTERVAL, so an in-place edit, an
  editor's rename-over and a Kubernetes ConfigMap's `..data` symlink swap all look the same. A
  new content is taken once two reads in a row agree, so a file caught half-written (a shell's
  `>` truncates before it writes) is never applied as an empty list; a change is noticed
  within two intervals. SIGHUP reads it at once and re-reads `.env` too.
- OLLAMA_PRELOAD_MODELS in `.env` (or `--env-file`): nothing to watch; SIGHUP re-reads it.
- OLLAMA_PRELOAD_MODELS in the process environment: it wins over `.env`, as at start, and a
  running process cannot see a new value, so SIGHUP keeps the set and says how to change it.

Every SIGHUP re-reads `.env` for the rest too: a new log level applies live; any other changed
variable (and any OLLAMA_* variable `ollama serve` would get from `.env`) only applies after a
restart, and the result names them for one warning.

A file that disappears or stops parsing gives one ReloadFailed per distinct problem, and the set
in force stays; a SIGHUP always gives a result, even "no change". Nothing here logs or touches
the Board: the supervisor applies a result (see Reloaded) and owns the events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ollama_preloader.config.changes import ModelSetDiff, diff_models
from ollama_preloader.config.environ import server_environment
from ollama_preloader.config.models_file import (
    ENV_MODELS_FILE,
    ModelsFileError,
    parse_models_file,
    read_models_file,
)
from ollama_preloader.config.modelspec import ENV_MODELS, ModelSpec, ParsedList
from ollama_preloader.config.settings import Settings, load_settings, variable_name
from ollama_preloader.config.values import LogLevel
from ollama_preloader.errors import ConfigError

POLL_INTERVAL = 0.5  # seconds between reads of the models file; a change applies within ~2x
LIVE_FIELDS = frozenset({"models", "log_level"})  # everything else needs a restart

Trigger = Literal["file", "signal"]

ENVIRONMENT_WINS = (
    f"{ENV_MODELS} is set in the supervisor's environment (for systemd: its EnvironmentFile; "
    "for Docker: the compose env_file), which wins over .env and cannot change while it "
    f"runs, so the model set stays as it is; restart to change it, or keep the list in "
    f"{ENV_MODELS_FILE} to change it live"
)


@dataclass(frozen=True)
class Reloaded:
    """A new list was read (perhaps the same one). To apply it: the new `specs` replace the
    Board's set (Board.redeclare), `changes` says what to pull, release or reload and is the
    `config.reloaded` line, `warnings` and `restart_message()` are warnings to log, and a
    `log_level` that is not None is the level to switch to now."""

    trigger: Trigger
    specs: tuple[ModelSpec, ...]
    changes: ModelSetDiff
    warnings: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()
    log_level: LogLevel | None = None

    def restart_message(self) -> str | None:
        """The one warning naming every variable that changed but applies only on restart."""
        if not self.restart_needed:
            return None
        names = ", ".join(self.restart_needed)
        return (
            f"Changed in the configuration: {names}; only the model list and "
            "PRELOADER_LOG_LEVEL change live, so the running values stay until a restart"
        )

    def fields(self) -> dict[str, Any]:
        """Fields for the `config.reloaded` event."""
        return {"trigger": self.trigger, **self.changes.fields()}


@dataclass(frozen=True)
class ReloadFailed:
    """The new list could not be read: the set in force stays. `message` is one line naming
    the file, the line and the problem (for `config.reload_failed` and /status)."""

    trigger: Trigger
    message: str

    def fields(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "error": self.message}


ReloadResult = Reloaded | ReloadFailed

# What the file last looked like: its bytes, or the error reading it gave (a str).
_Seen = bytes | str
_UNSEEN = object()


class ModelSource:
    """Where the declared list comes from, and every later version of it.

    `run(on_result)` is the task body (poll, and reload on request, forever); a SIGHUP handler
    calls `request_reload()`, which only sets an event. `poll()` and `reload()` are the two
    steps `run` takes, callable directly (tests, or a supervisor with its own loop).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        env_file: Path | None,
        server_env: Mapping[str, str] | None = None,
        mode_defaults: Callable[[Settings], Settings] | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        """`settings` are the ones in force (their `models` are the set now declared).
        `server_env` is the environment `ollama serve` was started with, for `run`; None for
        `watch`, where `.env`'s OLLAMA_* variables reach no server. `mode_defaults` is what the
        command did to its settings at start (`watch`: its own refresh default), done again
        to each re-read, so a default of the mode is not taken for a changed variable."""
        self._settings = settings
        self._mode_defaults = mode_defaults or (lambda fresh: fresh)
        self._env_file = env_file
        self._server_env = dict(server_env) if server_env is not None else None
        self.poll_interval = poll_interval
        self._requested = asyncio.Event()
        self._current: _Seen | object = _UNSEEN  # the content last turned into a result
        self._pending: _Seen | object = _UNSEEN  # a new content seen once, waiting for a 2nd

    @property
    def settings(self) -> Settings:
        """The settings in force: the start's, with each applied list and log level."""
        return self._settings

    @property
    def path(self) -> Path | None:
        """The models file being watched (the one in force at start), if any."""
        return self._settings.models_file

    def request_reload(self) -> None:
        """For the SIGHUP handler: `run` re-reads everything at once."""
        self._requested.set()

    async def run(self, on_result: Callable[[ReloadResult], Awaitable[None]]) -> None:
        """Forever: poll the file every `poll_interval`, reload at once when requested, and
        hand each result to `on_result` (awaited, so two never overlap)."""
        timeout = self.poll_interval if self.path is not None else None
        while True:
            try:
                async with asyncio.timeout(timeout):
                    await self._requested.wait()
            except TimeoutError:
                result = await self.poll()
            else:
                self._requested.clear()
                result = await self.reload()
            if result is not None:
                await on_result(result)

    async def poll(self) -> ReloadResult | None:
        """One look at the models file: a result when its content changed and held still."""
        path = self.path
        if path is None:
            return None
        seen = await self._read(path)
        if seen == self._current:
            self._pending = _UNSEEN  # it went back before settling: nothing happened
            return None
        if seen != self._pending:
            self._pending = seen
            return None
        first = self._current is _UNSEEN
        self._pending, self._current = _UNSEEN, seen
        result = self._from_file("file", path, seen, fresh=None)
        # The first look only learns what the file holds; it was parsed at start already.
        if first and isinstance(result, Reloaded) and result.changes.empty:
            return None
        return result

    async def reload(self) -> ReloadResult:
        """What SIGHUP does: `.env` and the models file (or the list in `.env`), now."""
        self._pending = _UNSEEN
        env_file = self._env_file
        if (
            self._settings.models_source == "env-file"
            and env_file is not None
            and not await asyncio.to_thread(env_file.is_file)
        ):
            # A missing .env reads as empty: that would release every model, where a models
            # file that disappears keeps the set. Treat it the same way.
            return ReloadFailed(
                "signal",
                f"{env_file}: no such file (OLLAMA_PRELOAD_MODELS in force came from it); "
                "the declared models stay until it is back",
            )
        try:
            fresh = await asyncio.to_thread(load_settings, self._env_file, read_models_file=False)
        except ConfigError as exc:
            return ReloadFailed("signal", str(exc))
        fresh = self._mode_defaults(fresh)
        path = self.path
        if path is not None:
            seen = await self._read(path)
            self._current = seen
            return self._from_file("signal", path, seen, fresh=fresh)
        if self._settings.models_source == "environment":
            return self._accept(
                "signal", ParsedList(self._settings.models, ()), fresh, (ENVIRONMENT_WINS,)
            )
        if fresh.models_file is not None:
            # A models file named in .env only now: it takes over after a restart (named as
            # such); until then the list in force stays.
            return self._accept("signal", ParsedList(self._settings.models, ()), fresh)
        return self._accept("signal", ParsedList(fresh.models, fresh.parse_warnings), fresh)

    # ----- inside --------------------------------------------------------------------------

    async def _read(self, path: Path) -> _Seen:
        # In a thread: a models file on a hung network mount must not stop the event loop.
        try:
            return await asyncio.to_thread(read_models_file, path)
        except ModelsFileError as exc:
            return str(exc)

    def _from_file(
        self, trigger: Trigger, path: Path, seen: _Seen, *, fresh: Settings | None
    ) -> ReloadResult:
        if isinstance(seen, str):
            return ReloadFailed(trigger, seen)
        try:
            parsed = parse_models_file(seen, path)
        except ModelsFileError as exc:
            return ReloadFailed(trigger, str(exc))
        return self._accept(trigger, parsed, fresh)

    def _accept(
        self,
        trigger: Trigger,
        parsed: ParsedList,
        fresh: Settings | None,
        notes: tuple[str, ...] = (),
    ) -> Reloaded:
        """Make `parsed` the list in force; with `fresh` settings (a SIGHUP), also the level."""
        level = None
        restart: tuple[str, ...] = ()
        update: dict[str, Any] = {"models": parsed.specs, "parse_warnings": parsed.warnings}
        if fresh is not None:
            restart = self._restart_needed(fresh)
            if fresh.log_level != self._settings.log_level:
                level = update["log_level"] = fresh.log_level
        result = Reloaded(
            trigger=trigger,
            specs=parsed.specs,
            changes=diff_models(self._settings.models, parsed.specs),
            warnings=parsed.warnings + notes,
            restart_needed=restart,
            log_level=level,
        )
        self._settings = self._settings.model_copy(update=update)
        return result

    def _restart_needed(self, fresh: Settings) -> tuple[str, ...]:
        """Variables whose new value differs from the one in force and cannot apply live."""
        names: list[str] = []
        for field, info in Settings.model_fields.items():
            if info.exclude or field in LIVE_FIELDS:
                continue
            if getattr(fresh, field) != getattr(self._settings, field):
                names.append(variable_name(field))
        if self._server_env is not None:
            now = server_environment(env_file=self._env_file)
            before = self._server_env
            for name in sorted(set(now) | set(before)):
                if (
                    name.startswith("OLLAMA_")
                    and name != ENV_MODELS
                    and name not in names
                    and now.get(name) != before.get(name)
                ):
                    names.append(name)
        return tuple(names)
