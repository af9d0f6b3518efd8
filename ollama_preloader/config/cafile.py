"""SSL_CERT_FILE checked before anything starts.

Users set SSL_CERT_FILE for `ollama serve` (a registry with a private CA), and httpx reads it
too, for every client the supervisor makes: a wrong path would end each command in a
traceback, so a value that does not load is a configuration error (exit 2, nothing started).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from ollama_preloader.errors import ConfigError

ENV_CA_FILE = "SSL_CERT_FILE"


def _why_not(path: str) -> str:
    """Why `path` does not load as CA certificates, or "" when it does."""
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        return str(exc.reason or exc).lower().replace("_", " ")
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return ""


def check_ca_file(environ: Mapping[str, str]) -> None:
    """ConfigError unless SSL_CERT_FILE, when set, loads as CA certificates."""
    path = environ.get(ENV_CA_FILE)
    if not path:
        return
    why = _why_not(path)
    if why:
        raise ConfigError(
            f"{ENV_CA_FILE}={path!r}: cannot be read as CA certificates ({why}); name the PEM "
            "file of the CA that signed your registry's certificate, or unset it"
        )
