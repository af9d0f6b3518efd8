"""`run`: which of Ollama's relayed lines wake the reconcile loop, and when.

server/runners.py calls `changed` for each line that says what is loaded may have changed: a
runner start, a store write, or the access line of a model request (printed as it ends). A
burst of them is one look, COALESCE after the first. The access lines of the supervisor's own
requests (a probe every PRELOADER_PROBE_INTERVAL, its loads) wake nothing: only lines beyond
the requests we have in flight or answered (ollama/api.py: OwnRequests) are a client's.
"""

from __future__ import annotations

import asyncio

from ollama_preloader.ollama.api import OwnRequests

# A burst of Ollama's lines (two runners stopped, a load's start and access lines) is one
# look at /api/ps, this long after the first of them.
COALESCE = 0.05


class ServerWakes:
    def __init__(self, wake: asyncio.Event, own: OwnRequests) -> None:
        self._wake = wake
        self._own = own
        self._pending: asyncio.TimerHandle | None = None
        self._look = False  # a line that always asks for a look came since the last one
        self._lines = 0  # model requests' access lines seen
        # Access lines known to be a client's, as of the last look. `lines - own.expected` is
        # never more than the true count (our requests in flight have not logged theirs yet)
        # and equals it once they have, so a client's line wakes the loop at the latest when
        # the request of ours that hid it ends.
        self._clients = 0

    def changed(self, request: bool) -> None:
        if request:
            self._lines += 1
        else:
            self._look = True
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(COALESCE, self._judge)

    def _judge(self) -> None:
        self._pending = None
        clients = self._lines - self._own.expected
        if self._look or clients > self._clients:
            self._wake.set()
        self._look = False
        self._clients = max(self._clients, clients)

    def server_ready(self) -> None:
        """A new serve: a request of ours lost with the old one logs no line; start over."""
        self._clients = self._lines - self._own.expected
