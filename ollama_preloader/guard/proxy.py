"""The guard's reverse proxy: every request to Ollama, streamed both ways, with the pin enforced.

aiohttp on both sides: its server cancels a handler when the client goes away
(`handler_cancellation`), which is how a drop before the first byte reaches Ollama, and its
client streams request and response bodies without holding them. Only the JSON bodies of the
model endpoints are read whole (to apply rewrite.py); blobs and everything else flow through.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from ollama_preloader.config.modelspec import ModelSpec
from ollama_preloader.errors import ConfigError
from ollama_preloader.guard.events import GuardEvents
from ollama_preloader.guard.keys import VARIABLE as KEYS_VARIABLE
from ollama_preloader.guard.keys import ApiKeys
from ollama_preloader.guard.loop import freeze_startup_objects
from ollama_preloader.guard.metrics import GuardMetrics, endpoint_label
from ollama_preloader.guard.pulls import PullHook
from ollama_preloader.guard.rewrite import MODEL_PATHS, Outcome, Policy, rewrite
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.host import OllamaHost
from ollama_preloader.ollama.names import name_key
from ollama_preloader.state.board import Board
from ollama_preloader.state.traffic import GuardTraffic, outcome_of

log = get_logger()

# Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection, never forwarded. `Expect` too:
# the guard answers a client's 100-continue itself.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
_EVAL_COUNT = re.compile(rb'"eval_count"\s*:\s*(\d+)')
_TAIL = 4096  # bytes of an answer kept to read the final chunk's eval_count
# Request bodies read whole (the model endpoints' JSON, base64 images included): Ollama holds
# them in memory too. aiohttp's own default (1 MiB) would refuse a large image.
MAX_JSON_BODY = 1 << 30
_ANSWERED = "guard_answered"  # set on a response the guard made itself, not Ollama
_DROPPED = "guard_dropped"  # set on a response whose client went away before its end
SHUTDOWN_TIMEOUT = 5.0  # in-flight answers get this long at shutdown, then are cut


class Guard:
    """Listens on `listen`, forwards to `upstream`; `start` binds, `serve` runs until cancelled."""

    def __init__(
        self,
        board: Board,
        *,
        listen: OllamaHost,
        upstream: OllamaHost,
        policy: Policy,
        hold: float,
        listen_variable: str,
        metrics: GuardMetrics,
        keys: ApiKeys | None = None,
    ) -> None:
        self.board = board
        self.keys = keys
        self.traffic = board.traffic = GuardTraffic()  # `status` and /status read it
        self.listen = listen
        self.upstream = upstream
        self.policy = policy
        self.hold = hold
        self.listen_variable = listen_variable
        self.metrics = metrics
        self.events = GuardEvents()
        self.pulls: PullHook | None = None  # set by wiring.py when an updater is there
        # Set while the upstream answers; during a supervised restart requests wait on it.
        self.up = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._base = upstream.base_url

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the client address; ConfigError naming the variable when it is taken (or
        when the API keys file cannot be read)."""
        if self.keys is not None:
            self.keys.load()
        app = web.Application(client_max_size=MAX_JSON_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away cancels its handler, and with it the
        # upstream request, also before the first byte (aiohttp >= 3.8 leaves it off).
        runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            auto_decompress=False,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        site = web.TCPSite(runner, host=self.listen.host or None, port=self.listen.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"{self.listen_variable}={self.listen.listen!r}: the guard cannot listen there "
                f"({os.strerror(exc.errno).lower() if exc.errno else exc}); free the port or "
                "choose another address"
            ) from None
        self._runner = runner
        self._session = aiohttp.ClientSession(
            # No pool limit below Ollama's queue (512) and no total timeout: a load can take
            # minutes. Compressed bodies pass through as they are.
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        freeze_startup_objects()
        log.info(
            "guard.listening",
            msg=f"Guard listening on {self.listen.listen}, forwarding to {self.upstream.listen}",
            listen=self.listen.listen,
            upstream=self.upstream.listen,
            keep_alive=self.policy.keep_alive,
            options=self.policy.options,
            loop=type(asyncio.get_running_loop()).__module__.split(".")[0],  # uvloop or asyncio
        )

    async def serve(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def reload_keys(self) -> None:
        """SIGHUP: read the API keys file again (a failure keeps the keys in force)."""
        if self.keys is not None:
            self.keys.reload("signal")

    def server_up(self) -> None:
        self.up.set()

    def server_down(self) -> None:
        self.up.clear()

    # ----- one request -----------------------------------------------------------------------

    def _lookup(self, model: str) -> ModelSpec | None:
        key = name_key(model)
        for status in self.board.models:
            if status.spec.key == key:
                return status.spec
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        endpoint = endpoint_label(request.path)
        client = request.remote or "?"
        self.metrics.in_flight.inc()
        outcome = Outcome()
        status = 499  # the client went away before an answer (nginx's code for it)
        by_guard = False  # the guard answered itself (a refusal, a 401, a 503 after the hold)
        dropped = False  # the client went away mid-answer (the status was already sent)
        try:
            if not self._authorized(request):
                status, by_guard = 401, True
                return _unauthorized()
            data: bytes | aiohttp.StreamReader | None = None
            if self.pulls is not None and self.pulls.wants(request):
                raw = await request.read()  # a pull of a declared model is the updater's
                answered = await self.pulls.handle(request, raw)
                if answered is not None:
                    status = answered.status
                    return answered
                data = raw
            elif request.method == "POST" and request.path in MODEL_PATHS:
                raw = await request.read()
                outcome = rewrite(request.path, raw, self.policy, self._lookup)
                if outcome.reject is not None:
                    status, by_guard = 400, True
                    return self._rejected(request, client, outcome)
                self._log_changes(client, outcome)
                data = outcome.body if outcome.body is not None else raw
            elif request.body_exists:
                data = request.content
            response = await self._forward(request, data, outcome, endpoint, started)
            status, by_guard = response.status, response.get(_ANSWERED, False)
            dropped = response.get(_DROPPED, False)
            return response
        finally:
            self.metrics.in_flight.dec()
            label = self._model_label(outcome)
            self.metrics.count(label, endpoint, str(status))
            result = "dropped" if dropped else outcome_of(status, by_guard=by_guard)
            self.traffic.count(label, result, rewritten=bool(outcome.changes))
            self.metrics.timers(endpoint)[0].observe(time.monotonic() - started)

    def _authorized(self, request: web.Request) -> bool:
        """No keys file: everyone. Otherwise a key in force, except for `GET /` (and HEAD),
        Ollama's "Ollama is running", which load balancers and health checks ask."""
        if self.keys is None:
            return True
        if request.path == "/" and request.method in ("GET", "HEAD"):
            return True
        return self.keys.allows(request.headers.get("Authorization"))

    def _model_label(self, outcome: Outcome) -> str:
        spec = self._lookup(outcome.model) if outcome.declared and outcome.model else None
        return self.metrics.model_label(outcome.model, spec.display if spec else None)

    def _log_changes(self, client: str, outcome: Outcome) -> None:
        if not outcome.changes:
            return
        label = self._model_label(outcome)
        for change in outcome.changes:
            self.metrics.rewrites.labels(label, change.field).inc()
            self.events.rewrote(client, label, change)

    def _rejected(self, request: web.Request, client: str, outcome: Outcome) -> web.Response:
        label = self._model_label(outcome)
        message = outcome.reject or ""
        option = message.split(";", 1)[-1].strip().split("=", 1)[0]
        self.metrics.rejected.labels(label, option).inc()
        self.events.rejected(client, label, message)
        return _error(400, message)

    async def _wait_upstream(self) -> bool:
        """True once the upstream answers; False after PRELOADER_GUARD_HOLD seconds."""
        if self.up.is_set():
            return True
        try:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation (a stop).
            async with asyncio.timeout(self.hold):
                await self.up.wait()
        except TimeoutError:
            return False
        return True

    async def _forward(
        self,
        request: web.Request,
        data: bytes | aiohttp.StreamReader | None,
        outcome: Outcome,
        endpoint: str,
        started: float,
    ) -> web.StreamResponse:
        assert self._session is not None
        if not await self._wait_upstream():
            return _unavailable(self.hold)
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP)
        headers["Host"] = self.upstream.listen
        if self.keys is not None:
            headers.popall("Authorization", None)  # the guard's key, Ollama's business it is not
        if isinstance(data, bytes):
            headers["Content-Length"] = str(len(data))
        phase = "before_first_byte"
        try:
            upstream = await self._session.request(
                request.method,
                self._base + request.raw_path,
                headers=headers,
                data=data,
                allow_redirects=False,
                compress=None,
            )
        except asyncio.CancelledError:
            self._dropped(request, outcome, endpoint, phase)
            raise
        except aiohttp.ClientConnectionError as exc:
            log.warning(
                "guard.upstream.error",
                msg=f"Ollama at {self.upstream.listen} did not answer: {exc}",
                upstream=self.upstream.listen,
            )
            return _error(502, f"ollama serve is not answering at {self.upstream.listen}")
        complete = False
        try:
            response = _Relayed(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP and key.lower() != "content-length":
                    response.headers.add(key, value)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            content = upstream.content
            chunk = content.read_nowait()  # what came with the headers: often the whole answer
            if not chunk and not content.is_eof():
                await response.write(b"")  # no body yet (a stream waiting on a load): headers now
            tail = b""
            first = True
            while chunk or not content.at_eof():
                if not chunk:
                    chunk = await content.readany()
                    if not chunk:
                        break
                if first:
                    first = False
                    phase = "streaming"
                    self.metrics.timers(endpoint)[1].observe(time.monotonic() - started)
                tail = (tail + chunk)[-_TAIL:]
                if content.at_eof():
                    await response.write_eof(chunk)  # the last chunk and the end in one send
                else:
                    await response.write(chunk)
                chunk = b""
            await response.write_eof()
            complete = True
            self._count_tokens(outcome, upstream.status, tail)
            return response
        except asyncio.CancelledError:
            self._dropped(request, outcome, endpoint, phase)
            raise
        except ConnectionError:
            # The client went away mid-answer without the handler being cancelled first.
            self._dropped(request, outcome, endpoint, phase)
            response[_DROPPED] = True
            return response
        finally:
            if complete:
                upstream.release()
            else:
                # Close the connection, never hand it back to the pool: aiohttp's release()
                # would read the rest of the answer, a generation nobody waits for.
                upstream.close()

    def _dropped(self, request: web.Request, outcome: Outcome, endpoint: str, phase: str) -> None:
        spec = self._lookup(outcome.model) if outcome.declared and outcome.model else None
        if spec is not None:
            # A cancellation can wedge the runner (§9.5a): the probe looks at it soon.
            self.board.drops.note(spec.key)
        label = self._model_label(outcome)
        self.metrics.drops.labels(label, phase).inc()
        self.events.dropped(request.remote or "?", label, endpoint, phase)

    def _count_tokens(self, outcome: Outcome, status: int, tail: bytes) -> None:
        if status != 200 or outcome.model is None:
            return
        counts = _EVAL_COUNT.findall(tail)
        if counts:
            self.metrics.tokens.labels(self._model_label(outcome)).inc(int(counts[-1]))


class _Relayed(web.StreamResponse):
    """Ollama's answer: its headers wait for the body's first bytes (a small answer leaves in one
    send, not two); aiohttp's web.Response does the same."""

    _send_headers_immediately = False


def _error(status: int, message: str) -> web.Response:
    """Ollama's error shape: `{"error": "..."}`."""
    return web.Response(
        status=status,
        body=json.dumps({"error": message}).encode(),
        content_type="application/json",
    )


def _unauthorized() -> web.Response:
    response = _error(
        401,
        "unauthorized: this Ollama needs an API key; send the header "
        f"`Authorization: Bearer <key>` with a key from {KEYS_VARIABLE}",
    )
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _unavailable(hold: float) -> web.Response:
    response = _error(
        503, f"ollama serve is restarting; it did not come back within {hold:g}s, retry later"
    )
    response.headers["Retry-After"] = str(max(1, round(hold)))
    response[_ANSWERED] = True
    return response
