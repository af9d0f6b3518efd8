"""Live pull progress bars on a terminal, and the output that must pass above them.

Only for console logs on a TTY (logs.configure turns it on). While a bar is shown, every other
line (our log events, `ollama serve`'s relayed output) is printed through the same rich
Console, above the bars, so the screen is never garbled. Off a TTY nothing here is used and
pull progress is logged as periodic `model.pull.progress` events instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class _Current:
    """The process's display, if logs go to a terminal (logs.configure sets it)."""

    display: LiveDisplay | None = None


class LiveDisplay:
    """One rich Progress with a bar per model being pulled; shown only while pulls run."""

    def __init__(self, stream: TextIO) -> None:
        # Imported here: rich is only needed on a terminal.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.stream = stream
        self.console = Console(file=stream, force_terminal=True, highlight=False)
        self.progress: Progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(binary_units=False),  # decimal, as Ollama prints sizes
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            refresh_per_second=4,
        )
        self._tasks: dict[str, TaskID] = {}

    @property
    def live(self) -> bool:
        return bool(self._tasks)

    def pull_started(self, model: str) -> None:
        if model in self._tasks:
            return
        if not self._tasks:
            self.progress.start()
        self._tasks[model] = self.progress.add_task(f"pulling {model}", total=None)

    def pull_progress(self, model: str, completed: int, total: int) -> None:
        task = self._tasks.get(model)
        if task is not None:
            self.progress.update(task, completed=completed, total=total or None)

    def pull_finished(self, model: str) -> None:
        task = self._tasks.pop(model, None)
        if task is not None:
            self.progress.remove_task(task)
        if not self._tasks:
            self.progress.stop()

    def stop(self) -> None:
        for model in list(self._tasks):
            self.pull_finished(model)

    def print_line(self, line: str) -> None:
        """One line (maybe with ANSI colours) above the bars."""
        from rich.text import Text

        self.console.print(Text.from_ansi(line), soft_wrap=True)


class LogStream:
    """The file structlog writes to: straight through, or above the bars while they show."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        display = _Current.display
        if display is None or not display.live:
            return self.stream.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            display.print_line(line)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


def enable(stream: TextIO) -> None:
    """Show pull progress as live bars on `stream` (a terminal)."""
    _Current.display = LiveDisplay(stream)


def disable() -> None:
    display, _Current.display = _Current.display, None
    if display is not None:
        display.stop()


def pull_started(model: str) -> None:
    if _Current.display is not None:
        _Current.display.pull_started(model)


def pull_progress(model: str, completed: int, total: int) -> bool:
    """Update the model's bar; False when there are no bars (log a progress event instead)."""
    if _Current.display is None:
        return False
    _Current.display.pull_progress(model, completed, total)
    return True


def pull_finished(model: str) -> None:
    if _Current.display is not None:
        _Current.display.pull_finished(model)


def relay(out: BinaryIO, data: bytes) -> None:
    """Pass `ollama serve`'s output on: above the bars while they show, else as it is."""
    display = _Current.display
    if display is not None and display.live:
        text = data.decode(errors="replace")
        for line in text.rstrip("\n").split("\n"):
            display.print_line(line.rstrip("\r"))
        return
    out.write(data)
    out.flush()
