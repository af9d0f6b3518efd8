"""Never leave Ollama behind, on the real server (issue 20): each case leaves no `ollama serve`
and no `llama-server` of the test within 5 s, and the next start pins normally."""

from __future__ import annotations

import signal
import time

from real_harness import RealLauncher


def nothing_left(real: RealLauncher, within: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within
    while (left := real.servers() + real.runners()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_sigkilled_supervisor_leaves_nothing(real: RealLauncher) -> None:
    """kill -9 of the supervisor: the parent-death SIGTERM stops serve and its runner."""
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"))
    run.wait_all_pinned()
    assert len(real.runners()) == 1
    run.proc.kill()
    assert run.wait_exit() == -signal.SIGKILL
    assert nothing_left(real) == []
    again = real.start(OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"))
    again.wait_all_pinned()
    assert again.stop() == 0
    assert nothing_left(real) == []


def test_internal_error_leaves_nothing(real: RealLauncher) -> None:
    """An injected internal error in the loop: exit 1, serve and its runner stopped."""
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"), PRELOADER_TEST_CRASH="loop")
    assert run.wait_exit() == 1
    assert run.events("supervisor.crashed")
    assert nothing_left(real) == []
    again = real.start(OLLAMA_PRELOAD_MODELS=real.name("tiny-chat"))
    again.wait_all_pinned()
    assert again.stop() == 0
