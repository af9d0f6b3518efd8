"""Small readers for deploy/systemd: the unit's directives and the EnvironmentFile's variables."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from shipping.checkers import REPO

SYSTEMD = REPO / "deploy" / "systemd"
UNIT = SYSTEMD / "ollama-preloader.service"
ENV_EXAMPLE = SYSTEMD / "ollama-preloader.env"
# Where systemd looks up a bare ExecStart name, and the PATH its services get (systemd >= 239).
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
SHOWN = re.compile(r"^# [A-Z][A-Z0-9_]*=")  # a commented-out setting, as in .env.example


def directives(path: Path = UNIT) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (a key may repeat), continuation lines joined."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a directive: {line!r}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def one(section: str, key: str) -> str:
    """The single value of a directive that must appear exactly once."""
    values = directives()[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}= appears {len(values)} times"
    return values[0]


def exec_start() -> list[str]:
    """ExecStart's argv (no `-`, `@`, `+` or `!` prefixes are used)."""
    argv = shlex.split(one("Service", "ExecStart"))
    assert argv[0].startswith("/"), "ExecStart names the command by its absolute path"
    return argv


def environment_file(path: Path = ENV_EXAMPLE) -> tuple[dict[str, str], dict[str, str]]:
    """(set, shown): `NAME=value` lines as systemd reads them, and commented `# NAME=value`.

    The subset of systemd's EnvironmentFile syntax the example uses: comment lines, one
    assignment per line, a value optionally in double quotes.
    """
    assigned: dict[str, str] = {}
    shown: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        target = assigned
        if SHOWN.match(line):
            line, target = line[2:], shown
        elif not line or line.startswith(("#", ";")):
            continue
        name, sep, value = line.partition("=")
        assert sep, raw
        assert name.isidentifier(), f"one NAME=value per line, no `export`: {raw!r}"
        assert not value.endswith("\\"), "no continuation lines"
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        target[name] = value
    return assigned, shown
