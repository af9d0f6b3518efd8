"""Settings come from the environment and `.env`; bad values give one line naming the variable."""

from pathlib import Path

import pytest

from ollama_preloader.config.settings import load_settings, server_environment
from ollama_preloader.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OLLAMA_PRELOAD_MODELS", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    import os

    for name in list(os.environ):
        if name.startswith("PRELOADER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    """With nothing set: no models, local Ollama, documented defaults."""
    s = load_settings(None)
    assert s.models == ()
    assert s.ollama_host.base_url == "http://127.0.0.1:11434"
    assert s.pull_policy == "if-missing"
    assert s.on_server_exit == "restart"
    assert s.watch_interval == 1.0


def test_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Durations accept seconds or Go forms; choices are case-insensitive."""
    monkeypatch.setenv("OLLAMA_PRELOAD_MODELS", "devstral,nomic-embed-text")
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:11500")
    monkeypatch.setenv("PRELOADER_WATCH_INTERVAL", "2s")
    monkeypatch.setenv("PRELOADER_SHUTDOWN_GRACE", "45")
    monkeypatch.setenv("PRELOADER_PULL_POLICY", "Never")
    s = load_settings(None)
    assert [m.display for m in s.models] == ["devstral:latest", "nomic-embed-text:latest"]
    assert s.ollama_host.base_url == "http://127.0.0.1:11500"
    assert (s.watch_interval, s.shutdown_grace, s.pull_policy) == (2.0, 45.0, "never")


def test_dotenv_file(tmp_path: Path) -> None:
    """`.env` is read; OLLAMA_* from it reach the child unless the real environment has them."""
    env_file = tmp_path / ".env"
    env_file.write_text("OLLAMA_PRELOAD_MODELS=llama3.2\nOLLAMA_MAX_LOADED_MODELS=6\n")
    s = load_settings(env_file)
    assert [m.display for m in s.models] == ["llama3.2:latest"]
    child = server_environment({"OLLAMA_MAX_LOADED_MODELS": "2", "PATH": "/bin"}, env_file)
    assert child["OLLAMA_MAX_LOADED_MODELS"] == "2"
    assert child["OLLAMA_PRELOAD_MODELS"] == "llama3.2"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("PRELOADER_WATCH_INTERVAL", "soon", "PRELOADER_WATCH_INTERVAL='soon'"),
        ("PRELOADER_WATCH_INTERVAL", "0", "greater than 0"),
        ("PRELOADER_PULL_POLICY", "sometimes", "PRELOADER_PULL_POLICY='sometimes'"),
        ("PRELOADER_ON_SERVER_EXIT", "panic", "PRELOADER_ON_SERVER_EXIT"),
        ("PRELOADER_PULL_ATTEMPTS", "0", "PRELOADER_PULL_ATTEMPTS"),
        ("PRELOADER_LOG_FORMAT", "xml", "PRELOADER_LOG_FORMAT"),
        ("OLLAMA_HOST", "localhost:70000", "OLLAMA_HOST='localhost:70000': invalid port"),
        ("OLLAMA_PRELOAD_MODELS", "llama3.2?bogus=1", "unknown parameter 'bogus'"),
    ],
)
def test_bad_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str) -> None:
    """ConfigError carries one line that names the variable."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
