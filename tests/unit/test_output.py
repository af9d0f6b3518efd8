"""observe/output.py: a stream that fails or stalls never holds the caller up."""

from __future__ import annotations

import contextlib
import os

import pytest

from ollama_preloader.observe import output


def test_a_full_pipe_drops_lines_and_says_so_once_it_moves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(output, "MAX_BACKLOG", 1024)
    read, write = os.pipe()
    try:
        stream = output.Output("stdout", write)
        line = b"x" * 99 + b"\n"
        for _ in range(2000):  # 200 kB into a 64 kB pipe nobody reads: returns at once
            stream.write(line)
        assert stream.dropped > 0
        assert stream.lost is None
        os.set_blocking(read, False)
        seen = b""
        while not stream.drain(0.05) or not seen.endswith(b"\n"):
            with contextlib.suppress(BlockingIOError):
                seen += os.read(read, 1 << 20)
        stream.write(b"after\n")
        stream.drain(5)
        os.set_blocking(read, True)
        seen += os.read(read, 1 << 20)
        assert b"lines of output dropped: stdout was not read" in seen
        assert seen.endswith(b"after\n")
    finally:
        os.close(read)


def test_a_pipe_without_reader_is_lost_and_pointed_at_devnull() -> None:
    read, write = os.pipe()
    os.close(read)
    stream = output.Output("stderr", write)
    seen: list[str] = []
    stream.on_lost = lambda s: seen.append(s.name)
    stream.write(b"hello\n")
    stream.drain(5)
    assert stream.lost is not None
    assert stream.lost.startswith("EPIPE")
    assert seen == ["stderr"]
    os.write(write, b"later writes go nowhere\n")  # /dev/null now: no EPIPE
    stream.write(b"dropped quietly\n")
    os.close(write)
