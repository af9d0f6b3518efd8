"""docker-compose.yml validates against the compose specification and keeps its promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from shipping import dockerfile
from shipping.checkers import REPO, run_tool

from ollama_preloader.config.durations import parse_go_duration
from ollama_preloader.config.settings import Settings

COMPOSE = REPO / "docker-compose.yml"
GPU = REPO / "docker-compose.gpu.yml"


def service() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert list(data["services"]) == ["ollama"]
    ollama: dict[str, Any] = data["services"]["ollama"]
    return ollama


def test_validates_against_the_compose_spec() -> None:
    """check-jsonschema with the vendored compose-spec schema accepts the file."""
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_can_fail(tmp_path: Path) -> None:
    """A misspelt key is rejected, so the check above means something."""
    bad = tmp_path / "compose.yml"
    bad.write_text(COMPOSE.read_text().replace("restart:", "restrat:"))
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", bad)
    assert result.returncode != 0
    assert "restrat" in result.stdout


def test_one_service_with_env_file_volume_port_and_restart() -> None:
    """Built here, configured by .env, the store on a named volume, port 11434, restarted."""
    svc = service()
    assert svc["build"]["context"] == "."
    assert [e["path"] for e in svc["env_file"]] == [".env"]
    assert "ollama:/root/.ollama" in svc["volumes"]
    assert "11434:11434" in svc["ports"]
    assert svc["restart"] == "unless-stopped"


def test_no_gpu_reservation_by_default() -> None:
    """docker-compose.yml starts on a CPU-only host: it reserves no devices."""
    assert "deploy" not in service()


def test_gpu_override_validates_and_reserves_all_gpus() -> None:
    """docker-compose.gpu.yml validates, and only adds all NVIDIA GPUs to the same service."""
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", GPU)
    assert result.returncode == 0, result.stdout + result.stderr
    data = yaml.safe_load(GPU.read_text())
    assert list(data["services"]) == ["ollama"]
    assert list(data["services"]["ollama"]) == ["deploy"]
    devices = data["services"]["ollama"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_readme_names_the_gpu_step() -> None:
    """The one documented GPU step is the command that adds the override file."""
    step = "docker compose -f docker-compose.yml -f docker-compose.gpu.yml up -d"
    assert step in (REPO / "docs" / "docker.md").read_text()
    assert step in COMPOSE.read_text()


def test_healthcheck_matches_the_image() -> None:
    """Same command as the Dockerfile's HEALTHCHECK, with a start period as long."""
    check = service()["healthcheck"]
    assert check["test"] == ["CMD", "ollama-preloader", "health"]
    image = next(i for i in dockerfile.parse(REPO / "Dockerfile") if i.keyword == "HEALTHCHECK")
    assert check["start_period"] == image.flags()["start-period"]
    assert check["interval"] == image.flags()["interval"]


def test_stop_grace_covers_the_supervisors_shutdown() -> None:
    """Docker waits longer than PRELOADER_SHUTDOWN_GRACE, so the supervisor stops Ollama itself."""
    grace = parse_go_duration(service()["stop_grace_period"])
    default = Settings.model_fields["shutdown_grace"].default
    assert grace >= default + 5


def test_commented_example_waits_for_healthy() -> None:
    """The second, commented service shows depends_on with condition: service_healthy."""
    text = COMPOSE.read_text()
    assert "#   depends_on:" in text
    assert "#       condition: service_healthy" in text


def _with_models_file_uncommented() -> str:
    """The file as a user makes it after following the models-file comment."""
    example = {
        "# - ./models.txt:/etc/ollama-preloader/models.txt:ro",
        "# environment:",
        "#   PRELOADER_MODELS_FILE: /etc/ollama-preloader/models.txt",
    }
    lines = COMPOSE.read_text().splitlines()
    out = [line.replace("# ", "", 1) if line.strip() in example else line for line in lines]
    assert len([a for a, b in zip(lines, out, strict=True) if a != b]) == len(example)
    return "\n".join(out) + "\n"


def test_models_file_example_is_valid_and_coherent(tmp_path: Path) -> None:
    """Uncommented, the example validates, bind-mounts ./models.txt read-only, and points
    PRELOADER_MODELS_FILE at the mounted path; the image's entrypoint is tini, which passes
    `docker compose kill -s HUP` on to the supervisor."""
    assert "environment" not in service()  # commented out by default: the list is in .env
    text = _with_models_file_uncommented()
    changed = tmp_path / "compose.yml"
    changed.write_text(text)
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", changed)
    assert result.returncode == 0, result.stdout + result.stderr
    svc = yaml.safe_load(text)["services"]["ollama"]
    mounts = [v for v in svc["volumes"] if v.startswith("./models.txt:")]
    assert len(mounts) == 1
    source, target, mode = mounts[0].split(":")
    assert (source, mode) == ("./models.txt", "ro")
    assert svc["environment"] == {"PRELOADER_MODELS_FILE": target}
    entrypoint = next(i for i in dockerfile.parse(REPO / "Dockerfile") if i.keyword == "ENTRYPOINT")
    argv = entrypoint.exec_form
    assert argv is not None
    assert argv[0].endswith("/tini")
    assert argv[1:3] == ["--", "/opt/ollama-preloader/bin/ollama-preloader"]
