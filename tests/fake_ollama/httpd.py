"""The HTTP layer: App (shared state), the server and Handler (dispatch, request log, output)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .binding import HTTPError, bind_json
from .catalog import Catalog
from .envconfig import Settings
from .eventlog import Logger
from .faults import Faults
from .gotime import SECOND, go_json, go_q
from .options import RunnerOptions, SchedError, merge_options
from .pull import ClientGone, Puller
from .routes import ROUTES
from .runners import LoadRequest, Runner
from .scheduler import BUSY_MESSAGE, Scheduler
from .store import LocalModel, Store

RUNTIME_OOM = "CUDA error: out of memory"


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
