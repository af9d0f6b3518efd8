"""PRELOADER_PROBE_INTERVAL and PRELOADER_PROBE_TIMEOUT: durations, `off`, and their order."""

import os
from pathlib import Path

import pytest

from ollama_preloader.config.settings import load_settings
from ollama_preloader.config.values import PROBE_INTERVAL, PROBE_TIMEOUT
from ollama_preloader.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("PRELOADER_", "OLLAMA_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_probe_every_interval() -> None:
    s = load_settings(None)
    assert (s.probe_interval, s.probe_timeout) == (PROBE_INTERVAL, PROBE_TIMEOUT)
    assert s.probe_timeout < PROBE_INTERVAL


@pytest.mark.parametrize(
    ("interval", "timeout", "expected"),
    [("1m", "5s", (60.0, 5.0)), ("2s", "500ms", (2.0, 0.5)), ("OFF", "90s", (None, 90.0))],
)
def test_durations_and_off(
    monkeypatch: pytest.MonkeyPatch, interval: str, timeout: str, expected: tuple[object, ...]
) -> None:
    """Go durations; `off` (any case) disables the probe, and then any timeout is fine."""
    monkeypatch.setenv("PRELOADER_PROBE_INTERVAL", interval)
    monkeypatch.setenv("PRELOADER_PROBE_TIMEOUT", timeout)
    s = load_settings(None)
    assert (s.probe_interval, s.probe_timeout) == expected


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"PRELOADER_PROBE_INTERVAL": "often"}, "PRELOADER_PROBE_INTERVAL='often'"),
        ({"PRELOADER_PROBE_INTERVAL": "0"}, "PRELOADER_PROBE_INTERVAL"),
        ({"PRELOADER_PROBE_INTERVAL": "-5s"}, "PRELOADER_PROBE_INTERVAL"),
        ({"PRELOADER_PROBE_TIMEOUT": "5x"}, "PRELOADER_PROBE_TIMEOUT='5x'"),
        ({"PRELOADER_PROBE_TIMEOUT": "0s"}, "PRELOADER_PROBE_TIMEOUT"),
        (
            {"PRELOADER_PROBE_INTERVAL": "10s", "PRELOADER_PROBE_TIMEOUT": "10s"},
            "PRELOADER_PROBE_TIMEOUT (10s) must be shorter than PRELOADER_PROBE_INTERVAL (10s)",
        ),
        (
            {"PRELOADER_PROBE_INTERVAL": "5s"},
            f"PRELOADER_PROBE_TIMEOUT ({PROBE_TIMEOUT:g}s) must be shorter",
        ),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
