"""guard/loop.py: uvloop when it can be imported, the standard loop when it cannot."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from ollama_preloader.guard.loop import use_fast_loop


@pytest.fixture(autouse=True)
def default_policy() -> Iterator[None]:
    yield
    asyncio.set_event_loop_policy(None)


def _loop_module() -> str:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    return asyncio.run(which())


def test_without_uvloop_the_standard_loop_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert use_fast_loop() == "asyncio"
    assert _loop_module() == "asyncio"


def test_with_uvloop_the_next_run_uses_it() -> None:
    pytest.importorskip("uvloop")
    assert use_fast_loop() == "uvloop"
    assert _loop_module() == "uvloop"
