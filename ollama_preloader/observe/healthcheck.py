"""Asking the running supervisor over its health port: the `health` command and the client
that `status` uses. Standard library only.

Docker's HEALTHCHECK and Kubernetes exec probes run `ollama-preloader health` every few
seconds, so this module must not import typer, pydantic, httpx, structlog or ollama. For that
reason it reads its three variables (PRELOADER_HEALTH_PORT, PRELOADER_HEALTH_HOST,
PRELOADER_ENV_FILE) itself, with the same meaning and precedence as settings.py (real
environment first, then the `.env` file), and decides the `health` exit codes itself (the same
numbers as errors.py's table). Everything else reads its configuration through Settings.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from ollama_preloader.errors import EXIT_CONFIG, EXIT_INTERNAL, EXIT_OK

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# No dataclasses or pathlib either: each would add about a tenth of this command's start-up.

DEFAULT_PORT = 11435
DEFAULT_HOST = "0.0.0.0"
PORT_VAR = "PRELOADER_HEALTH_PORT"
HOST_VAR = "PRELOADER_HEALTH_HOST"
ENV_FILE_VAR = "PRELOADER_ENV_FILE"
TIMEOUT = 3.0  # under Docker's and compose's 5s healthcheck timeout
EXIT_UNHEALTHY = EXIT_INTERNAL  # 1: not ready / not live / no answer, as Docker expects

USAGE = """\
Usage: ollama-preloader health [--live] [--env-file PATH]

  Exit 0 when every declared model is loaded and pinned, 1 otherwise, with a one-line reason.
  For Docker's HEALTHCHECK and Kubernetes exec probes (needs no curl).

Options:
  --live           Exit 0 when the supervisor and `ollama serve` are up, whatever the
                   models are doing (a liveness check).
  --env-file PATH  Read variables from this file too (real ones win) [default: .env]
                   [env var: PRELOADER_ENV_FILE]
  -h, --help       Show this message and exit.
"""


class HealthConfigError(ValueError):
    """PRELOADER_HEALTH_PORT or PRELOADER_HEALTH_HOST cannot be used; the text says why."""


class Unreachable(OSError):
    """Nothing answered on the health port."""


def parse_health_port(value: str) -> int | None:
    """`off` (None) or a TCP port 1..65535. ValueError with the reason otherwise."""
    text = value.strip().strip("\"'").strip()
    if text.lower() in ("off", "false", "no", "none", "disabled"):
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("must be a TCP port (1-65535), or off to turn the health endpoints off")
    return int(text)


def connect_host(bind_host: str) -> str:
    """Where a client in the same container reaches a server bound to `bind_host`: loopback
    for the wildcard addresses, as `ollama` does for OLLAMA_HOST=0.0.0.0."""
    host = bind_host.strip().strip("[]")
    if host in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


class Address:
    """Where the supervisor's health endpoints answer."""

    __slots__ = ("host", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class EnvFileError(ValueError):
    """A `.env` file that exists but cannot be read as text: the message names it."""


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The variables of a `.env` file ({} when there is none). Here, at the bottom, because
    `health` needs it before anything else; settings.py reads the file through it too."""
    if not os.path.isfile(path):
        return {}
    name = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise EnvFileError(
            f"{name}: cannot be read ({exc.strerror or exc}); make it readable by this user, "
            "or name another file with --env-file (PRELOADER_ENV_FILE)"
        ) from None
    try:
        # utf-8-sig: an editor's byte-order mark is not part of the first variable's name.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # python-dotenv would end the command in a traceback (at start, or on SIGHUP).
        line = data.count(b"\n", 0, exc.start) + 1
        raise EnvFileError(
            f"{name}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the "
            "file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    # Only when there is a file: python-dotenv is small, but the common case needs none of it.
    import io

    from dotenv import dotenv_values

    values = dotenv_values(stream=io.StringIO(text))
    return {k: v for k, v in values.items() if v is not None}


def resolve_address(
    env_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Address:
    """The supervisor's health address, from the environment and then the `.env` file."""
    env = os.environ if environ is None else environ
    path = env_file or env.get(ENV_FILE_VAR) or ".env"
    values: Mapping[str, str] = env
    if PORT_VAR not in env or HOST_VAR not in env:
        try:
            values = {**read_env_file(path), **env}
        except EnvFileError as exc:
            raise HealthConfigError(str(exc)) from None
    raw_port = values.get(PORT_VAR)
    port: int | None = DEFAULT_PORT
    if raw_port is not None:
        try:
            port = parse_health_port(raw_port)
        except ValueError as exc:
            raise HealthConfigError(f"{PORT_VAR}={raw_port!r}: {exc}") from None
    if port is None:
        raise HealthConfigError(
            f"{PORT_VAR}=off: the supervisor's health endpoints are turned off, so there is "
            f"nothing to ask; unset {PORT_VAR} (default {DEFAULT_PORT}) or set a port"
        )
    return Address(connect_host(values.get(HOST_VAR, DEFAULT_HOST)), port)


def fetch(address: Address, path: str, timeout: float = TIMEOUT) -> tuple[int, dict[str, Any]]:
    """GET `path`; (HTTP status, JSON body). Unreachable when nothing answers."""
    # Here, not at the top: `run` reads the settings through this module before it spawns
    # `ollama serve`, and http.client (with the email parser it loads) is ~12 ms of that.
    import http.client

    conn = http.client.HTTPConnection(address.host, address.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"supervisor not running (no answer on {address})") from exc
    finally:
        conn.close()
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise Unreachable(
            f"unexpected answer from {address}{path} (HTTP {response.status}); is {PORT_VAR} "
            "the supervisor's health port?"
        )
    return response.status, data


def _parse_args(args: Sequence[str]) -> tuple[bool, str | None]:
    live, env_file = False, None
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--live":
            live = True
        elif arg == "--env-file" and rest:
            env_file = rest.pop(0)
        elif arg.startswith("--env-file="):
            env_file = arg.split("=", 1)[1]
        else:
            raise HealthConfigError(
                f"unknown argument {arg!r}; see `ollama-preloader health --help`"
            )
    return live, env_file


def run_health(args: Sequence[str]) -> int:
    """`ollama-preloader health [--live]`: print one line, return the exit code."""
    if "-h" in args or "--help" in args:
        print(USAGE, end="")
        return EXIT_OK
    try:
        live, env_file = _parse_args(args)
        address = resolve_address(env_file)
    except HealthConfigError as exc:
        print(f"ollama-preloader: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        status, body = fetch(address, "/livez" if live else "/readyz")
    except Unreachable as exc:
        print(f"ollama-preloader: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY
    word = "live" if live else "ready"
    if status == 200:
        print(f"{word}: {body.get('message', 'ok')}")
        return EXIT_OK
    print(f"not {word}: {body.get('reason', f'HTTP {status}')}")
    return EXIT_UNHEALTHY
