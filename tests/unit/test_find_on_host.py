"""`watch` kills a runner it finds on the host only when exactly one process runs the file."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

from ollama_preloader.server.runners import find_on_host


def _fake_runner(blob: str) -> subprocess.Popen[bytes]:
    code = "import time; time.sleep(60)"
    return subprocess.Popen([sys.executable, "-c", code, "--model", f"/store/blobs/{blob}"])


def _wait_listed(blob: str, want: int) -> None:
    for _ in range(200):  # the command line is in /proc as soon as exec is done
        found = find_on_host(blob)
        if (want == 1 and found is not None) or want == 2:
            return
        time.sleep(0.01)


def test_one_process_is_found_two_are_ambiguous() -> None:
    blob = f"sha256-{uuid.uuid4().hex}"
    first = _fake_runner(blob)
    try:
        _wait_listed(blob, 1)
        assert find_on_host(blob) == first.pid
        second = _fake_runner(blob)
        try:
            for _ in range(200):
                if find_on_host(blob) is None:
                    break
                time.sleep(0.01)
            assert find_on_host(blob) is None
        finally:
            second.kill()
            second.wait()
    finally:
        first.kill()
        first.wait()
