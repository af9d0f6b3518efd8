"""The event loop the supervisor runs on when the guard is on: uvloop when it can be imported.

With the guard, every client request and every streamed chunk passes through this process's
one event loop, so the loop's own cost per callback and per socket write is on every request.
uvloop (libuv) halves it (docs/benchmarks.md, guard section); without it (a platform it has no
wheel for, an install without it) the standard loop does the same work, a little slower.
Only the guard's modes ask for it: `health`, `status` and the idle loop are unchanged.
"""

from __future__ import annotations

import asyncio
import gc


def use_fast_loop() -> str:
    """Make uvloop the event loop of the next asyncio.run, if it can be imported: "uvloop",
    else "asyncio" (nothing changed)."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def freeze_startup_objects() -> None:
    """Move everything alive after start-up out of the collector's reach (gc.freeze): the
    modules, settings and registries are never garbage, and a full collection that walks them
    all is a pause every request waiting on the loop shares."""
    gc.collect()
    gc.freeze()
