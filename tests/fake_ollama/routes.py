"""The routing table (every path and method the fake answers) and the one-line endpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import VERSION
from .binding import HTTPError
from .routes_control import h_fake_crash, h_fake_evict, h_fake_state
from .routes_inference import h_chat, h_embed, h_embeddings, h_generate
from .routes_models import h_copy, h_delete, h_ps, h_pull, h_show, h_tags

# Handler is imported for annotations only, here and in the routes_* modules: httpd imports
# this table, so a runtime import back would be a cycle.
if TYPE_CHECKING:
    from .httpd import Handler

Route = Callable[["Handler"], None]


def h_root(h: Handler) -> None:
    """GET/HEAD /."""
    h.send_text(200, "Ollama is running")


def h_version(h: Handler) -> None:
    """GET/HEAD /api/version."""
    h.send_json(200, {"version": VERSION})


def h_status(h: Handler) -> None:
    """GET /api/status."""
    disabled = h.app.settings.no_cloud
    h.send_json(200, {"cloud": {"disabled": disabled, "source": "env" if disabled else "none"}})


def h_not_supported(h: Handler) -> None:
    """Known Ollama endpoints the fake does not implement."""
    raise HTTPError(500, "not supported by the fake ollama server")


ROUTES: dict[str, dict[str, Route]] = {
    "/": {"GET": h_root, "HEAD": h_root},
    "/api/version": {"GET": h_version, "HEAD": h_version},
    "/api/status": {"GET": h_status},
    "/api/tags": {"GET": h_tags, "HEAD": h_tags},
    "/api/ps": {"GET": h_ps},
    "/api/show": {"POST": h_show},
    "/api/pull": {"POST": h_pull},
    "/api/push": {"POST": h_not_supported},
    "/api/create": {"POST": h_not_supported},
    "/api/generate": {"POST": h_generate},
    "/api/chat": {"POST": h_chat},
    "/api/embed": {"POST": h_embed},
    "/api/embeddings": {"POST": h_embeddings},
    "/api/delete": {"DELETE": h_delete},
    "/api/copy": {"POST": h_copy},
    "/_fake/evict": {"POST": h_fake_evict},
    "/_fake/crash_runner": {"POST": h_fake_crash},
    "/_fake/state": {"GET": h_fake_state},
}
