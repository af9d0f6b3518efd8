"""structlog setup: colours on a TTY, greppable key=value lines off it, JSON when asked.

Every event has a stable dotted name (`model.pinned`) and a human `msg`; the README lists them.

structlog is imported only when logging is configured or first used, not when a module takes
its `log = get_logger()`: `run` imports the server's modules before it spawns `ollama serve`,
and everything imported before the spawn adds to the user's wait. When the logs do not go to a
terminal, structlog is imported without rich (its `dev` and `tracebacks` modules load rich
whenever it is installed, and typer installs it): rich draws nothing there, and it would cost
~40 ms before the spawn and ~4 MB for as long as the supervisor runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from types import ModuleType
from typing import Any, TextIO, cast

from ollama_preloader.observe import output, terminal

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\t\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class PlainRenderer:
    """`2026-11-22T10:00:00.123Z info  model.pinned  ✓ msg  key=value ...`, no colour codes."""

    def __call__(self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> str:
        timestamp = event_dict.pop("timestamp", "")
        level = event_dict.pop("level", "info")
        event = event_dict.pop("event", "")
        msg = event_dict.pop("msg", "")
        fields = " ".join(f"{k}={_quote(v)}" for k, v in event_dict.items())
        line = f"{timestamp} {level:<7} {event:<24}"
        if msg:
            line += f" {msg}"
        if fields:
            line += f"  {fields}"
        return line


def _message_after_event(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Console: `model.pinned  ✓ Loaded and pinned ...  key=value`, the event name aligned and
    the human message right after it, as in the plain lines, rather than as a `msg=` field."""
    msg = event_dict.pop("msg", "")
    event = str(event_dict.get("event", ""))
    event_dict["event"] = f"{event:<24} {msg} " if msg else event
    return event_dict


def resolve_format(fmt: str, stream: TextIO) -> str:
    if fmt != "auto":
        return fmt
    return "console" if stream.isatty() else "plain"


# Imported by structlog's `dev` module whenever installed: rich for tracebacks and the console
# renderer, colorama for colours on Windows. Neither is used when logs do not go to a terminal.
_CONSOLE_ONLY = ("rich", "colorama")


def _structlog(*, with_rich: bool = True) -> ModuleType:
    """structlog, imported on first use; `with_rich=False` keeps rich (and colorama) out of
    the process if nothing has imported them yet (structlog then does without them)."""
    if "structlog" in sys.modules or with_rich:
        import structlog

        return structlog
    # A None entry makes `import rich` raise ImportError, which structlog takes as "rich is
    # not installed". Removed right after, so a later import of rich works as usual.
    hidden = [name for name in _CONSOLE_ONLY if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        for name in hidden:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]
    return structlog


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog once, for the whole process.

    Without a `stream`, logs go to stderr through observe/output.py: a write that fails or
    waits (a closed terminal, a reader gone, a full pipe) never reaches the caller.
    """
    out: TextIO = stream or cast(TextIO, output.TextOutput(output.install()[1]))
    chosen = resolve_format(fmt, out)
    structlog = _structlog(with_rich=chosen == "console")
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    sink = out
    if chosen == "console" and out.isatty():
        # Pull progress becomes live bars; log lines are printed above them while they show.
        terminal.enable(out)
        sink = cast(TextIO, terminal.LogStream(out))
    else:
        terminal.disable()
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    elif chosen == "console":
        processors.append(_message_after_event)
        renderer = structlog.dev.ConsoleRenderer(colors=True, pad_event_to=0, sort_keys=False)
    else:
        renderer = PlainRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=sink),
        cache_logger_on_first_use=False,
    )


def set_level(level: str) -> None:
    """Change the level live (a reload), leaving the format and the stream as configured: a
    second `configure` would restart the live pull bars on a terminal."""
    structlog = _structlog()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO))
    )


class _Logger:
    """structlog's logger, looked up at the first call: `log = get_logger()` at import costs
    nothing. structlog's own proxy reads the configuration at each call, so this one may keep
    it once found."""

    __slots__ = ("_proxy",)

    def __init__(self) -> None:
        self._proxy: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._proxy is None:
            self._proxy = _structlog().get_logger()
        return getattr(self._proxy, name)


def get_logger() -> Any:
    return _Logger()
