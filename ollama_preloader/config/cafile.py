"""SSL_CERT_FILE checked before anything starts, its load overlapped with the imports.

Users set SSL_CERT_FILE for `ollama serve` (a registry with a private CA), and httpx reads it
too, for every client the supervisor makes: a wrong path would end each command in a
traceback, so a value that does not load is a configuration error (exit 2, nothing started).
Loading a system bundle takes OpenSSL ~20 ms, all of it before `ollama serve` is spawned. The
load releases the GIL, so `run` starts it in a thread (`start_ca_check`) before it imports the
settings' libraries, and `check_ca_file` then takes that result instead of loading again.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Mapping

from ollama_preloader.errors import ConfigError

ENV_CA_FILE = "SSL_CERT_FILE"

# path -> (the thread loading it, where it puts why the load failed: "" when it loaded)
_started: dict[str, tuple[threading.Thread, list[str]]] = {}


def _why_not(path: str) -> str:
    """Why `path` does not load as CA certificates, or "" when it does."""
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        return str(exc.reason or exc).lower().replace("_", " ")
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return ""


def start_ca_check(environ: Mapping[str, str]) -> None:
    """Begin loading SSL_CERT_FILE, when set, in a daemon thread for `check_ca_file` to join."""
    path = environ.get(ENV_CA_FILE)
    if not path or path in _started:
        return
    result: list[str] = []
    thread = threading.Thread(
        target=lambda: result.append(_why_not(path)), name="ca-check", daemon=True
    )
    _started[path] = (thread, result)
    thread.start()


def check_ca_file(environ: Mapping[str, str]) -> None:
    """ConfigError unless SSL_CERT_FILE, when set, loads as CA certificates.

    A load `start_ca_check` began for the same path is joined and used once; every later call
    (a SIGHUP's re-read) loads the file again, as it may have changed.
    """
    path = environ.get(ENV_CA_FILE)
    if not path:
        return
    started = _started.pop(path, None)
    if started is None:
        why = _why_not(path)
    else:
        thread, result = started
        thread.join()
        # No result: the load raised something other than SSLError/OSError in the thread; load
        # here, so that it is raised to the caller as it was before the thread.
        why = result[0] if result else _why_not(path)
    if why:
        raise ConfigError(
            f"{ENV_CA_FILE}={path!r}: cannot be read as CA certificates ({why}); name the PEM "
            "file of the CA that signed your registry's certificate, or unset it"
        )
