"""The only module that talks to Ollama's API: typed results, typed errors, a timeout per call.

Built on the official `ollama` AsyncClient (its pydantic types track the server's API); plain
httpx only for the readiness probe on `GET /`, which the client has no call for.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pydantic

from ollama_preloader.errors import (
    ModelNotFound,
    NotSupported,
    OllamaAPIError,
    OllamaResponseError,
    OllamaUnavailable,
    PullStreamError,
    RegistryProblem,
    RegistryTLSError,
    ServerBusy,
)
from ollama_preloader.ollama.endpoints import MODEL_PATHS
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.ollama.library import ollama
from ollama_preloader.ollama.names import name_key

T = TypeVar("T")

# Warm-up inputs: a few tokens, so the request costs next to nothing beyond the first token.
WARMUP_PROMPT = "Hello"
WARMUP_INPUT = "warm-up"
# A warm-up on a loaded runner takes seconds even on a CPU; this only stops a hung server from
# holding the reconcile loop forever.
WARMUP_TIMEOUT = 300.0
# httpx closes a connection idle for 5 s, the settled watch interval: every look and every
# probe paid a new connection (~0.6 ms of CPU each, a quarter of the idle cost). Ollama keeps
# idle connections open (Go's server has no idle timeout by default); where something between
# closes one first, httpx sees it closed and connects again. The pool sizes are httpx's own.
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=120.0)

# A pinned runner expires ~292 years ahead; `ollama ps` says Forever past 20. 100 is safe both ways.
PINNED_HORIZON = timedelta(days=365 * 100)


@dataclass(frozen=True)
class LocalModel:
    """A model on disk, from /api/tags."""

    name: str
    digest: str
    size: int

    @property
    def key(self) -> str:
        return name_key(self.name)


@dataclass(frozen=True)
class LoadedModel:
    """A runner, from /api/ps (listed under the name that loaded it)."""

    name: str
    digest: str
    size: int
    size_vram: int
    expires_at: datetime | None
    context_length: int | None
    blob: str | None = None  # filled in by the supervisor from /api/show when it matters

    @property
    def key(self) -> str:
        return name_key(self.name)

    def is_pinned(self, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        current = now or datetime.now(UTC)
        return self.expires_at - current > PINNED_HORIZON


@dataclass(frozen=True)
class ModelDetails:
    """What /api/show says about a model, reduced to what the supervisor decides on."""

    capabilities: tuple[str, ...] | None
    has_pooling: bool
    context_length: int | None
    blob: str | None = None  # the model file named by the Modelfile's FROM line

    @property
    def kind(self) -> ModelKind:
        if self.capabilities is not None:
            if "embedding" in self.capabilities:
                return ModelKind.EMBEDDING
            return ModelKind.COMPLETION
        # Older servers have no capabilities; pooling_type is what marks an embedding GGUF.
        return ModelKind.EMBEDDING if self.has_pooling else ModelKind.COMPLETION


@dataclass(frozen=True)
class PullProgress:
    status: str
    digest: str | None
    total: int
    completed: int


def _from_line(modelfile: str) -> str | None:
    """The model file path in `FROM /.../blobs/sha256-...`: names that share it share a runner."""
    for line in modelfile.splitlines():
        if line.startswith("FROM ") and "sha256" in line:
            return line[5:].strip()
    return None


# Go's texts for a registry that Ollama cannot talk to as configured (net/http, crypto/x509,
# crypto/tls), and nginx's for plain HTTP sent to its HTTPS port. The first match wins.
_REGISTRY_PROBLEMS = (
    ("server gave HTTP response to HTTPS client", RegistryProblem.PLAIN_HTTP),
    ("first record does not look like a TLS handshake", RegistryProblem.PLAIN_HTTP),
    ("Client sent an HTTP request to an HTTPS server", RegistryProblem.HTTPS_ONLY),
    ("plain HTTP request was sent to HTTPS port", RegistryProblem.HTTPS_ONLY),
    ("certificate signed by unknown authority", RegistryProblem.UNKNOWN_CA),
    ("x509: ", RegistryProblem.BAD_CERT),
    ("tls: failed to verify certificate", RegistryProblem.BAD_CERT),
)


def registry_problem(message: str) -> RegistryProblem | None:
    """Which registry misconfiguration a pull error text shows, if any."""
    for marker, problem in _REGISTRY_PROBLEMS:
        if marker in message:
            return problem
    return None


def _pull_error(exc: ollama.ResponseError) -> OllamaAPIError:
    message = str(exc.error)
    problem = registry_problem(message)
    if problem is not None:
        # Inside a 200 stream as a rule; with HTTP 500 when no line was sent yet.
        return RegistryTLSError(message, problem)
    if exc.status_code == -1:  # an error line inside a 200 stream
        return PullStreamError(message)
    return _translate(exc)


def _translate(exc: BaseException) -> OllamaAPIError:
    if isinstance(exc, ollama.ResponseError):
        status, message = exc.status_code, str(exc.error)
        if status == 404:
            return ModelNotFound(message, status)
        if status == 400 and "does not support" in message:
            return NotSupported(message, status)
        if status == 503:
            return ServerBusy(message, status)
        return OllamaResponseError(message, status)
    if isinstance(exc, ConnectionError | httpx.ConnectError):
        return OllamaUnavailable("cannot connect to Ollama (connection refused)")
    if isinstance(exc, httpx.TimeoutException):
        return OllamaUnavailable(f"Ollama did not answer in time ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return OllamaUnavailable(f"connection to Ollama failed: {exc or type(exc).__name__}")
    if isinstance(exc, pydantic.ValidationError | json.JSONDecodeError | KeyError | TypeError):
        return OllamaAPIError(f"unexpected answer from Ollama: {exc}")
    return OllamaAPIError(str(exc))


def _connect_failure(exc: httpx.HTTPError, timeout: float) -> str:
    """The cause of a failed request, from the OS error under httpx's exception."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no answer to a connection within {timeout:g}s (host down, or a firewall)"
    if isinstance(exc, httpx.TimeoutException):
        # The port is open but HTTP hangs: Ollama is still discovering GPUs, or is stuck.
        return f"connected, but no answer within {timeout:g}s"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (nothing listens on that port)"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host name ({cause.strerror})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or cause})"
        if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return f"connection failed ({exc or type(exc).__name__})"


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    try:
        return await make()
    except OllamaAPIError:
        raise
    except (
        ollama.ResponseError,
        ConnectionError,
        httpx.HTTPError,
        pydantic.ValidationError,
        json.JSONDecodeError,
    ) as exc:
        raise _translate(exc) from exc


class OwnRequests:
    """Counts our model requests that reached Ollama or may still (each gets an access line):
    `expected` is those answered plus those in flight; one that failed without an answer
    (refused, reset) is dropped, as Ollama may never have seen it."""

    def __init__(self) -> None:
        self.expected = 0

    def transport(self) -> httpx.AsyncBaseTransport:
        return _Counting(httpx.AsyncHTTPTransport(limits=LIMITS), self)


class _Counting(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, own: OwnRequests) -> None:
        self._inner, self._own = inner, own

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.path not in MODEL_PATHS:
            return await self._inner.handle_async_request(request)
        self._own.expected += 1
        try:
            return await self._inner.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            self._own.expected -= 1  # never reached Ollama: no line will come for it
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class OllamaAPI:
    """Typed access to one Ollama server. Close it with `aclose()`."""

    def __init__(
        self,
        base_url: str,
        *,
        probe_timeout: float = 2.0,
        call_timeout: float = 30.0,
        pull_stall_timeout: float = 300.0,
    ) -> None:
        self.base_url = base_url
        self._probe_timeout = probe_timeout
        # Our own model requests (loads, unloads, probes, warm-ups) in flight or answered:
        # Ollama logs an access line for each, which is then not a client's.
        self.own = OwnRequests()
        self._probe = httpx.AsyncClient(base_url=base_url, timeout=probe_timeout, limits=LIMITS)
        # Listing and show must not hang the watch loop; a hung server shows up as a timeout.
        self._quick = ollama.AsyncClient(
            host=base_url, timeout=httpx.Timeout(call_timeout), transport=self.own.transport()
        )
        # Loads get no read timeout: a client that gives up aborts the load (Ollama returns 499).
        self._load = ollama.AsyncClient(
            host=base_url,
            timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=None),
            transport=self.own.transport(),
        )
        self._pull = ollama.AsyncClient(
            host=base_url,
            timeout=httpx.Timeout(connect=10.0, read=pull_stall_timeout, write=30.0, pool=None),
            limits=LIMITS,
        )
        self._warm = ollama.AsyncClient(
            host=base_url,
            timeout=httpx.Timeout(connect=10.0, read=WARMUP_TIMEOUT, write=30.0, pool=None),
            transport=self.own.transport(),
        )
        # Probes: no read timeout here, the prober gives each one PRELOADER_PROBE_TIMEOUT.
        self._check = ollama.AsyncClient(
            host=base_url,
            timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=None),
            transport=self.own.transport(),
        )
        self._stall = pull_stall_timeout

    async def aclose(self) -> None:
        await self._probe.aclose()
        for client in (self._quick, self._load, self._pull, self._warm, self._check):
            await client.close()  # type: ignore[no-untyped-call]

    async def probe(self) -> bool:
        """True when `GET /` answers 200: Ollama is serving requests, not just bound."""
        return await self.unreachable_reason() is None

    async def unreachable_reason(self) -> str | None:
        """Why `GET /` does not answer 200, worded for the user to act on; None when it does."""
        try:
            response = await self._probe.get("/")
        except httpx.HTTPError as exc:
            return _connect_failure(exc, self._probe_timeout)
        status = response.status_code
        if status == 200:
            return None
        if status == 403:
            # allowedHostsMiddleware: a loopback-bound Ollama refuses unknown Host headers.
            return (
                "HTTP 403: Ollama refused the host name (when it listens on loopback it only "
                "accepts localhost, IP addresses and the machine's own names)"
            )
        if status >= 500:
            return (
                f"HTTP {status} on GET {response.request.url}: a proxy in front of Ollama "
                "could not reach it, or Ollama failed"
            )
        return (
            f"HTTP {status} on GET {response.request.url}: this is not Ollama, or the path in "
            "OLLAMA_HOST is wrong"
        )

    async def version(self) -> str:
        async def get() -> str:
            response = await self._probe.get("/api/version", timeout=10.0)
            response.raise_for_status()
            return str(response.json().get("version", "unknown"))

        try:
            return await get()
        except (httpx.HTTPError, json.JSONDecodeError, AttributeError) as exc:
            raise _translate(exc) from exc

    async def tags(self) -> list[LocalModel]:
        result = await _call(self._quick.list)
        return [
            LocalModel(name=m.model or "", digest=m.digest or "", size=int(m.size or 0))
            for m in result.models
        ]

    async def ps(self) -> list[LoadedModel]:
        result = await _call(self._quick.ps)
        return [
            LoadedModel(
                name=m.model or m.name or "",
                digest=m.digest or "",
                size=int(m.size or 0),
                size_vram=int(m.size_vram or 0),
                expires_at=m.expires_at,
                context_length=m.context_length,
            )
            for m in result.models
        ]

    async def show(self, name: str) -> ModelDetails:
        result = await _call(lambda: self._quick.show(name))
        info: Mapping[str, Any] = result.modelinfo or {}
        arch = str(info.get("general.architecture", ""))
        ctx = info.get(f"{arch}.context_length")
        return ModelDetails(
            capabilities=tuple(result.capabilities) if result.capabilities is not None else None,
            has_pooling=f"{arch}.pooling_type" in info,
            context_length=int(ctx) if isinstance(ctx, int) else None,
            blob=_from_line(result.modelfile or ""),
        )

    async def unload(self, name: str) -> None:
        """keep_alive 0 with no prompt: Ollama's fast unload path; it returns before the unload."""
        await _call(lambda: self._quick.generate(model=name, keep_alive=0))

    async def copy(self, source: str, destination: str) -> None:
        """A second name for the same manifest (`ollama cp`): it keeps the blobs on disk."""
        await _call(lambda: self._quick.copy(source, destination))

    async def delete(self, name: str) -> None:
        """`ollama rm`: the name, and the blobs no other name uses."""
        await _call(lambda: self._quick.delete(name))

    async def pull(self, name: str, *, insecure: bool = False) -> AsyncIterator[PullProgress]:
        """Stream pull progress; PullStreamError on an error line, OllamaUnavailable on a stall.

        `insecure` is Ollama's own flag: plain HTTP to the registry. RegistryTLSError when the
        registry's HTTP/HTTPS or certificate does not match the configuration.
        """
        try:
            stream = await self._pull.pull(name, insecure=insecure, stream=True)
            last_change = time.monotonic()
            last: tuple[str, int] = ("", -1)
            async for part in stream:
                progress = PullProgress(
                    status=part.status or "",
                    digest=part.digest,
                    total=int(part.total or 0),
                    completed=int(part.completed or 0),
                )
                now = time.monotonic()
                # Ollama repeats the same progress every 60 ms while a download is stuck.
                if (progress.status, progress.completed) != last:
                    last, last_change = (progress.status, progress.completed), now
                elif now - last_change > self._stall:
                    raise OllamaUnavailable(
                        f"pull stalled: no progress for {self._stall:g}s "
                        "(PRELOADER_PULL_STALL_TIMEOUT)"
                    )
                yield progress
        except ollama.ResponseError as exc:
            raise _pull_error(exc) from exc
        except (ConnectionError, httpx.HTTPError, pydantic.ValidationError) as exc:
            raise _translate(exc) from exc
        except json.JSONDecodeError as exc:
            raise _translate(exc) from exc

    async def load_completion(
        self, name: str, keep_alive: float, options: Mapping[str, Any]
    ) -> None:
        """Load with an empty /api/generate; returns once the runner is loaded and healthy."""
        await _call(
            lambda: self._load.generate(
                model=name, keep_alive=keep_alive, options=dict(options) or None
            )
        )

    async def load_embedding(
        self, name: str, keep_alive: float, options: Mapping[str, Any]
    ) -> None:
        """Load with an empty /api/embed, or legacy /api/embeddings on servers without it."""
        opts = dict(options) or None
        try:
            await _call(
                lambda: self._load.embed(model=name, input=[], keep_alive=keep_alive, options=opts)
            )
        except ModelNotFound as exc:
            # gin's plain-text 404 means the route is missing, not the model.
            if "page not found" not in exc.message:
                raise
            await _call(
                lambda: self._load.embeddings(
                    model=name, prompt="", keep_alive=keep_alive, options=opts
                )
            )

    async def warm_completion(
        self, name: str, keep_alive: float, options: Mapping[str, Any]
    ) -> None:
        """One short generation of a single token, so the first real request is not the first.

        `options` must be the ones the load sent: a different runner option would reload the
        model (ollama-behaviour.md §7.4). `num_predict` is not a runner option.
        """
        await _call(
            lambda: self._warm.generate(
                model=name,
                prompt=WARMUP_PROMPT,
                keep_alive=keep_alive,
                options={**options, "num_predict": 1},
            )
        )

    async def warm_embedding(
        self, name: str, keep_alive: float, options: Mapping[str, Any]
    ) -> None:
        """One short input through /api/embed (legacy /api/embeddings on servers without it)."""
        opts = dict(options) or None
        try:
            await _call(
                lambda: self._warm.embed(
                    model=name, input=WARMUP_INPUT, keep_alive=keep_alive, options=opts
                )
            )
        except ModelNotFound as exc:
            if "page not found" not in exc.message:
                raise
            await _call(
                lambda: self._warm.embeddings(
                    model=name, prompt=WARMUP_INPUT, keep_alive=keep_alive, options=opts
                )
            )

    async def probe_model(
        self, name: str, kind: ModelKind, keep_alive: float, options: Mapping[str, Any]
    ) -> None:
        """The smallest real request through the path clients use (reconcile/probing.py): one
        token of `generate`, or `embed` of one word. A load-only request would not do: a
        wedged model answers those at once (ollama-behaviour.md §9.5a). Not streamed, so a
        probe given up on is no dropped stream."""
        opts = dict(options)
        if kind == ModelKind.EMBEDDING:
            await _call(
                lambda: self._check.embed(
                    model=name, input=WARMUP_INPUT, keep_alive=keep_alive, options=opts or None
                )
            )
            return
        await _call(
            lambda: self._check.generate(
                model=name,
                prompt=WARMUP_PROMPT,
                keep_alive=keep_alive,
                options={**opts, "num_predict": 1},
            )
        )
