"""Runner facts from Ollama's command lines and log lines, and a zombie's exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ollama_preloader.server.runners import (
    RunnerWatch,
    children,
    parse_command,
    parse_exit_line,
    parse_start_line,
    process_gone,
    zombie_status,
)
from ollama_preloader.state.runner_facts import UNKNOWN, ExitStatus

BLOB = "sha256-8d9529e413374eb281ca02fa3af42b55db6eccf44c10001a98579b888d232ae0"
# As the real v0.33 server logs them (paths shortened).
REAL_START = (
    'time=2026-12-01T12:00:37.502Z level=INFO source=llama_server.go:433 msg="starting '
    'llama-server" cmd="/kit/lib/ollama/llama-server --model /store/blobs/' + BLOB + " --port "
    '46441 --host 127.0.0.1 --no-webui --offline -c 4096 -np 2 --log-verbosity 4 -b 512"'
)
REAL_GONE = (
    "time=2026-12-01T12:01:01.356Z level=WARN source=llama_server.go:1196 "
    'msg="llama-server process no longer running" sys=9 string="signal: killed"'
)


def test_start_line_gives_the_blob_and_the_context_per_slot() -> None:
    """`-c` is the context of all slots together: 4096 with `-np 2` is 2048 per request."""
    assert parse_start_line(REAL_START) == (BLOB, 2048)
    assert parse_start_line('level=INFO msg="llama runner started in 0.26 seconds"') is None


def test_fake_start_line_reads_the_same() -> None:
    """The fake's argv spells the flags out (--ctx-size, --parallel)."""
    line = (
        'level=INFO source=llama_server.go:433 msg="starting llama-server" cmd="fake-llama-'
        f'server --model /m/blobs/{BLOB} --ctx-size 8192 --parallel 1 --port 0" pid=12'
    )
    assert parse_start_line(line) == (BLOB, 8192)


def test_command_without_a_blob_or_context() -> None:
    assert parse_command(["llama-server", "--port", "1"]) == (None, None)


def test_exit_line_gives_the_signal_or_the_code() -> None:
    """Ollama's WARN line: `sys` is the signal number or the exit code."""
    assert parse_exit_line(REAL_GONE) == ExitStatus("signal: killed", signal="SIGKILL")
    coded = REAL_GONE.replace('sys=9 string="signal: killed"', 'sys=2 string="exit status 2"')
    assert parse_exit_line(coded) == ExitStatus("exit status 2", code=2)
    bare = 'level=WARN msg="llama-server process no longer running"'
    assert parse_exit_line(bare) == UNKNOWN
    assert parse_exit_line('level=WARN msg="something else" sys=9') is None


def test_a_zombie_child_shows_how_it_ended() -> None:
    """A child that exited and is not reaped yet: the kernel still has its wait status."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert child.pid in (children(os.getpid()) or [])
        assert zombie_status(child.pid) is None  # running
        os.kill(child.pid, signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        assert zombie_status(child.pid) == ExitStatus("signal: killed", signal="SIGKILL")
    finally:
        child.kill()
        child.wait()


def test_process_gone_once_killed_even_before_it_is_reaped() -> None:
    """The wedge repair re-pins only after this: a zombie has exited, a running one has not."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_gone(proc.pid) is False
        os.kill(proc.pid, signal.SIGKILL)
        while zombie_status(proc.pid) is None:  # not reaped: it stays a zombie
            os.sched_yield()
        assert process_gone(proc.pid) is True
    finally:
        proc.kill()
        proc.wait()
    assert process_gone(proc.pid) is True


def _gin(method: str, path: str) -> str:
    # gin's access line, as Ollama prints it on stdout when a request ends.
    return (
        f'[GIN] 2026/12/07 - 12:00:00 | 200 |  1.234567ms |       127.0.0.1 | {method:<7} "{path}"'
    )


def test_lines_that_may_change_what_is_loaded_call_on_change() -> None:
    """Client model requests, store writes and runner starts ask for a look; our own polls,
    /api/show and other lines do not."""
    watch = RunnerWatch(lambda: None)
    calls: list[bool] = []
    watch.on_change = calls.append
    changing = [
        _gin("POST", "/api/generate"),
        _gin("POST", "/api/chat"),
        _gin("POST", "/api/embed"),
        _gin("POST", "/api/embeddings"),
        _gin("POST", "/v1/chat/completions"),
        _gin("DELETE", "/api/delete"),
        _gin("POST", "/api/pull"),
        REAL_START,
    ]
    quiet = [
        _gin("GET", "/api/ps"),
        _gin("HEAD", "/"),
        _gin("POST", "/api/show"),
        _gin("GET", "/api/tags"),
        'time=2026-12-07T12:00:00Z level=INFO source=server.go:1 msg="llama runner started"',
    ]
    for line in quiet:
        watch.on_line(line)
    assert calls == []
    for line in changing:
        watch.on_line(line)
    # True: a model request's access line (which may be one of the supervisor's own).
    assert calls == [True] * 5 + [False] * 3
    assert watch.store_writes == 2  # the delete and the pull also mean the store changed
