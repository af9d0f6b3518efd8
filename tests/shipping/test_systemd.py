"""deploy/systemd: the unit passes `systemd-analyze verify`, runs the installed `watch`, and its
EnvironmentFile example is valid configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer.main
from shipping.checkers import REPO
from shipping.systemd import ENV_EXAMPLE, UNIT, directives, environment_file, exec_start, one
from shipping.variables import known_variables

from ollama_preloader.cli import app
from ollama_preloader.config.settings import load_settings
from ollama_preloader.errors import EXIT_CONFIG, ConfigError
from ollama_preloader.server.remote import check_sidecar_settings

INSTALLED = "/usr/local/bin/ollama-preloader"  # where both install routes of docs/sidecar.md put it
ENV_FILE = "/etc/ollama-preloader.env"


def installed_entrypoint() -> Path:
    """This environment's `ollama-preloader`, standing in for /usr/local/bin's."""
    path = Path(sys.executable).parent / "ollama-preloader"
    assert path.is_file(), "install the project first: pip install -e '.[test]'"
    return path


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`)")
    unit = tmp_path / UNIT.name
    # verify checks that the command exists: point it at the one installed here.
    unit.write_text(unit_text.replace(INSTALLED, str(installed_entrypoint())))
    return subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a single warning."""
    result = verify(UNIT.read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_can_fail(tmp_path: Path) -> None:
    """A misspelt directive is reported, so the check above means something."""
    result = verify(UNIT.read_text().replace("RestartSec=", "RestartSecs="), tmp_path)
    assert "RestartSecs" in result.stderr


def test_exec_start_runs_the_installed_watch_command() -> None:
    """ExecStart is the package's console script at the documented install path, running `watch`."""
    argv = exec_start()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] == INSTALLED
    assert Path(argv[0]).name in scripts
    assert argv[1:] == ["watch"]
    assert "watch" in typer.main.get_command(app).commands  # type: ignore[attr-defined]
    guide = (REPO / "docs" / "sidecar.md").read_text()
    assert INSTALLED in guide


def test_unit_follows_ollama_service() -> None:
    """Ordered after ollama.service, stopped and restarted with it, started again by it."""
    unit = directives()
    assert "ollama.service" in one("Unit", "After").split()
    assert one("Unit", "PartOf") == "ollama.service"
    assert "ollama.service" in unit["Install"]["WantedBy"][0].split()
    assert one("Service", "Restart") == "on-failure"
    # Bad configuration exits 2: restarting would only repeat the error.
    assert str(EXIT_CONFIG) in one("Service", "RestartPreventExitStatus").split()
    assert one("Service", "DynamicUser") == "yes"  # it needs no files and no privileges


def test_environment_file_is_where_the_readme_and_errors_say() -> None:
    """EnvironmentFile= is the path docs/sidecar.md installs the example to, and errors name."""
    assert one("Service", "EnvironmentFile") == ENV_FILE
    guide = (REPO / "docs" / "sidecar.md").read_text()
    assert f"deploy/systemd/{ENV_EXAMPLE.name} {ENV_FILE}" in guide
    with pytest.raises(ConfigError, match=ENV_FILE):
        check_sidecar_settings(load_settings(None).model_copy(update={"models": ()}))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No OLLAMA_/PRELOADER_ variable from the caller, and no `.env` in the working directory."""
    for name in list(os.environ):
        if name.startswith(("OLLAMA_", "PRELOADER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_environment_file_example_is_valid_configuration(clean_env: pytest.MonkeyPatch) -> None:
    """Its variables are known ones; as systemd passes them they make a working sidecar."""
    assigned, shown = environment_file()
    assert assigned, "the example sets at least the model list"
    assert set(assigned) | set(shown) <= known_variables()
    for name, value in assigned.items():
        clean_env.setenv(name, value)
    settings = load_settings(None)
    check_sidecar_settings(settings)
    assert [m.display for m in settings.models] == ["llama3.2:latest", "nomic-embed-text:latest"]


def test_environment_file_shows_the_real_defaults(clean_env: pytest.MonkeyPatch) -> None:
    """A commented `# NAME=value` line shows the default: uncommenting it changes nothing."""
    _, shown = environment_file()
    defaults = load_settings(None)
    for name, value in shown.items():
        clean_env.setenv(name, value)
        assert load_settings(None) == defaults, name
        clean_env.delenv(name)


def test_reload_sends_sighup_to_the_supervisor() -> None:
    """`systemctl reload` signals the main process (the supervisor), never Ollama."""
    assert one("Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Service", "Type") == "exec"  # MAINPID is the supervisor itself


def test_environment_file_explains_the_live_list(clean_env: pytest.MonkeyPatch) -> None:
    """The example says how to make the list live: a models file named by the variable
    (a commented `# NAME=value` would have to show the default, so it is prose)."""
    text = ENV_EXAMPLE.read_text()
    assert "PRELOADER_MODELS_FILE" in text
    assert "systemctl reload ollama-preloader" in text
    assigned, shown = environment_file()
    assert "PRELOADER_MODELS_FILE" not in assigned | shown
