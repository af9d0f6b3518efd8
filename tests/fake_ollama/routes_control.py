"""The fake's own /_fake/ control endpoints (not Ollama): evict, crash a runner, state."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from . import VERSION
from .binding import HTTPError
from .gotime import duration_string

if TYPE_CHECKING:
    from .httpd import Handler


def _control_body(h: Handler) -> dict[str, Any]:
    try:
        obj = json.loads(h._body or b"{}")
    except ValueError:
        raise HTTPError(400, "invalid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), str):
        raise HTTPError(400, "model is required")
    return obj


def h_fake_evict(h: Handler) -> None:
    """POST /_fake/evict {"model": M}."""
    m = _control_body(h)["model"]
    if not h.app.sched.evict(m):
        raise HTTPError(404, f"model '{m}' is not loaded")
    h.send_json(200, {"evicted": m})


def h_fake_crash(h: Handler) -> None:
    """POST /_fake/crash_runner {"model": M}."""
    m = _control_body(h)["model"]
    pid = h.app.sched.crash_runner(m)
    if pid is None:
        raise HTTPError(404, f"model '{m}' is not loaded")
    h.send_json(200, {"killed_pid": pid})


def h_fake_state(h: Handler) -> None:
    """GET /_fake/state."""
    app = h.app
    h.send_json(
        200,
        {
            "pid": os.getpid(),
            "version": VERSION,
            "runners": app.sched.state(),
            "present": [m.display for m in app.store.list_models()],
            "pull_counts": dict(app.puller.counts),
            "pull_attempts": dict(app.puller.attempts),
            "load_counts": dict(app.sched.load_counts),
            "max_runners": app.sched.max_runners,
            "pending": app.sched.pending.qsize(),
            "default_keep_alive": duration_string(app.settings.keep_alive()),
            "default_num_ctx": app.settings.default_num_ctx,
            "gpu_vram": app.settings.vram,
        },
    )
