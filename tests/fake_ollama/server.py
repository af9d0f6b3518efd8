"""`ollama serve`: listen, startup log lines and events, signals, the accept loop, shutdown."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import sys
import threading
import time

from . import VERSION
from .catalog import default_spec
from .envconfig import HostURL, load_settings
from .eventlog import Logger
from .faults import Faults
from .gotime import duration_string, human_bytes
from .httpd import App, FakeHTTPServer
from .names import parse_name
from .store import StoreInitError


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
