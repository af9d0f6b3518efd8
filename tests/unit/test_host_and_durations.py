"""OLLAMA_HOST and Go durations parse exactly as Ollama parses them."""

import os
import subprocess
import sys

import pytest

from ollama_preloader.config.durations import (
    format_seconds,
    parse_go_duration,
    parse_seconds_or_duration,
)
from ollama_preloader.ollama.host import InvalidHost, parse_ollama_host


@pytest.mark.parametrize(
    ("raw", "listen", "base_url"),
    [
        (None, "127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("", "127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("0.0.0.0", "0.0.0.0:11434", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("::1", "[::1]:11434", "http://[::1]:11434"),
        ("[::]:11434", "[::]:11434", "http://[::1]:11434"),
        (":11434", ":11434", "http://127.0.0.1:11434"),
        ("http://myhost", "myhost:80", "http://myhost:80"),
        ("https://myhost", "myhost:443", "https://myhost:443"),
        ("myhost:9999/ollama", "myhost:9999", "http://myhost:9999/ollama"),
        ('"127.0.0.1:1234"', "127.0.0.1:1234", "http://127.0.0.1:1234"),
        ("ollama.com", "ollama.com:443", "https://ollama.com:443"),
    ],
)
def test_ollama_host(raw: str | None, listen: str, base_url: str) -> None:
    """Scheme and port defaults follow envconfig.Host; unspecified binds connect over loopback."""
    host = parse_ollama_host(raw)
    assert host.listen == listen
    assert host.base_url == base_url


@pytest.mark.parametrize("raw", ["localhost:99999", "localhost:abc", "[::1]:-1"])
def test_bad_port_is_refused(raw: str) -> None:
    """A port Ollama would silently replace is an error here, naming the port."""
    with pytest.raises(InvalidHost, match="invalid port"):
        parse_ollama_host(raw)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("1.5s", 1.5), ("-1s", -1), ("0", 0), ("300ms", 0.3)],
)
def test_go_durations(text: str, seconds: float) -> None:
    """time.ParseDuration forms give seconds."""
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "message"), [("300", "missing unit"), ("1d", "unknown unit")])
def test_go_duration_errors_use_gos_wording(text: str, message: str) -> None:
    """The strings Ollama rejects with 400 are rejected with the same reason."""
    with pytest.raises(ValueError, match=message):
        parse_go_duration(text)


def test_seconds_fallback() -> None:
    """Plain numbers are seconds, as in OLLAMA_KEEP_ALIVE; garbage is still an error."""
    assert parse_seconds_or_duration("-1") == -1
    assert parse_seconds_or_duration("3600") == 3600
    with pytest.raises(ValueError, match="unknown unit"):
        parse_seconds_or_duration("1d")


def test_format_seconds() -> None:
    """Human durations for log lines."""
    assert format_seconds(-1) == "forever"
    assert format_seconds(5400) == "1h30m"
    assert format_seconds(30) == "30s"


@pytest.mark.parametrize("raw", ["127.0.0.1:0", "127.0.0.1:00", ":0"])
def test_port_zero_is_refused(raw: str) -> None:
    # Port 0 makes Ollama listen on a random port the supervisor can never find.
    with pytest.raises(InvalidHost):
        parse_ollama_host(raw)


@pytest.mark.parametrize("raw", ['"127.0.0.1:12040"', "127.0.0.1:12040 "])
def test_quoted_or_padded_host_does_not_crash_the_import(raw: str) -> None:
    # The ollama package reads OLLAMA_HOST when imported; a quoted value used to raise there.
    env = {**os.environ, "OLLAMA_HOST": raw}
    code = "import ollama_preloader.ollama.api, os; print(os.environ['OLLAMA_HOST'])"
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == raw.strip()
