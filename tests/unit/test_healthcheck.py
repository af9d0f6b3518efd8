"""The `health` client side: port and host parsing, `.env` lookup, the light import path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ollama_preloader.config.settings import load_settings
from ollama_preloader.errors import ConfigError
from ollama_preloader.observe.healthcheck import (
    HealthConfigError,
    connect_host,
    parse_health_port,
    resolve_address,
    run_health,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("PRELOADER_", "OLLAMA_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("value", "port"),
    [("11435", 11435), (" 8080 ", 8080), ('"9000"', 9000), ("off", None), ("OFF", None)],
)
def test_parse_health_port(value: str, port: int | None) -> None:
    """A TCP port, quotes and spaces trimmed as Ollama trims its variables; `off` is None."""
    assert parse_health_port(value) == port


@pytest.mark.parametrize("value", ["0", "65536", "-1", "http", "", "11435.0"])
def test_parse_health_port_refuses(value: str) -> None:
    """Anything else is refused with the accepted forms."""
    with pytest.raises(ValueError, match="must be a TCP port"):
        parse_health_port(value)


def test_settings_share_the_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings reads the same variable the same way, and names it in its one-line error."""
    assert load_settings(None).health_port == 11435
    assert load_settings(None).health_host == "0.0.0.0"
    monkeypatch.setenv("PRELOADER_HEALTH_PORT", "off")
    assert load_settings(None).health_port is None
    monkeypatch.setenv("PRELOADER_HEALTH_PORT", "99999")
    with pytest.raises(ConfigError, match=r"^PRELOADER_HEALTH_PORT='99999': must be a TCP port"):
        load_settings(None)


@pytest.mark.parametrize(
    ("bind", "connect"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("", "127.0.0.1"),
        ("::", "::1"),
        ("[::]", "::1"),
        ("10.1.2.3", "10.1.2.3"),
    ],
)
def test_connect_host(bind: str, connect: str) -> None:
    """A wildcard bind address is reached over loopback, a specific one directly."""
    assert connect_host(bind) == connect


def test_address_from_environment_then_dotenv(tmp_path: Path) -> None:
    """Real variables win over `.env`, as in settings.py; the default is 127.0.0.1:11435."""
    assert str(resolve_address(environ={})) == "127.0.0.1:11435"
    env_file = tmp_path / "x.env"
    env_file.write_text("PRELOADER_HEALTH_PORT=12000\nPRELOADER_HEALTH_HOST=::\n")
    assert str(resolve_address(env_file, environ={})) == "[::1]:12000"
    environ = {"PRELOADER_HEALTH_PORT": "13000", "PRELOADER_ENV_FILE": str(env_file)}
    assert str(resolve_address(environ=environ)) == "[::1]:13000"
    (tmp_path / ".env").write_text("PRELOADER_HEALTH_PORT=14000\n")
    assert str(resolve_address(environ={})) == "127.0.0.1:14000"


def test_address_errors_name_the_variable() -> None:
    """Off, or not a port: HealthConfigError naming PRELOADER_HEALTH_PORT."""
    with pytest.raises(HealthConfigError, match=r"PRELOADER_HEALTH_PORT=off: .* turned off"):
        resolve_address(environ={"PRELOADER_HEALTH_PORT": "off"})
    with pytest.raises(HealthConfigError, match="PRELOADER_HEALTH_PORT='x'"):
        resolve_address(environ={"PRELOADER_HEALTH_PORT": "x"})


def test_run_health_usage_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints the usage (exit 0); an unknown argument is a usage error (exit 2)."""
    assert run_health(["--help"]) == 0
    assert "ollama-preloader health [--live]" in capsys.readouterr().out
    assert run_health(["--ready"]) == 2
    assert "unknown argument '--ready'" in capsys.readouterr().err


def test_health_path_imports_no_third_party_module(tmp_path: Path) -> None:
    """`ollama-preloader health` loads only the standard library (Docker runs it every 10 s)."""
    code = (
        "import sys\n"
        "sys.argv = ['ollama-preloader', 'health']\n"
        "from ollama_preloader import entry\n"
        "try:\n"
        "    entry.main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 1, exc.code\n"
        "heavy = {'typer', 'click', 'pydantic', 'pydantic_settings', 'httpx', 'structlog',\n"
        "         'ollama', 'rich', 'prometheus_client', 'tenacity', 'dotenv'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PRELOADER_HEALTH_PORT": "1",  # nothing listens there: `supervisor not running`
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert "supervisor not running (no answer on 127.0.0.1:1)" in result.stderr
