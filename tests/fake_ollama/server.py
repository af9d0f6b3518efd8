"""`ollama serve`: the HTTP API (§1-§9) on http.server, plus /_fake/ control endpoints."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from . import VERSION
from .catalog import Catalog, default_spec
from .envconfig import HostURL, Settings, load_settings
from .eventlog import Logger
from .faults import Faults
from .gotime import (
    SECOND,
    DurationError,
    decode_keep_alive,
    duration_string,
    go_json,
    go_q,
    human_bytes,
    rfc3339nano,
)
from .names import parse_name
from .pull import ClientGone, Puller, PullError
from .scheduler import (
    BUSY_MESSAGE,
    LoadRequest,
    Runner,
    RunnerOptions,
    SchedError,
    Scheduler,
    merge_options,
)
from .store import LocalModel, Store, StoreInitError

NO_EMBEDDINGS = "This server does not support embeddings. Start it with `--embeddings`"
RUNTIME_OOM = "CUDA error: out of memory"
CANNED = "The quick brown fox jumps over the lazy dog while the fake model answers your prompt."

_OPTS = "map[string]interface {}"
FIELDS: dict[str, dict[str, str]] = {
    "GenerateRequest": {
        "model": "string",
        "prompt": "string",
        "suffix": "string",
        "system": "string",
        "template": "string",
        "stream": "bool",
        "raw": "bool",
        "options": _OPTS,
        "images": "[]api.ImageData",
        "context": "[]int",
    },
    "ChatRequest": {
        "model": "string",
        "messages": "[]api.Message",
        "stream": "bool",
        "options": _OPTS,
        "tools": "api.Tools",
    },
    "EmbedRequest": {"model": "string", "truncate": "bool", "options": _OPTS, "dimensions": "int"},
    "EmbeddingsRequest": {"model": "string", "prompt": "string", "options": _OPTS},
    "PullRequest": {"model": "string", "name": "string", "insecure": "bool", "stream": "bool"},
    "ShowRequest": {
        "model": "string",
        "name": "string",
        "system": "string",
        "verbose": "bool",
        "options": _OPTS,
    },
    "DeleteRequest": {"model": "string", "name": "string"},
    "CopyRequest": {"source": "string", "destination": "string"},
}
_KEEP_ALIVE_STRUCTS = {"GenerateRequest", "ChatRequest", "EmbedRequest", "EmbeddingsRequest"}


class HTTPError(Exception):
    """Abort the handler with a JSON error response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json_kind(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _type_ok(gotype: str, v: object) -> bool:
    if v is None:
        return True
    if gotype == "string":
        return isinstance(v, str)
    if gotype == "bool":
        return isinstance(v, bool)
    if gotype == "int":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if gotype == _OPTS:
        return isinstance(v, dict)
    if gotype.startswith("[]") or gotype == "api.Tools":
        return isinstance(v, list)
    return True


def _reject_constant(c: str) -> object:
    raise ValueError(c)


def bind_json(raw: bytes, struct: str) -> dict[str, Any]:
    """ShouldBindJSON: parse and type-check; raises HTTPError(400) with Go-like messages."""
    if not raw.strip():
        raise HTTPError(400, "missing request body")
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as e:
        text = raw.decode("utf-8", "replace").strip()
        pos = getattr(e, "pos", 0) or 0
        if pos >= len(text):
            raise HTTPError(400, "unexpected EOF") from None
        ch = text[pos] if pos < len(text) else ""
        raise HTTPError(400, f"invalid character '{ch}' looking for beginning of value") from None
    if not isinstance(obj, dict):
        raise HTTPError(
            400, f"json: cannot unmarshal {_json_kind(obj)} into Go value of type api.{struct}"
        )
    # encoding/json matches keys case-insensitively (exact match preferred)
    out: dict[str, Any] = {}
    fields = dict(FIELDS.get(struct, {}))
    if struct in _KEEP_ALIVE_STRUCTS:
        fields["keep_alive"] = "api.Duration"
    if struct == "EmbedRequest":
        fields["input"] = "any"
    if struct in {"ChatRequest", "GenerateRequest"}:
        fields.setdefault("format", "any")
        fields.setdefault("think", "any")
    lower = {k.lower(): k for k in obj}
    for f in fields:
        if f in obj:
            out[f] = obj[f]
        elif f.lower() in lower:
            out[f] = obj[lower[f.lower()]]
    if struct in _KEEP_ALIVE_STRUCTS and "keep_alive" in out:
        try:
            out["keep_alive"] = decode_keep_alive(out["keep_alive"])
        except DurationError as e:
            raise HTTPError(400, str(e)) from None
    for f, gotype in fields.items():
        if f in out and not _type_ok(gotype, out[f]):
            raise HTTPError(
                400,
                f"json: cannot unmarshal {_json_kind(out[f])} into Go struct field "
                f"{struct}.{f} of type {gotype}",
            )
    return out


def now_utc() -> str:
    """created_at: UTC RFC3339Nano."""
    return rfc3339nano(time.time_ns(), utc=True)


def fake_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for text."""
    raw = hashlib.shake_256(text.encode("utf-8")).digest(dims * 2)
    vals = [
        (int.from_bytes(raw[i : i + 2], "little") / 32767.5) - 1.0 for i in range(0, dims * 2, 2)
    ]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [round(v / norm, 7) for v in vals]


class App:
    """Shared state of one `ollama serve` process."""

    def __init__(self, settings: Settings, log: Logger) -> None:
        self.settings = settings
        self.log = log
        self.store = Store(settings.models_dir)
        self.catalog = Catalog(settings.catalog_path)
        self.faults = Faults(settings.faults_path)
        self.sched = Scheduler(settings, log, self.faults, self.runtime_for)
        self.puller = Puller(settings, self.store, self.catalog, self.faults, log)
        self.loopback_only = False
        self.hostname = socket.gethostname().lower()
        # Requests still being handled: shutdown waits for their log records (a test reads
        # the request log right after the server stops).
        self.inflight = 0
        self.inflight_cond = threading.Condition()

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.inflight_cond:
            while self.inflight and time.monotonic() < deadline:
                self.inflight_cond.wait(max(0.0, deadline - time.monotonic()))

    def runtime_for(self, model: LocalModel) -> dict[str, Any]:
        """Load-time knobs: the current catalog entry for the name, else the blob's record."""
        rt = {"vram": int(model.size * 1.1), **model.runtime()}
        spec = self.catalog.get(model.display)
        if spec is not None:
            rt.update(spec.runtime())
        return rt

    def host_allowed(self, host_header: str) -> bool:
        """allowedHostsMiddleware (only applied on loopback listeners)."""
        host = host_header.strip()
        if host.startswith("["):
            host = host[1 : host.find("]")] if "]" in host else host
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        host = host.lower()
        try:
            ip = ipaddress.ip_address(host)
            return ip.is_loopback or ip.is_private or ip.is_unspecified
        except ValueError:
            pass
        if host in ("", "localhost", self.hostname):
            return True
        return any(host.endswith("." + tld) for tld in ("localhost", "local", "internal"))


Route = Callable[["Handler"], None]


class FakeHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer fed by our own accept loop; tracks connections for a hard close."""

    daemon_threads = True

    def __init__(self, app: App) -> None:
        super().__init__(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.app = app
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that resets or drops its connection is routine: Go's net/http closes it
        without a word. Anything else is a bug in the fake and keeps its traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        """srvr.Close(): drop every open connection at once."""
        with self.conns_lock:
            conns = list(self.conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    """One HTTP connection."""

    protocol_version = "HTTP/1.1"
    # Go's net package sets TCP_NODELAY on every connection. Without it, the body written after
    # the headers waits for the client's delayed ACK: about 40 ms on every keep-alive request.
    disable_nagle_algorithm = True
    server: FakeHTTPServer

    # --------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's own logging (gin lines are written instead)."""

    def send_response(self, code: int, message: str | None = None) -> None:
        """Status line + Date, no Server header (like Go)."""
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())
        self._status = code

    @property
    def app(self) -> App:
        """The server's shared state."""
        return self.server.app

    def do_GET(self) -> None:
        """GET."""
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        """HEAD."""
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        """POST."""
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        """DELETE."""
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        """PUT."""
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        """PATCH."""
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        """OPTIONS."""
        self._dispatch("OPTIONS")

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _dispatch(self, method: str) -> None:
        with self.app.inflight_cond:
            self.app.inflight += 1
        try:
            self._dispatch_counted(method)
        finally:
            with self.app.inflight_cond:
                self.app.inflight -= 1
                self.app.inflight_cond.notify_all()

    def _dispatch_counted(self, method: str) -> None:
        t0 = time.monotonic_ns()
        self._status = 0
        self._method = method
        self._streaming = False
        path = urlsplit(self.path).path
        try:
            self._body = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        body_obj: Any = None
        if self._body.strip():
            try:
                body_obj = json.loads(self._body)
            except ValueError:
                body_obj = None
        try:
            self._route(method, path)
        except HTTPError as e:
            self.send_error_json(e.status, e.message)
        except ClientGone:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception as e:  # a bug in the fake must not kill the connection silently
            self.app.log.slog_warn("routes.go:0", "fake handler error", error=repr(e))
            if not self._status:
                try:
                    self.send_error_json(500, f"fake ollama internal error: {e!r}")
                except OSError:
                    self.close_connection = True
            else:
                self.close_connection = True
        finally:
            latency = time.monotonic_ns() - t0
            self.app.log.record(
                {
                    "method": method,
                    "path": path,
                    "body": body_obj,
                    "status": self._status,
                    "duration": latency / SECOND,
                }
            )
            self.app.log.gin(self._status, latency, self.client_address[0], method, path)

    def _route(self, method: str, path: str) -> None:
        app = self.app
        if app.loopback_only and not app.host_allowed(self.headers.get("Host", "")):
            self.send_empty(403)
            return
        hang = app.faults.take("hang", path)
        if hang is not None:
            time.sleep(float(hang.get("seconds", 30)))
        if app.faults.take("busy", path) is not None:
            raise HTTPError(503, BUSY_MESSAGE)
        if path == "/api/embed" and app.faults.flag("no_embed_endpoint"):
            self.send_text(404, "404 page not found")
            return
        routes = ROUTES.get(path)
        if routes is None:
            self.send_text(404, "404 page not found")
            return
        fn = routes.get(method)
        if fn is None:
            self.send_text(405, "405 method not allowed")
            return
        fn(self)

    def client_gone(self) -> bool:
        """Peek at the socket: the client closed its side (EOF) or reset."""
        try:
            data: bytes = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            return data == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    # ---------------------------------------------------------------- output
    def _send_bytes(self, status: int, ctype: str | None, body: bytes) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self._method != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status: int, obj: object) -> None:
        """gin c.JSON."""
        self._send_bytes(status, "application/json; charset=utf-8", go_json(obj).encode())

    def send_error_json(self, status: int, message: str) -> None:
        """{"error": message}."""
        self.send_json(status, {"error": message})

    def send_text(self, status: int, text: str) -> None:
        """text/plain body."""
        self._send_bytes(status, "text/plain; charset=utf-8", text.encode())

    def send_empty(self, status: int) -> None:
        """No body."""
        self._send_bytes(status, None, b"")

    def start_stream(self, status: int = 200) -> None:
        """Begin an application/x-ndjson chunked response."""
        self.send_response(status)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._streaming = True

    def stream_line(self, obj: object) -> None:
        """One JSON line (json.Encoder adds the newline); raises ClientGone."""
        data = (go_json(obj) + "\n").encode()
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except OSError as e:
            raise ClientGone() from e

    def end_stream(self) -> None:
        """Terminating chunk."""
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError as e:
            raise ClientGone() from e

    # ------------------------------------------------------------- helpers
    def bind(self, struct: str) -> dict[str, Any]:
        """Parse the JSON body as the named Go request struct."""
        return bind_json(self._body, struct)

    def schedule(
        self, lm: LocalModel, request_name: str, options: Any, keep_alive: int | None
    ) -> tuple[Runner, LoadRequest]:
        """scheduleRunner: options, then the scheduler; errors become HTTPError."""
        try:
            merged = merge_options(lm.params, options if isinstance(options, dict) else None)
        except SchedError as e:
            raise HTTPError(e.status, e.message) from None
        if not lm.blob_present:
            raise HTTPError(404, f"model {go_q(request_name)} not found, try pulling it first")
        req = LoadRequest(
            model=lm,
            request_name=request_name,
            opts=RunnerOptions.from_options(merged, lm.context_length),
            options=merged,
            keep_alive=keep_alive,
            is_gone=self.client_gone,
        )
        try:
            runner = self.app.sched.get_runner(req)
        except SchedError as e:
            raise HTTPError(e.status, e.message) from None
        return runner, req

    def runtime_fault(self, lm: LocalModel) -> None:
        """Optional runtime OOM during inference (expires every runner), or a plain failure."""
        if self.app.faults.take("runtime_oom", lm.display, model=True) is not None:
            self.app.sched.runtime_oom()
            raise HTTPError(500, RUNTIME_OOM)
        # A completion or embedding that fails in llama-server: a non-streamed request gets 500
        # and the error text (waitForStream); the runner and its keep_alive are left as they are.
        fail = self.app.faults.take("inference_fail", lm.display, model=True)
        if fail is not None:
            raise HTTPError(
                int(fail.get("status", 500)),
                str(fail.get("message", "error creating completion request: EOF")),
            )


# ====================================================================== routes
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


def h_tags(h: Handler) -> None:
    """GET/HEAD /api/tags."""
    caps = not h.app.faults.flag("no_capabilities")
    models = []
    for m in h.app.store.list_models():
        entry: dict[str, Any] = {
            "name": m.display,
            "model": m.display,
            "modified_at": rfc3339nano(m.modified_ns),
            "size": m.size,
            "digest": m.digest,
            "details": m.details(with_lengths=True),
        }
        if caps:
            entry["capabilities"] = m.capabilities()
        models.append(entry)
    h.send_json(200, {"models": models})


def h_ps(h: Handler) -> None:
    """GET /api/ps."""
    h.send_json(200, {"models": h.app.sched.ps()})


def _modelfile(lm: LocalModel) -> str:
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {lm.display}",
        "",
        f"FROM {lm.model_path}",
    ]
    if lm.template:
        lines.append(f'TEMPLATE """{lm.template}"""')
    for k, v in lm.params.items():
        for item in v if isinstance(v, list) else [v]:
            lines.append(f"PARAMETER {k} {item}")
    if lm.license:
        lines.append(f'LICENSE """{lm.license}"""')
    return "\n".join(lines) + "\n"


def _parameters(lm: LocalModel) -> str:
    out = []
    for k, v in lm.params.items():
        for item in v if isinstance(v, list) else [v]:
            val = go_q(item) if isinstance(item, str) else json.dumps(item)
            out.append(f"{k:<30} {val}")
    return "\n".join(out)


def h_show(h: Handler) -> None:
    """POST /api/show (§4)."""
    req = h.bind("ShowRequest")
    model_s = req.get("model") or req.get("name") or ""
    if not model_s:
        raise HTTPError(400, "model is required")
    name = parse_name(model_s)
    if not name.is_valid():
        raise HTTPError(400, "invalid model name")
    lm = h.app.store.find(model_s)
    if lm is None:
        raise HTTPError(404, f"model '{name.display_shortest()}' not found")
    resp: dict[str, Any] = {}
    if lm.license:
        resp["license"] = lm.license
    resp["modelfile"] = _modelfile(lm)
    params = _parameters(lm)
    if params:
        resp["parameters"] = params
    if lm.template:
        resp["template"] = lm.template
    resp["details"] = lm.details()
    resp["model_info"] = lm.model_info() if lm.blob_present else {}
    emb = lm.embedding_length
    resp["tensors"] = [
        {"name": "token_embd.weight", "type": "Q4_K", "shape": [emb, 32000]},
        {"name": "output_norm.weight", "type": "F32", "shape": [emb]},
    ]
    if not h.app.faults.flag("no_capabilities"):
        resp["capabilities"] = lm.capabilities()
    resp["modified_at"] = rfc3339nano(lm.modified_ns)
    h.send_json(200, resp)


def h_pull(h: Handler) -> None:
    """POST /api/pull (§6)."""
    req = h.bind("PullRequest")
    model_s = req.get("model") or req.get("name") or ""
    name = parse_name(model_s)
    if not model_s or not name.is_valid():
        raise HTTPError(400, "invalid model name")
    app = h.app
    f = app.faults.take("pull_http_status", name.display_shortest(), model=True)
    if f is not None:
        raise HTTPError(int(f.get("status", 500)), str(f.get("message", "pull failed")))
    name = app.store.existing_name(name)
    insecure = bool(req.get("insecure"))
    stream = req.get("stream")
    if stream is None or stream:
        h.start_stream(200)
        try:
            app.puller.pull(name, h.stream_line, h.client_gone, insecure=insecure)
            app.log.event("pull_success", name.display_shortest())
        except PullError as e:
            app.log.event("pull_error", name.display_shortest(), error=str(e))
            h.stream_line({"error": str(e)})
        except ClientGone:
            app.log.event("pull_client_gone", name.display_shortest())
            raise
        h.end_stream()
        return
    last: list[dict[str, Any]] = [{}]

    def keep(obj: dict[str, Any]) -> None:
        last[0] = obj

    try:
        app.puller.pull(name, keep, h.client_gone, insecure=insecure)
    except PullError as e:
        app.log.event("pull_error", name.display_shortest(), error=str(e))
        raise HTTPError(500, str(e)) from None
    app.log.event("pull_success", name.display_shortest())
    h.send_json(200, last[0])


def _resolve_for_inference(h: Handler, model_s: str, *, empty_status: int) -> LocalModel:
    name = parse_name(model_s)
    if not model_s:
        if empty_status == 404:
            raise HTTPError(404, "model '' not found")
        raise HTTPError(400, "model is required")
    if not name.is_valid():
        raise HTTPError(400, "invalid model name")
    lm = h.app.store.find(model_s)
    if lm is None:
        raise HTTPError(404, f"model '{model_s}' not found")
    return lm


def _metrics(req: LoadRequest, t0: int, prompt: str, n_tokens: int, eval_ns: int) -> dict[str, Any]:
    total = time.monotonic_ns() - t0
    return {
        "total_duration": total,
        "load_duration": req.loaded_ns or 120_000,
        "prompt_eval_count": max(1, len(prompt) // 4),
        "prompt_eval_duration": 1_000_000,
        "eval_count": n_tokens,
        "eval_duration": max(eval_ns, 1),
    }


def _tokens(options: dict[str, Any]) -> tuple[list[str], str]:
    words = CANNED.split(" ")
    toks = [w if i == 0 else " " + w for i, w in enumerate(words)]
    n = options.get("num_predict")
    if isinstance(n, int) and 0 <= n < len(toks):
        return toks[:n], "length"
    return toks, "stop"


def _generate_or_chat(h: Handler, chat: bool) -> None:
    req = h.bind("ChatRequest" if chat else "GenerateRequest")
    model_s = req.get("model") or ""
    lm = _resolve_for_inference(h, model_s, empty_status=400 if chat else 404)
    ka = req.get("keep_alive")
    if chat:
        messages = req.get("messages") or []
        empty = len(messages) == 0
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    else:
        prompt = req.get("prompt") or ""
        empty = prompt == "" and not req.get("images")
    base: dict[str, Any] = {"model": model_s}

    def reply(done_reason: str) -> dict[str, Any]:
        r = dict(base)
        r["created_at"] = now_utc()
        if chat:
            r["message"] = {"role": "assistant", "content": ""}
        else:
            r["response"] = ""
        r["done"] = True
        r["done_reason"] = done_reason
        return r

    if empty and ka == 0:
        h.app.sched.expire_runner(lm)
        h.send_json(200, reply("unload"))
        return
    caps = lm.capabilities()
    what = "chat" if chat else "generate"
    if "completion" not in caps:
        raise HTTPError(400, f"{go_q(model_s)} does not support {what}")
    if not chat and req.get("suffix") and "insert" not in caps:
        raise HTTPError(400, f"{go_q(model_s)} does not support insert")
    t0 = time.monotonic_ns()
    runner, lreq = h.schedule(lm, model_s, req.get("options"), ka)
    try:
        if empty:
            h.send_json(200, reply("load"))
            return
        runner.slots.acquire()
        try:
            h.runtime_fault(lm)
            _emit_tokens(
                h,
                runner,
                lreq,
                base=base,
                prompt=prompt,
                chat=chat,
                stream=req.get("stream"),
                t0=t0,
            )
        finally:
            runner.slots.release()
    finally:
        h.app.sched.release(runner)


def _emit_tokens(
    h: Handler,
    runner: Runner,
    lreq: LoadRequest,
    *,
    base: dict[str, Any],
    prompt: str,
    chat: bool,
    stream: Any,
    t0: int,
) -> None:
    toks, reason = _tokens(lreq.options)
    stream_on = stream is None or bool(stream)
    e0 = time.monotonic_ns()

    def piece(text: str, done: bool) -> dict[str, Any]:
        r = dict(base)
        r["created_at"] = now_utc()
        if chat:
            r["message"] = {"role": "assistant", "content": text}
        else:
            r["response"] = text
        r["done"] = done
        return r

    if stream_on:
        h.start_stream(200)
    for t in toks:
        if runner.token_seconds > 0:
            time.sleep(runner.token_seconds)
        if stream_on:
            h.stream_line(piece(t, False))
        elif h.client_gone():
            raise ClientGone()
    final = piece("" if stream_on else "".join(toks), True)
    final["done_reason"] = reason
    if not chat:
        final["context"] = [1, 2, 3]
    final.update(_metrics(lreq, t0, prompt, len(toks), time.monotonic_ns() - e0))
    if stream_on:
        h.stream_line(final)
        h.end_stream()
    else:
        h.send_json(200, final)


def h_generate(h: Handler) -> None:
    """POST /api/generate (§3.1, §2.5)."""
    _generate_or_chat(h, chat=False)


def h_chat(h: Handler) -> None:
    """POST /api/chat (§3.2)."""
    _generate_or_chat(h, chat=True)


def _embed_inputs(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw] if raw else []
    if isinstance(raw, list):
        if not all(isinstance(x, str) for x in raw):
            raise HTTPError(400, "invalid input type")
        return list(raw)
    raise HTTPError(400, "invalid input type")


def h_embed(h: Handler) -> None:
    """POST /api/embed (§3.3)."""
    req = h.bind("EmbedRequest")
    inputs = _embed_inputs(req.get("input"))
    model_s = req.get("model") or ""
    if not model_s:
        raise HTTPError(400, "model is required")
    if not parse_name(model_s).is_valid():
        raise HTTPError(400, "invalid model name")
    lm = h.app.store.find(model_s)
    if lm is None:
        raise HTTPError(404, f"model {go_q(model_s)} not found, try pulling it first")
    t0 = time.monotonic_ns()
    runner, lreq = h.schedule(lm, model_s, req.get("options"), req.get("keep_alive"))
    try:
        if not inputs:
            h.send_json(200, {"model": model_s, "embeddings": []})
            return
        runner.slots.acquire()
        try:
            h.runtime_fault(lm)
            if not lm.is_embedding:
                raise HTTPError(501, NO_EMBEDDINGS)
            truncate = req.get("truncate")
            tokens = 0
            for text in inputs:
                n = max(1, len(text) // 4)
                if n > runner.context_length and truncate is False:
                    raise HTTPError(400, "the input length exceeds the context length")
                tokens += min(n, runner.context_length)
            if runner.token_seconds > 0:
                time.sleep(runner.token_seconds)
            vecs = [fake_vector(t, lm.embedding_length) for t in inputs]
        finally:
            runner.slots.release()
        h.send_json(
            200,
            {
                "model": model_s,
                "embeddings": vecs,
                "total_duration": time.monotonic_ns() - t0,
                "load_duration": lreq.loaded_ns or 120_000,
                "prompt_eval_count": tokens,
            },
        )
    finally:
        h.app.sched.release(runner)


def h_embeddings(h: Handler) -> None:
    """POST /api/embeddings, the legacy endpoint (§3.4)."""
    req = h.bind("EmbeddingsRequest")
    model_s = req.get("model") or ""
    if not model_s:
        raise HTTPError(400, "model is required")
    if not parse_name(model_s).is_valid():
        raise HTTPError(400, "invalid model name")
    lm = h.app.store.find(model_s, case_insensitive=False)
    if lm is None:
        raise HTTPError(404, f"model {go_q(model_s)} not found, try pulling it first")
    runner, _ = h.schedule(lm, model_s, req.get("options"), req.get("keep_alive"))
    try:
        prompt = req.get("prompt") or ""
        if not prompt:
            h.send_json(200, {"embedding": []})
            return
        h.runtime_fault(lm)
        if not lm.is_embedding:
            raise HTTPError(500, NO_EMBEDDINGS)
        h.send_json(200, {"embedding": fake_vector(prompt, lm.embedding_length)})
    finally:
        h.app.sched.release(runner)


def h_delete(h: Handler) -> None:
    """DELETE /api/delete (§8.1)."""
    req = h.bind("DeleteRequest")
    model_s = req.get("model") or req.get("name") or ""
    if not parse_name(model_s).is_valid():
        raise HTTPError(400, f"name {go_q(model_s)} is invalid")
    lm = h.app.store.find(model_s)
    if lm is None:
        raise HTTPError(404, f"model '{model_s}' not found")
    try:
        h.app.store.delete(lm)
    except OSError as e:
        raise HTTPError(500, str(e)) from None
    h.app.log.event("delete", lm.display)
    h.send_empty(200)


def h_copy(h: Handler) -> None:
    """POST /api/copy (§8.2)."""
    req = h.bind("CopyRequest")
    src = req.get("source") or ""
    dst = req.get("destination") or ""
    if not parse_name(src).is_valid():
        raise HTTPError(400, f"source {go_q(src)} is invalid")
    dst_name = parse_name(dst)
    if not dst_name.is_valid():
        raise HTTPError(400, f"destination {go_q(dst)} is invalid")
    lm = h.app.store.find(src)
    if lm is None:
        raise HTTPError(404, f"model {go_q(src)} not found")
    h.app.store.copy(lm, dst_name)
    h.app.log.event("copy", lm.display, destination=dst_name.display_shortest())
    h.send_empty(200)


def h_not_supported(h: Handler) -> None:
    """Known Ollama endpoints the fake does not implement."""
    raise HTTPError(500, "not supported by the fake ollama server")


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


# ===================================================================== startup
def _listen(host: HostURL) -> socket.socket:
    """net.Listen("tcp", host:port); OSError carries Go-ish text in args[0]."""
    h = host.host
    if h in ("", "0.0.0.0", "::"):
        try:
            return socket.create_server(
                ("::", host.port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=1024
            )
        except OSError:
            if h == "::":
                raise
            return socket.create_server(("0.0.0.0", host.port), backlog=1024)
    try:
        infos = socket.getaddrinfo(h, host.port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise OSError(f"listen tcp: lookup {h}: no such host") from None
    infos.sort(key=lambda i: 0 if i[0] == socket.AF_INET else 1)
    fam, _, _, _, addr = infos[0]
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def _addr_str(sock: socket.socket) -> str:
    addr = sock.getsockname()
    ip, port = addr[0], addr[1]
    if sock.family == socket.AF_INET6:
        if ip.startswith("::ffff:"):
            ip = ip[7:]
            return f"{ip}:{port}"
        return f"[{ip}]:{port}"
    return f"{ip}:{port}"


def _is_loopback(sock: socket.socket) -> bool:
    ip = sock.getsockname()[0]
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _errno_text(e: OSError) -> str:
    msg = (e.strerror or str(e)).strip()
    return msg[:1].lower() + msg[1:]


def serve(args: list[str]) -> int:
    """Run `ollama serve` in the foreground; returns the exit code."""
    if args:
        sys.stderr.write(f"Error: accepts 0 arg(s), received {len(args)}\n")
        return 1
    settings = load_settings()
    log = Logger(settings.log_path, settings.debug)
    faults = Faults(settings.faults_path)
    exit_fault = faults.get("exit_at_startup")
    if isinstance(exit_fault, dict):
        sys.stderr.write(str(exit_fault.get("message", "Error: fake startup failure")) + "\n")
        sys.stderr.flush()
        return int(exit_fault.get("code", 1))
    if settings.host.port_warning is not None:
        log.slog_warn(
            "config.go:52",
            "invalid port, using default",
            port=settings.host.port_warning,
            default=settings.host.port,
        )
    try:
        sock = _listen(settings.host)
    except OSError as e:
        if e.errno is None and e.args and isinstance(e.args[0], str):
            sys.stderr.write(f"Error: {e.args[0]}\n")
        else:
            sys.stderr.write(
                f"Error: listen tcp {settings.host.hostport}: bind: {_errno_text(e)}\n"
            )
        return 1
    app = App(settings, log)
    env_map = " ".join(
        f"{k}:{v}"
        for k, v in sorted(
            {
                "OLLAMA_HOST": f"{settings.host.scheme}://{settings.host.hostport}",
                "OLLAMA_KEEP_ALIVE": duration_string(settings.keep_alive()),
                "OLLAMA_MAX_LOADED_MODELS": str(settings.max_loaded_models),
                "OLLAMA_MAX_QUEUE": str(settings.max_queue),
                "OLLAMA_MODELS": str(settings.models_dir),
                "OLLAMA_NOPRUNE": str(settings.noprune).lower(),
                "OLLAMA_NUM_PARALLEL": str(settings.num_parallel),
                "OLLAMA_CONTEXT_LENGTH": str(settings.context_length),
                "OLLAMA_LOAD_TIMEOUT": duration_string(settings.load_timeout() or 0),
            }.items()
        )
    )
    log.slog_info("routes.go:1950", "server config", env=f"map[{env_map}]")
    log.slog_info("routes.go:1953", f"Ollama cloud disabled: {str(settings.no_cloud).lower()}")
    try:
        app.store.init()
    except StoreInitError as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1
    log.slog_info("images.go:518", f"total blobs: {app.store.blob_count()}")
    if not settings.noprune:
        removed = app.store.prune()
        log.slog_info("images.go:525", f"total unused blobs removed: {removed}")
    for m in settings.present:
        name = parse_name(m)
        if not name.is_valid():
            log.slog_warn("fake", "FAKE_OLLAMA_PRESENT: invalid name", name=m)
            continue
        spec = app.catalog.get(m) or default_spec(m)
        if app.store.install(app.store.existing_name(name), spec):
            log.event("seeded", name.display_shortest())
    log.event("serve_start", pid=os.getpid(), env=dict(os.environ))
    app.loopback_only = _is_loopback(sock)
    httpd = FakeHTTPServer(app)
    httpd.socket = sock
    httpd.server_address = sock.getsockname()[:2]
    app.sched.start()
    log.slog_info("routes.go:2008", f"Listening on {_addr_str(sock)} (version {VERSION})")

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    def on_quit(signum: int, frame: object) -> None:
        sys.stderr.write("SIGQUIT: quit\n")
        sys.stderr.flush()
        os._exit(2)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGQUIT, on_quit)

    if settings.startup_delay > 0:
        log.slog_info("runner.go:67", "discovering available GPUs...")
        deadline = time.monotonic() + settings.startup_delay
        while not stop.is_set() and time.monotonic() < deadline:
            stop.wait(min(0.1, max(0.0, deadline - time.monotonic())))
    if not stop.is_set():
        if settings.gpu:
            log.slog_info(
                "types.go:42",
                "inference compute",
                id="GPU-fake-0",
                library="CUDA",
                name="Fake GPU",
                total=human_bytes(settings.vram),
                available=human_bytes(settings.vram),
            )
        else:
            log.slog_info("types.go:60", "inference compute", id="cpu", library="cpu", compute="")
        log.slog_info(
            "routes.go:2058",
            "vram-based default context",
            total_vram=human_bytes(settings.vram),
            default_num_ctx=settings.default_num_ctx,
        )
        log.event("serve_ready", address=_addr_str(sock))
        threading.Thread(target=_accept_loop, args=(httpd, sock, stop), daemon=True).start()
    while not stop.wait(0.2):
        pass
    # srvr.Close(): listener and every connection at once, then kill the runners.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    httpd.close_all()
    app.wait_idle(2.0)
    app.sched.shutdown()
    log.event("serve_stop", pid=os.getpid())
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(0)


def _accept_loop(httpd: FakeHTTPServer, sock: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn, addr = sock.accept()
        except OSError:
            return
        with httpd.conns_lock:
            httpd.conns.add(conn)
        try:
            httpd.process_request(conn, addr)
        except Exception:
            conn.close()
