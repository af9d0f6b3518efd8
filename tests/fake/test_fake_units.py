"""Pure helpers of the fake: Go durations, keep_alive decoding, OLLAMA_HOST, names, formats."""

from __future__ import annotations

import pytest
from fake_ollama import gotime
from fake_ollama.envconfig import parse_host
from fake_ollama.gotime import MAX_INT64, MIN_INT64, MINUTE, SECOND, DurationError
from fake_ollama.names import parse_name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (300, 300 * SECOND),
        (1.5, 1_500_000_000),
        (0, 0),
        (-1, MAX_INT64),
        (-1.0, MAX_INT64),
        (-42, MAX_INT64),
        ("5m", 5 * MINUTE),
        ("24h", 24 * 60 * MINUTE),
        ("1h30m", 90 * MINUTE),
        ("0", 0),
        ("-1m", MAX_INT64),
        ("-1s", MAX_INT64),
        (None, None),
        (1e10, MIN_INT64),
    ],
)
def test_keep_alive_json_values(value: object, expected: int | None) -> None:
    """keep_alive JSON forms decode as api.Duration does (§2.1)."""
    assert gotime.decode_keep_alive(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", 'time: missing unit in duration "-1"'),
        ("300", 'time: missing unit in duration "300"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        (True, "Unsupported type: 'bool'"),
        ("", 'time: invalid duration ""'),
        ("forever", 'time: invalid duration "forever"'),
        ({"a": 1}, "Unsupported type: 'map[string]interface {}'"),
    ],
)
def test_keep_alive_json_errors(value: object, message: str) -> None:
    """Bad keep_alive values give Go's exact error text (§2.1)."""
    with pytest.raises(DurationError) as e:
        gotime.decode_keep_alive(value)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", 5 * MINUTE),
        ("10m", 10 * MINUTE),
        ("-1", MAX_INT64),
        ("300", 300 * SECOND),
        ("1d", 5 * MINUTE),
        ("0", 0),
        ("24h", 24 * 60 * MINUTE),
    ],
)
def test_env_keep_alive(raw: str, expected: int) -> None:
    """OLLAMA_KEEP_ALIVE: duration, else integer seconds, else silently 5m (§1.3)."""
    assert gotime.env_keep_alive(raw) == expected


def test_env_load_timeout() -> None:
    """OLLAMA_LOAD_TIMEOUT: zero or negative means no timeout."""
    assert gotime.env_load_timeout("") == 5 * MINUTE
    assert gotime.env_load_timeout("0") is None
    assert gotime.env_load_timeout("-1") is None
    assert gotime.env_load_timeout("30") == 30 * SECOND


@pytest.mark.parametrize(
    ("raw", "host", "port"),
    [
        ("", "127.0.0.1", 11434),
        ("0.0.0.0", "0.0.0.0", 11434),
        ("0.0.0.0:8080", "0.0.0.0", 8080),
        ("::1", "::1", 11434),
        (":11434", "", 11434),
        ("http://myhost", "myhost", 80),
        ("https://myhost", "myhost", 443),
        ("127.0.0.1:99999", "127.0.0.1", 11434),
        ("[::1]:9000", "::1", 9000),
        ("localhost:1234/prefix", "localhost", 1234),
        ("ollama.com", "ollama.com", 443),
    ],
)
def test_ollama_host(raw: str, host: str, port: int) -> None:
    """OLLAMA_HOST parsing follows envconfig.Host (§1.4)."""
    h = parse_host(raw)
    assert (h.host, h.port) == (host, port)


def test_ollama_host_bad_port_warns() -> None:
    """An out-of-range port falls back to the default and is reported."""
    assert parse_host("127.0.0.1:99999").port_warning == "99999"


@pytest.mark.parametrize(
    "spelling",
    [
        "llama3.2",
        "llama3.2:latest",
        "library/llama3.2",
        "registry.ollama.ai/library/llama3.2:latest",
        "https://registry.ollama.ai/library/llama3.2",
    ],
)
def test_name_spellings_are_one_model(spelling: str) -> None:
    """All documented spellings normalise to llama3.2:latest (§5.3)."""
    assert parse_name(spelling).display_shortest() == "llama3.2:latest"


def test_display_shortest_other_namespaces() -> None:
    """Other namespaces and hosts stay in the display name."""
    assert parse_name("someone/model").display_shortest() == "someone/model:latest"
    assert parse_name("hf.co/org/model:Q4").display_shortest() == "hf.co/org/model:Q4"


@pytest.mark.parametrize("bad", ["", "bad name", "model@sha256:abc", "-lead", "x:", "a/b/c/d/e:"])
def test_invalid_names(bad: str) -> None:
    """Invalid names are rejected."""
    assert not parse_name(bad).is_valid()


def test_human_bytes() -> None:
    """format.HumanBytes uses decimal units with one decimal below 10."""
    assert gotime.human_bytes(4_700_000_000) == "4.7 GB"
    assert gotime.human_bytes(18_556_000_000) == "18 GB"
    assert gotime.human_bytes(2_000_000_000) == "2 GB"
    assert gotime.human_bytes(999) == "999 B"
    assert gotime.human_bytes(274_302_450) == "274 MB"


def test_human_time() -> None:
    """UNTIL strings: Forever beyond 20 years, 'N minutes from now', 'ago'."""
    now = 1_800_000_000 * SECOND
    assert gotime.human_time(now + MAX_INT64, now, "Never") == "Forever"
    assert gotime.human_time(now + 4 * MINUTE + 59 * SECOND, now, "Never") == "4 minutes from now"
    assert gotime.human_time(now - 90 * SECOND, now, "Never") == "About a minute ago"
    assert gotime.human_time(None, now, "Never") == "Never"


def test_rfc3339nano_trims_fraction() -> None:
    """RFC3339Nano trims trailing zeros of the fraction and uses Z for UTC."""
    assert gotime.rfc3339nano(1_500_000_000, utc=True) == "1970-01-01T00:00:01.5Z"
    assert gotime.rfc3339nano(2 * SECOND, utc=True) == "1970-01-01T00:00:02Z"


def test_pinned_expiry_is_year_2319() -> None:
    """now + MaxInt64 ns is about 292 years ahead (§2.4)."""
    start = 1_795_312_800 * SECOND  # 2026-11-22
    assert gotime.rfc3339nano(start + MAX_INT64, utc=True).startswith("2319-03-")


def test_duration_string() -> None:
    """Go's Duration.String."""
    assert gotime.duration_string(5 * MINUTE) == "5m0s"
    assert gotime.duration_string(1_500_000) == "1.5ms"
    assert gotime.duration_string(90 * MINUTE + 1) == "1h30m0.000000001s"
