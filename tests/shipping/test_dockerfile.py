"""The Dockerfile passes hadolint and keeps the image's contract: base, init, entrypoint, health."""

from __future__ import annotations

import re
from pathlib import Path

from shipping import dockerfile
from shipping.checkers import REPO, run_tool

from ollama_preloader.config.durations import parse_go_duration

DOCKERFILE = REPO / "Dockerfile"


def test_hadolint_passes() -> None:
    """hadolint reports nothing, not even style notes."""
    result = run_tool("hadolint", "--no-color", "--failure-threshold", "style", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The check can fail: an untagged base and an unclean apt-get are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\n")
    result = run_tool("hadolint", "--no-color", "--failure-threshold", "style", bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout
    assert "DL3009" in result.stdout


def test_base_image_is_a_pinned_ollama_release() -> None:
    """FROM ollama/ollama at an exact x.y.z release (the ARG default), never `latest`."""
    text = DOCKERFILE.read_text()
    version = re.search(r"^ARG OLLAMA_VERSION=(\S+)$", text, re.MULTILINE)
    assert version is not None
    assert re.fullmatch(r"\d+\.\d+\.\d+", version.group(1)), version.group(1)
    froms = [i.args for i in dockerfile.parse(DOCKERFILE) if i.keyword == "FROM"]
    assert froms[0] == "ollama/ollama:${OLLAMA_VERSION} AS system"


def test_entrypoint_is_the_supervisor_under_tini() -> None:
    """The final image runs tini -> ollama-preloader run, and checks health with its own CLI."""
    instructions = dockerfile.parse(DOCKERFILE)
    final = instructions[-1].stage
    app = dockerfile.stage(instructions, "app") + dockerfile.stage(instructions, final)
    entry = [i.exec_form for i in app if i.keyword == "ENTRYPOINT"]
    assert entry == [["/usr/bin/tini", "--", "/opt/ollama-preloader/bin/ollama-preloader"]]
    assert [i.exec_form for i in app if i.keyword == "CMD"] == [["run"]]
    health = [i for i in app if i.keyword == "HEALTHCHECK"]
    assert len(health) == 1
    assert health[0].args.endswith('CMD ["ollama-preloader", "health"]')
    # Pulls and loads of large models take many minutes before the first success.
    assert parse_go_duration(health[0].flags()["start-period"]) >= 15 * 60


def test_app_is_one_layer_and_the_store_is_not_a_declared_volume() -> None:
    """The app stage copies only the finished venv; no VOLUME, so derived images can bake."""
    instructions = dockerfile.parse(DOCKERFILE)
    app = dockerfile.stage(instructions, "app")
    layers = [i for i in app if i.keyword in ("RUN", "COPY", "ADD")]
    assert [i.args for i in layers] == ["--from=build /opt/ollama-preloader /opt/ollama-preloader"]
    assert not [i for i in instructions if i.keyword == "VOLUME"]


def test_install_step_is_the_shared_script() -> None:
    """The build stage installs with scripts/install-venv, the script the install test runs."""
    build = dockerfile.stage(dockerfile.parse(DOCKERFILE), "build")
    runs = [i.exec_form for i in build if i.keyword == "RUN"]
    assert runs == [["/src/scripts/install-venv", "/src", "/opt/ollama-preloader"]]


def test_baked_stage_pulls_the_build_arg_models() -> None:
    """The default target records PRELOAD_MODELS in the baked models file (not as the user's
    OLLAMA_PRELOAD_MODELS) and pulls them with `ollama-preloader pull`, dropping the key."""
    instructions = dockerfile.parse(DOCKERFILE)
    final = instructions[-1].stage
    assert final == "baked"
    baked = dockerfile.stage(instructions, final)
    assert any(i.keyword == "ARG" and i.args.startswith("PRELOAD_MODELS") for i in baked)
    assert not any(i.keyword == "ENV" and "OLLAMA_PRELOAD_MODELS" in i.args for i in baked)
    run = [i.args for i in baked if i.keyword == "RUN"]
    assert len(run) == 1
    assert "> /etc/ollama-preloader/baked-models.txt" in run[0]
    assert run[0].index("baked-models.txt") < run[0].index("ollama-preloader pull")
    assert "rm -f /root/.ollama/id_ed25519" in run[0]
