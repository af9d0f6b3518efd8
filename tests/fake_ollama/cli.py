"""The `ollama` command line: `serve` plus HTTP-client subcommands formatted like the real CLI."""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from . import VERSION
from .envconfig import host_from_env
from .gotime import human_bytes, human_time, parse_rfc3339

CONNECT_ERROR = "could not connect to ollama server, run 'ollama serve' to start it"

USAGE = """Large language model runner

Usage:
  ollama [flags]
  ollama [command]

Available Commands:
  serve       Start ollama
  show        Show information for a model
  run         Run a model
  stop        Stop a running model
  pull        Pull a model from a registry
  list        List models
  ps          List running models
  cp          Copy a model
  rm          Remove a model
  help        Help about any command

Flags:
  -h, --help      help for ollama
  -v, --version   Show version information
"""


class CLIError(Exception):
    """Printed as `Error: <msg>` with exit status 1."""


class StatusError(CLIError):
    """An HTTP error answer from the server."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """A tiny api.Client over urllib (no timeout, like the Go client)."""

    def __init__(self) -> None:
        self.base = host_from_env().base_url

    def _open(self, method: str, path: str, body: Any = None) -> http.client.HTTPResponse:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/x-ndjson")
        try:
            resp: http.client.HTTPResponse = urllib.request.urlopen(req)
            return resp
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                msg = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                msg = text
            raise StatusError(e.code, str(msg).strip() or e.reason) from None
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            raise CLIError(CONNECT_ERROR) from e

    def heartbeat(self) -> None:
        """HEAD / ; connection failure -> the real CLI's message."""
        self._open("HEAD", "/").read()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON answer (None for an empty body)."""
        with self._open(method, path, body) as r:
            raw = r.read()
        return json.loads(raw) if raw.strip() else None

    def stream(self, method: str, path: str, body: Any) -> Iterator[dict[str, Any]]:
        """NDJSON lines; an `error` line raises."""
        with self._open(method, path, body) as r:
            for line in r:
                if not line.strip():
                    continue
                obj = json.loads(line)
                if obj.get("error"):
                    raise CLIError(str(obj["error"]))
                yield obj


# The real CLI's spinner, which `ollama stop` draws and clears on stderr even off a TTY
# (byte for byte what the kit's v0.33 wrote to a pipe).
STOP_SPINNER = (
    "\x1b[?25l\x1b[?2026h\x1b[?25l\x1b[1G\x1b[K\x1b[?25h\x1b[?2026l\x1b[2K\x1b[1G\x1b[?25h"
)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """tablewriter with no borders and 4-space padding, left aligned.

    As the kit's real v0.33 CLI prints it: every cell padded to its column's width and
    followed by 4 spaces, except the header's last cell, which is followed by one.
    """
    cols = [header, *rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    lines = []
    for n, r in enumerate(cols):
        cells = [c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("    ".join(cells) + (" " if n == 0 else "    "))
    return "\n".join(lines) + "\n"


def _processor(size: int, size_vram: int) -> str:
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def cmd_ps(c: Client, args: list[str]) -> int:
    """`ollama ps [prefix]`."""
    c.heartbeat()
    data = c.json("GET", "/api/ps")
    now = time.time_ns()
    rows = []
    for m in data.get("models") or []:
        name = str(m.get("name", ""))
        if args and not name.startswith(args[0]):
            continue
        exp = m.get("expires_at")
        exp_ns = parse_rfc3339(exp) if exp else None
        if exp_ns is not None and now - exp_ns > 0:
            until = "Stopping..."
        else:
            until = human_time(exp_ns, now, "Never")
        rows.append(
            [
                name,
                str(m.get("digest", ""))[:12],
                human_bytes(int(m.get("size", 0))),
                _processor(int(m.get("size", 0)), int(m.get("size_vram", 0))),
                str(m.get("context_length", "")),
                until,
            ]
        )
    sys.stdout.write(_table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], rows))
    return 0


def cmd_list(c: Client, args: list[str]) -> int:
    """`ollama list`."""
    c.heartbeat()
    data = c.json("GET", "/api/tags")
    now = time.time_ns()
    rows = []
    for m in data.get("models") or []:
        name = str(m.get("name", ""))
        if args and not name.lower().startswith(args[0].lower()):
            continue
        mod = m.get("modified_at")
        rows.append(
            [
                name,
                str(m.get("digest", ""))[:12],
                human_bytes(int(m.get("size", 0))),
                human_time(parse_rfc3339(mod) if mod else None, now, "Never"),
            ]
        )
    sys.stdout.write(_table(["NAME", "ID", "SIZE", "MODIFIED"], rows))
    return 0


def _pull(c: Client, model: str) -> None:
    last = ""
    for p in c.stream("POST", "/api/pull", {"model": model}):
        status = str(p.get("status", ""))
        if status.startswith("pulling ") and p.get("total"):
            total = int(p["total"])
            done = int(p.get("completed", 0))
            line = f"{status}: {done * 100 // total:3d}% ▕ ▏ {human_bytes(total)}"
        else:
            line = status
        if line != last:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
            last = line


def cmd_pull(c: Client, args: list[str]) -> int:
    """`ollama pull MODEL`."""
    if len(args) != 1:
        raise CLIError(f"accepts 1 arg(s), received {len(args)}")
    c.heartbeat()
    _pull(c, args[0])
    return 0


def cmd_run(c: Client, args: list[str]) -> int:
    """`ollama run MODEL [PROMPT...]` (no interactive mode)."""
    if not args:
        raise CLIError("requires at least 1 arg(s), only received 0")
    c.heartbeat()
    model = args[0]
    try:
        c.json("POST", "/api/show", {"model": model})
    except StatusError as e:
        if e.status != 404:
            raise
        _pull(c, model)
    prompt = " ".join(args[1:])
    if not prompt:
        c.json("POST", "/api/generate", {"model": model})
        return 0
    for part in c.stream("POST", "/api/generate", {"model": model, "prompt": prompt}):
        sys.stdout.write(str(part.get("response", "")))
        sys.stdout.flush()
    sys.stdout.write("\n\n")
    return 0


def cmd_stop(c: Client, args: list[str]) -> int:
    """`ollama stop MODEL`."""
    if len(args) != 1:
        raise CLIError(f"accepts 1 arg(s), received {len(args)}")
    c.heartbeat()
    try:
        c.json("POST", "/api/generate", {"model": args[0], "keep_alive": 0})
    except StatusError as e:
        sys.stderr.write(STOP_SPINNER)
        if e.status == 404:
            raise CLIError(f'couldn\'t find model "{args[0]}" to stop') from None
        raise
    sys.stderr.write(STOP_SPINNER)
    return 0


def cmd_rm(c: Client, args: list[str]) -> int:
    """`ollama rm MODEL...`."""
    if not args:
        raise CLIError("requires at least 1 arg(s), only received 0")
    c.heartbeat()
    for m in args:
        try:
            c.json("POST", "/api/generate", {"model": m, "keep_alive": 0})
        except StatusError as e:
            if "not found" not in str(e).lower():
                sys.stderr.write(f"Warning: unable to stop model '{m}'\n")
        c.json("DELETE", "/api/delete", {"model": m})
        sys.stdout.write(f"deleted '{m}'\n")
    return 0


def cmd_cp(c: Client, args: list[str]) -> int:
    """`ollama cp SRC DST`."""
    if len(args) != 2:
        raise CLIError(f"accepts 2 arg(s), received {len(args)}")
    c.heartbeat()
    c.json("POST", "/api/copy", {"source": args[0], "destination": args[1]})
    sys.stdout.write(f"copied '{args[0]}' to '{args[1]}'\n")
    return 0


def cmd_show(c: Client, args: list[str]) -> int:
    """`ollama show MODEL` (prints the JSON answer; the real CLI prints a table)."""
    if len(args) != 1:
        raise CLIError(f"accepts 1 arg(s), received {len(args)}")
    c.heartbeat()
    sys.stdout.write(json.dumps(c.json("POST", "/api/show", {"model": args[0]}), indent=2) + "\n")
    return 0


def cmd_version(c: Client) -> int:
    """`ollama --version`."""
    try:
        v = c.json("GET", "/api/version").get("version", "")
    except CLIError:
        sys.stdout.write("Warning: could not connect to a running Ollama instance\n")
        sys.stdout.write(f"Warning: client version is {VERSION}\n")
        return 0
    sys.stdout.write(f"ollama version is {v}\n")
    if v != VERSION:
        sys.stdout.write(f"Warning: client version is {VERSION}\n")
    return 0


COMMANDS = {
    "ps": cmd_ps,
    "list": cmd_list,
    "ls": cmd_list,
    "pull": cmd_pull,
    "run": cmd_run,
    "stop": cmd_stop,
    "rm": cmd_rm,
    "cp": cmd_cp,
    "show": cmd_show,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of tests/fake_bin/ollama."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    if args[0] in ("-v", "--version"):
        return cmd_version(Client())
    cmd, rest = args[0], args[1:]
    if cmd == "serve":
        from .server import serve

        return serve(rest)
    fn = COMMANDS.get(cmd)
    try:
        if fn is None:
            raise CLIError(f'unknown command "{cmd}" for "ollama"')
        return fn(Client(), rest)
    except CLIError as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
