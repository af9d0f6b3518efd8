"""How `ollama serve` ended, and which of its lines explains why, in the words users read."""

import asyncio
import errno
import os
import signal
import subprocess

import pytest

from ollama_preloader.server.process import describe_exit, error_line, signal_name, watch_exit

T = "time=2026-12-01T11:23:29.671Z"
GIN = '[GIN] 2026/12/01 - 11:23:31 | 200 |  201.749µs |  127.0.0.1 | POST     "/api/generate"'
INFO = f'{T} level=INFO source=routes.go:2008 msg="Listening on 127.0.0.1:11434"'
INFO_WITH_ERROR = (
    f'{T} level=INFO source=runner.go:522 msg="failure during llama-server GPU discovery" '
    'error="llama-server --list-devices failed: exit status 127"'
)
WARN = f'{T} level=WARN source=llama_server.go:135 msg="system_info line not found"'
ERROR = f'{T} level=ERROR source=sched.go:480 msg="error loading llama server"'


@pytest.mark.parametrize(
    ("code", "text", "name"),
    [
        (-9, "was killed by SIGKILL (signal 9)", "SIGKILL"),
        (-15, "was killed by SIGTERM (signal 15)", "SIGTERM"),
        (-200, "was killed by signal 200", "signal 200"),
        (1, "exited with code 1", None),
        (0, "exited with code 0", None),
    ],
)
def test_exit_codes_are_described(code: int, text: str, name: str | None) -> None:
    """asyncio's -N means killed by signal N: named, never shown as `code -9`."""
    assert describe_exit(code) == text
    assert signal_name(code) == name


def test_access_log_and_info_lines_are_never_the_cause() -> None:
    """After a SIGKILL the tail is requests and INFO lines (one even says `failed`): no cause."""
    assert error_line([INFO, INFO_WITH_ERROR, GIN, GIN, ""]) is None


@pytest.mark.parametrize(
    "line",
    [
        "Error: listen tcp 127.0.0.1:11434: bind: address already in use",
        "panic: runtime error: invalid memory address or nil pointer dereference",
        "fatal error: out of memory",
        ERROR,
        "llama_model_load: error loading model: tensor 'blk.0' data is not within the file bounds",
        "ggml_backend_cuda_buffer_type_alloc_buffer: cudaMalloc failed: out of memory",
    ],
)
def test_error_lines_are_found_among_the_noise(line: str) -> None:
    """The last error-looking line is quoted, however many access lines follow it."""
    assert error_line([INFO, line, GIN, INFO, GIN]) == line


def test_an_error_beats_a_later_warning_and_a_warning_beats_nothing() -> None:
    """Ollama warns at start about things that do not stop it; an error explains more."""
    assert error_line([ERROR, WARN, GIN]) == ERROR
    assert error_line([INFO, WARN, GIN]) == WARN
    assert error_line(["Error: first", GIN, "Error: second"]) == "Error: second"


def spawn(*argv: str) -> subprocess.Popen[bytes]:
    """A child started without the loop's help, as `run` spawns `ollama serve`."""
    return subprocess.Popen(argv)


@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfd", "thread"])
async def test_a_spawned_childs_exit_status_reaches_the_loop(
    pidfds: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ollama serve` is spawned before the loop runs; its exit is then seen on a pidfd, or by
    a waiting thread where pidfds are refused: the same status either way (-N for signal N)."""
    if not pidfds:

        def refused(_pid: int) -> int:
            raise OSError(errno.EPERM, "refused by a sandbox")

        monkeypatch.setattr(os, "pidfd_open", refused)
    loop = asyncio.get_running_loop()
    exits = spawn("sh", "-c", "exit 3")
    killed = spawn("sleep", "60")
    exited: list[asyncio.Future[int]] = [loop.create_future(), loop.create_future()]
    watch_exit(exits, exited[0])
    watch_exit(killed, exited[1])
    killed.send_signal(signal.SIGKILL)
    async with asyncio.timeout(30):
        codes = [await future for future in exited]
    assert codes == [3, -signal.SIGKILL]
