"""Settings come from the environment and `.env`; bad values give one line naming the variable."""

from pathlib import Path

import pytest

from ollama_preloader.config.environ import server_environment
from ollama_preloader.config.settings import load_settings
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
        # Not a variable, but pydantic-settings reads it, as JSON: an error, not a traceback.
        ("PRELOADER_PARSE_WARNINGS", "x", "PRELOADER_PARSE_WARNINGS: error parsing value"),
    ],
)
def test_bad_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str) -> None:
    """ConfigError carries one line that names the variable."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


# ----- PRELOADER_MODELS_FILE, PRELOADER_ON_REMOVE, OLLAMA_KEEP_ALIVE ------------------------


def test_models_come_from_the_models_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PRELOADER_MODELS_FILE (a relative path is from the working directory) is the list."""
    (tmp_path / "models.txt").write_text("# chat\ndevstral?num_ctx=8192\nllama3.2\ndevstral\n")
    monkeypatch.setenv("PRELOADER_MODELS_FILE", "models.txt")
    s = load_settings(None)
    assert [(m.display, m.priority) for m in s.models] == [
        ("devstral:latest", 0),
        ("llama3.2:latest", 1),
    ]
    assert s.models_file == Path("models.txt")
    assert s.models_source == "models-file"
    (warning,) = s.parse_warnings  # the duplicate on line 4, named by its line
    assert "models.txt, line 4" in warning


def test_models_file_from_dotenv(tmp_path: Path) -> None:
    """The variable can be set in `.env` too, like every knob."""
    (tmp_path / "models.txt").write_text("llama3.2\n")
    env_file = tmp_path / ".env"
    env_file.write_text(f"PRELOADER_MODELS_FILE={tmp_path / 'models.txt'}\n")
    assert [m.display for m in load_settings(env_file).models] == ["llama3.2:latest"]


def test_empty_models_file_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """PRELOADER_MODELS_FILE= (empty) means no file, as `.env.example` shows it."""
    monkeypatch.setenv("PRELOADER_MODELS_FILE", "  ")
    monkeypatch.setenv("OLLAMA_PRELOAD_MODELS", "llama3.2")
    s = load_settings(None)
    assert s.models_file is None
    assert [m.display for m in s.models] == ["llama3.2:latest"]
    assert s.models_source == "environment"


@pytest.mark.parametrize("where", ["environment", "dotenv"])
def test_models_file_and_variable_together_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    """Both set: exit 2 naming both, and where each came from, before the list is parsed."""
    (tmp_path / "models.txt").write_text("llama3.2\n")
    monkeypatch.setenv("PRELOADER_MODELS_FILE", str(tmp_path / "models.txt"))
    env_file = tmp_path / ".env"
    value = "devstral?bogus=1"  # a bad entry: the conflict is still the error shown
    if where == "environment":
        monkeypatch.setenv("OLLAMA_PRELOAD_MODELS", value)
    else:
        env_file.write_text(f"OLLAMA_PRELOAD_MODELS={value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file)
    message = str(info.value)
    assert "PRELOADER_MODELS_FILE (from the environment)" in message
    expected = "the environment" if where == "environment" else str(env_file)
    assert f"OLLAMA_PRELOAD_MODELS (from {expected})" in message
    assert "both set" in message
    assert info.value.exit_code == 2
    assert "\n" not in message


def test_models_file_with_an_empty_variable_is_fine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """OLLAMA_PRELOAD_MODELS="" (as compose files often leave it) does not conflict."""
    (tmp_path / "models.txt").write_text("llama3.2\n")
    monkeypatch.setenv("PRELOADER_MODELS_FILE", str(tmp_path / "models.txt"))
    monkeypatch.setenv("OLLAMA_PRELOAD_MODELS", '""')
    assert [m.display for m in load_settings(None).models] == ["llama3.2:latest"]


def test_missing_models_file_names_the_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A missing file at start is a configuration error (exit 2) naming the path."""
    path = tmp_path / "absent.txt"
    monkeypatch.setenv("PRELOADER_MODELS_FILE", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert str(info.value).startswith(f"PRELOADER_MODELS_FILE={path}: no such file")
    assert info.value.exit_code == 2


def test_bad_line_in_models_file_names_the_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bad entry at start: exit 2 naming the file and the line."""
    (tmp_path / "models.txt").write_text("llama3.2\n\ndevstral?num_ctx=0\n")
    monkeypatch.setenv("PRELOADER_MODELS_FILE", str(tmp_path / "models.txt"))
    with pytest.raises(ConfigError, match=r"models\.txt, line 3: entry 'devstral\?num_ctx=0'"):
        load_settings(None)


def test_reading_the_file_can_be_left_to_the_caller(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """read_models_file=False: the rest of the settings, without touching the (absent) file."""
    monkeypatch.setenv("PRELOADER_MODELS_FILE", str(tmp_path / "absent.txt"))
    s = load_settings(None, read_models_file=False)
    assert (s.models, s.models_source) == ((), "models-file")


def test_models_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Where the list came from: what a SIGHUP can re-read depends on it."""
    env_file = tmp_path / ".env"
    assert load_settings(env_file).models_source == "unset"
    env_file.write_text("OLLAMA_PRELOAD_MODELS=llama3.2\n")
    assert load_settings(env_file).models_source == "env-file"
    monkeypatch.setenv("OLLAMA_PRELOAD_MODELS", "devstral")
    s = load_settings(env_file)
    assert (s.models_source, s.models[0].display) == ("environment", "devstral:latest")


@pytest.mark.parametrize("value", ["release", "UNLOAD", " keep "])
def test_on_remove_choices(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """PRELOADER_ON_REMOVE: release (default), unload or keep, case-insensitive."""
    assert load_settings(None).on_remove == "release"
    monkeypatch.setenv("PRELOADER_ON_REMOVE", value)
    assert load_settings(None).on_remove == value.strip().lower()


def test_on_remove_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything else is one line naming the variable."""
    monkeypatch.setenv("PRELOADER_ON_REMOVE", "delete")
    with pytest.raises(ConfigError, match="PRELOADER_ON_REMOVE='delete'"):
        load_settings(None)


@pytest.mark.parametrize(
    "raw", ["", "5m", "10m30s", "-1", "-5m", "0", "3600", " '24h' ", "1d", "soon", "1.5", "+90"]
)
def test_ollama_keep_alive_is_read_as_ollama_reads_it(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    """Same value as the fake's envconfig.KeepAlive (a Go duration, whole seconds, else 5m;
    negative = forever), never an error: the server would not refuse it either."""
    from fake_ollama.envconfig import var
    from fake_ollama.gotime import MAX_INT64, env_keep_alive

    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", raw)
    nanoseconds = env_keep_alive(var("OLLAMA_KEEP_ALIVE"))
    expected = -1.0 if nanoseconds == MAX_INT64 else nanoseconds / 1e9
    assert load_settings(None).ollama_keep_alive == expected


@pytest.mark.parametrize(
    ("value", "host"), [("[::1]", "::1"), (' "127.0.0.1" ', "127.0.0.1"), ("", "")]
)
def test_health_host_is_read_as_status_and_health_read_it(
    monkeypatch: pytest.MonkeyPatch, value: str, host: str
) -> None:
    """Brackets, quotes and spaces are accepted, as `status` and `health` accept them."""
    monkeypatch.setenv("PRELOADER_HEALTH_HOST", value)
    assert load_settings(None).health_host == host


def _baked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A baked image's models file, as the Dockerfile's `baked` stage writes it."""
    path = tmp_path / "baked-models.txt"
    path.write_text("llama3.2\nnomic-embed-text\n")
    monkeypatch.setenv("PRELOADER_BAKED_MODELS_FILE", str(path))
    return path


def test_baked_list_is_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing set by the user: the baked file's models are preloaded."""
    path = _baked(monkeypatch, tmp_path)
    settings = load_settings(None)
    assert [m.name for m in settings.models] == ["llama3.2", "nomic-embed-text"]
    assert settings.models_file == path


def test_user_variable_replaces_the_baked_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """OLLAMA_PRELOAD_MODELS set: it wins, and it does not conflict with the baked file."""
    _baked(monkeypatch, tmp_path)
    monkeypatch.setenv("OLLAMA_PRELOAD_MODELS", "devstral")
    settings = load_settings(None)
    assert [m.name for m in settings.models] == ["devstral"]
    assert settings.models_file is None


def test_user_models_file_replaces_the_baked_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PRELOADER_MODELS_FILE set (the Kubernetes manifests do): that file wins."""
    _baked(monkeypatch, tmp_path)
    mine = tmp_path / "mine.txt"
    mine.write_text("qwen3\n")
    monkeypatch.setenv("PRELOADER_MODELS_FILE", str(mine))
    settings = load_settings(None)
    assert [m.name for m in settings.models] == ["qwen3"]


def test_both_user_settings_still_refused_with_a_baked_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The baked file does not soften the one-place rule for the user's own settings."""
    _baked(monkeypatch, tmp_path)
    monkeypatch.setenv("PRELOADER_MODELS_FILE", str(tmp_path / "mine.txt"))
    monkeypatch.setenv("OLLAMA_PRELOAD_MODELS", "devstral")
    with pytest.raises(ConfigError, match="are both set"):
        load_settings(None)
