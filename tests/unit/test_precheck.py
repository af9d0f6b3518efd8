"""`run`'s precheck vouches only for what Settings accepts, and reads every value as Settings does.

`run` spawns `ollama serve` before Settings is built when the precheck vouches for the input
(launch.py), so a verdict Settings would not share is a run started on bad input. Each case
below is given to both; the common spellings must be vouched for, or the precheck gains nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, get_args

import pytest

from ollama_preloader.config import values
from ollama_preloader.config.precheck import RULES, Draft, precheck
from ollama_preloader.config.profiles import Profile, Quantization
from ollama_preloader.config.settings import Settings, load_settings, variable_name
from ollama_preloader.errors import ConfigError

VOUCH, EITHER = "vouch", "either"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("PRELOADER_", "OLLAMA_")) or name == "SSL_CERT_FILE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRELOADER_BAKED_MODELS_FILE", str(tmp_path / "no-baked-list.txt"))
    monkeypatch.chdir(tmp_path)


def _choices(kind: Any) -> list[tuple[str, str]]:
    words = [str(word) for word in get_args(kind)]
    return [(w, VOUCH) for w in words] + [
        (words[0].upper(), VOUCH),
        (f" {words[0]} ", EITHER),
        ("bogus", EITHER),
        ("", EITHER),
    ]


SECONDS = [("5", VOUCH), ("2.5", VOUCH), ("5s", VOUCH), ("2m", VOUCH), ("1h30m", VOUCH)] + [
    (text, EITHER) for text in ("0", "-1", "abc", "", " 5 ", "1_0", "1e3", "inf", "nan", "5 s")
]
# Two settings must stay below another one's default (60 s, 30 s): minutes are not vouched.
SHORT_SECONDS = [
    (text, VOUCH if expect == VOUCH and "m" not in text else EITHER) for text, expect in SECONDS
]
BOOLEAN = [(t, VOUCH) for t in ("true", "false", "1", "0", "yes", "no", "on", "off", "TRUE")] + [
    (t, EITHER) for t in (" true ", "2", "", "maybe")
]
HOSTS = [("127.0.0.1:11500", VOUCH), ("0.0.0.0", VOUCH), ("http://example.com:80", VOUCH)] + [
    (t, EITHER) for t in ("https://h", "http://h/path", "bad host", "", ":0", "[::1]:5", ":x")
]
PATHS = [("", EITHER), (" ", EITHER), ("somewhere/dir", EITHER)]

CASES: dict[str, list[tuple[str, str]]] = {
    "models": [("llama3.2,nomic-embed-text", VOUCH), ("qwen3:0.6b@2", EITHER)]
    + [(t, EITHER) for t in ("", "bad name!!", "a,a", ",", "x:y:z")],
    "ollama_host": HOSTS,
    "ollama_max_loaded_models": [("2", VOUCH), ("0", VOUCH)]
    + [(t, EITHER) for t in ("", "x", "²", "-1")],
    "ollama_keep_alive": [("5m", VOUCH), ("-1", VOUCH), ("x", EITHER), ("", EITHER)],
    "models_file": PATHS,
    "on_remove": _choices(values.RemovePolicy),
    "stale_runners": _choices(values.StaleRunnerPolicy),
    "pull_policy": _choices(values.PullPolicy),
    "on_server_exit": _choices(values.ServerExitPolicy),
    "pull_attempts": [("1", VOUCH), ("5", VOUCH), ("100", VOUCH)]
    + [(t, EITHER) for t in ("0", "101", "3.0", " 3 ", "1_0", "abc", "")],
    "ollama_command": [("ollama", VOUCH), ("/usr/bin/ollama", VOUCH), ("", EITHER)],
    "log_polls": BOOLEAN,
    "log_level": _choices(values.LogLevel),
    "log_format": _choices(values.LogFormat),
    "profile": [*_choices(Profile), ("gpu_accelerated", VOUCH)],
    "quantization": [*_choices(Quantization), ("", EITHER)],
    "warmup": BOOLEAN,
    "health_port": [("8080", VOUCH), ("off", VOUCH)]
    + [(t, EITHER) for t in ("0", "70000", "abc", "", "1_0")],
    "health_host": [("0.0.0.0", VOUCH), ("[::1]", VOUCH), ("", EITHER)],
    "probe_interval": [("off", VOUCH), ("30", VOUCH), ("1m", VOUCH)]
    + [(t, EITHER) for t in ("5", "0", "x", "")],
    "update": _choices(values.UpdateMode),
    "update_interval": [("24h", VOUCH), ("90m", VOUCH)]
    + [(t, EITHER) for t in ("0s", "x", "5", "")],
    "update_window": [("02:00-05:00", VOUCH)]
    + [(t, EITHER) for t in ("[1, 2]", "", "25:00-01:00", "02:00-02:00", "null")],
    "state_dir": PATHS,
    "guard": BOOLEAN,
    "guard_upstream": HOSTS,
    "guard_listen": HOSTS,
    "guard_keep_alive": _choices(values.GuardKeepAlive),
    "guard_options": _choices(values.GuardOptions),
    "guard_undeclared_keep_alive": [("off", VOUCH), ("-1", VOUCH), ("5m", VOUCH)]
    + [(t, EITHER) for t in ("", "x")],
    "guard_api_keys_file": PATHS,
    "parse_warnings": [("[]", EITHER), ("x", EITHER)],
    "models_source": [("environment", EITHER)],
}
for _field in ("watch_interval", "api_timeout", "refresh_interval", "capacity_backoff"):
    CASES[_field] = SECONDS
for _field in ("oom_retry", "ready_timeout", "shutdown_grace", "pull_stall_timeout"):
    CASES[_field] = SECONDS
for _field in ("retry_max", "guard_hold"):
    CASES[_field] = SECONDS
for _field in ("retry_initial", "probe_timeout"):
    CASES[_field] = SHORT_SECONDS


def _settings_or_none() -> Settings | None:
    try:
        return load_settings(Path(".env"))
    except ConfigError:
        return None


def _same_reading(draft: Draft | None, settings: Settings | None) -> None:
    if draft is None:
        return
    assert settings is not None, "vouched for an input Settings refuses"
    for name in Draft.__dataclass_fields__:
        assert getattr(draft, name) == getattr(settings, name), name


def test_every_field_has_its_rule_under_its_variable() -> None:
    assert set(RULES) == set(Settings.model_fields)
    for field, rule in RULES.items():
        assert rule.variable == variable_name(field), field
    assert set(CASES) == set(Settings.model_fields)


def test_with_nothing_set_the_draft_is_settings_defaults() -> None:
    draft, settings = precheck(Path(".env")), load_settings(Path(".env"))
    assert draft is not None
    _same_reading(draft, settings)
    # The defaults the precheck keeps for the pairs it checks are Settings' too.
    for field in ("retry_initial", "retry_max", "probe_interval", "probe_timeout"):
        assert RULES[field].default == getattr(settings, field), field


@pytest.mark.parametrize(
    ("field", "text", "expect"),
    [(field, text, expect) for field, cases in CASES.items() for text, expect in cases],
)
def test_a_verdict_settings_shares(
    monkeypatch: pytest.MonkeyPatch, field: str, text: str, expect: str
) -> None:
    monkeypatch.setenv(RULES[field].variable, text)
    draft, settings = precheck(Path(".env")), _settings_or_none()
    _same_reading(draft, settings)
    if draft is not None:
        assert settings is not None
        got = RULES[field].read(text)
        assert got == getattr(settings, field), (field, text, got)
    if expect == VOUCH:
        assert draft is not None, f"{RULES[field].variable}={text!r} not vouched for"


@pytest.mark.parametrize(
    ("dotenv", "environ"),
    [
        ("PRELOADER_WATCH_INTERVAL=7\nOLLAMA_PRELOAD_MODELS=llama3.2\n", {}),
        ("OLLAMA_HOST=127.0.0.1:11600\n", {"OLLAMA_HOST": "127.0.0.1:11700"}),
        ("OLLAMA_HOST=127.0.0.1:11600\nOLLAMA_KEEP_ALIVE=-1\n", {}),
        ("PRELOADER_LOG_LEVEL=debug\nPRELOADER_HEALTH_PORT=off\n", {}),
        ('PRELOADER_LOG_FORMAT="json"\n', {}),
        ("BASE=5\nPRELOADER_GRACE=${BASE}\nPRELOADER_SHUTDOWN_GRACE=${BASE}s\n", {}),
    ],
)
def test_dotenv_values_are_read_as_settings_reads_them(
    monkeypatch: pytest.MonkeyPatch, dotenv: str, environ: dict[str, str]
) -> None:
    Path(".env").write_text(dotenv)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    draft, settings = precheck(Path(".env")), _settings_or_none()
    assert draft is not None
    _same_reading(draft, settings)


@pytest.mark.parametrize(
    ("dotenv", "environ"),
    [
        ("", {"preloader_shutdown_grace": "7"}),  # Settings reads names in any case
        ("preloader_log_level=debug\n", {}),
        ("", {"Ollama_Host": "127.0.0.1:11600"}),
        ("", {"PRELOADER_RETRY_INITIAL": "90", "PRELOADER_RETRY_MAX": "30"}),
        ("", {"PRELOADER_PROBE_TIMEOUT": "40s"}),
        ("", {"PRELOADER_MODELS_FILE": "models.txt", "OLLAMA_PRELOAD_MODELS": "llama3.2"}),
        ("", {"PRELOADER_MODELS_FILE": "missing.txt"}),
        ("", {"SSL_CERT_FILE": "/nonexistent/ca.pem"}),
    ],
)
def test_left_to_settings(
    monkeypatch: pytest.MonkeyPatch, dotenv: str, environ: dict[str, str]
) -> None:
    """Names in another case, pairs that do not go together, files that do not load: Settings'
    call, with its own error when it refuses."""
    Path(".env").write_text(dotenv)
    Path("models.txt").write_text("llama3.2\n")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert precheck(Path(".env")) is None
    _same_reading(None, _settings_or_none())


def test_an_env_file_that_does_not_read_is_left_to_settings() -> None:
    Path(".env").write_bytes(b"PRELOADER_LOG_LEVEL=d\xe9bug\n")
    assert precheck(Path(".env")) is None
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(Path(".env"))


def test_a_models_file_that_parses_is_vouched_for(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("models.txt").write_text("llama3.2\nnomic-embed-text\n")
    monkeypatch.setenv("PRELOADER_MODELS_FILE", "models.txt")
    assert precheck(Path(".env")) is not None
    Path("models.txt").write_text("bad name!!\n")
    assert precheck(Path(".env")) is None
    with pytest.raises(ConfigError, match=r"models\.txt"):
        load_settings(Path(".env"))


def test_a_baked_list_is_checked_like_a_models_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    baked = tmp_path / "baked.txt"
    monkeypatch.setenv("PRELOADER_BAKED_MODELS_FILE", str(baked))
    baked.write_text("bad name!!\n")
    assert precheck(Path(".env")) is None
    baked.write_text("llama3.2\n")
    assert precheck(Path(".env")) is not None
