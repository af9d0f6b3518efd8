"""The runner watch on real processes: a runner's exit is reported with its pid and model file,
through a pidfd on the event loop where the kernel has them, and by the /proc scan where not."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_preloader.server.runners import RunnerWatch
from ollama_preloader.state.runner_facts import RunnerExit

BLOB = "sha256-" + "ab" * 32
WAIT = 30.0  # an upper bound, never an assertion about speed


@pytest.fixture
def serve() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in `ollama serve`: a shell with one child whose command line names a model
    file the way llama-server's does."""
    runner = f"{sys.executable} -c 'import time; time.sleep(120)' --model /store/blobs/{BLOB}"
    proc = subprocess.Popen(["bash", "-c", f"{runner} & wait"], start_new_session=True)
    yield proc
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def pidfds_of_this_process() -> set[int]:
    """The pids this process holds a pidfd for (the kernel's fdinfo names them)."""
    found: set[int] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[pidfd]":
                continue
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        found.update(int(line.split()[1]) for line in info.splitlines() if line[:4] == "Pid:")
    return found


async def watch_one_exit(serve: subprocess.Popen[bytes], *, pidfds: bool) -> RunnerExit:
    watch = RunnerWatch(lambda: serve.pid)
    reports: list[RunnerExit] = []
    reported = asyncio.Event()

    def report(exit_: RunnerExit) -> None:
        reports.append(exit_)
        reported.set()

    task = asyncio.create_task(watch.run(report))
    try:
        async with asyncio.timeout(WAIT):
            while not [r for r in watch.known() if r.blob == BLOB]:
                watch.on_line('level=INFO msg="starting llama-server" cmd="x"')  # look now
                await asyncio.sleep(0.05)
        [runner] = watch.known()
        assert (runner.pid in pidfds_of_this_process()) is pidfds
        os.kill(runner.pid, signal.SIGKILL)
        async with asyncio.timeout(WAIT):
            await reported.wait()
    finally:
        task.cancel()
    [found] = reports
    assert found.runner == runner
    assert not pidfds_of_this_process()  # closed once the runner is gone
    return found


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd_open on this system")
async def test_an_exit_is_seen_through_the_runners_pidfd(serve: subprocess.Popen[bytes]) -> None:
    report = await watch_one_exit(serve, pidfds=True)
    assert report.runner.blob == BLOB


async def test_without_pidfds_the_scan_still_sees_the_exit(
    serve: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel or sandbox that refuses pidfd_open: the watch falls back to looking every
    RUNNER_POLL seconds, and still reports the exit with the runner's pid and model file."""

    def refused(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refused, raising=False)
    report = await watch_one_exit(serve, pidfds=False)
    assert report.runner.blob == BLOB
