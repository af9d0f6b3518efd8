"""The image on a real Docker Engine: cold start from a registry to healthy, tini as PID 1 with
repairs and no zombies, a clean `docker stop`, SIGHUP and a models-file edit, a baked image
offline. Judged by what Docker and the container show: inspect, exec `ollama ps`, /proc, logs."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from container_harness import Engine
from preloader_harness import free_port
from real_harness import Registry


def start(engine: Engine, image: str, name: str, *args: str, network: str = "host") -> int:
    """`docker run -d` on free ports; returns Ollama's port (the health port is the next one)."""
    port = free_port()
    health = free_port()
    engine.run(
        "run", "-d", "--name", name, "--network", network,
        "-e", f"OLLAMA_HOST=127.0.0.1:{port}", "-e", f"PRELOADER_HEALTH_PORT={health}",
        *args, image,
    )  # fmt: skip
    engine.ports = (port, health)  # type: ignore[attr-defined]
    return port


def ollama_ps(engine: Engine, name: str) -> str:
    return engine.run("exec", name, "ollama", "ps").stdout


def wait_ps(engine: Engine, name: str, model: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = ollama_ps(engine, name)
        if model in out and "Forever" in out:
            return out
        time.sleep(1)
    raise AssertionError(f"{model} not pinned:\n{out}")


def test_cold_start_pulls_and_turns_healthy(
    engine: Engine, app_image: str, registry: Registry, name: str
) -> None:
    """Empty store: the model is pulled from the registry, pinned, and Docker says healthy; the
    API and the health port answer on the documented addresses."""
    model = registry.name("tiny-chat")
    start(engine, app_image, name, "-e", f"OLLAMA_PRELOAD_MODELS={model}?insecure=true")
    engine.wait_health(name)
    assert "Forever" in wait_ps(engine, name, "tiny-chat")
    port, health = engine.ports  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=5) as r:
        assert "version" in json.load(r)
    with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=5) as r:
        assert r.status == 200


def test_tini_is_pid_1_and_repairs_leave_no_zombies(
    engine: Engine, app_image: str, registry: Registry, name: str
) -> None:
    """tini is PID 1; SIGKILL of the runner and of `ollama serve` are repaired to healthy with
    the model pinned again, and no zombie or orphan is left."""
    model = registry.name("tiny-chat")
    start(engine, app_image, name, "-e", f"OLLAMA_PRELOAD_MODELS={model}?insecure=true")
    engine.wait_health(name)
    procs = engine.ps(name)
    assert next(p for p in procs if p[0] == 1)[3].startswith("/usr/bin/tini")
    for needle in ("llama-server", "ollama serve"):
        victim = [
            p
            for p in engine.ps(name)
            if needle in p[3] and "preloader" not in p[3] and "/proc" not in p[3]
        ]
        assert victim, engine.ps(name)
        engine.run("exec", name, "kill", "-9", str(victim[0][0]))
        time.sleep(2)
        wait_ps(engine, name, "tiny-chat")
        engine.wait_health(name)
    procs = engine.ps(name)
    assert not [p for p in procs if p[2] == "Z"], procs
    supervisor = [p[0] for p in procs if "ollama-preloader" in p[3] and p[1] == 1]
    assert supervisor
    parents = {1, *supervisor, *[p[0] for p in procs]}
    assert all(p[1] in parents or p[1] == 0 for p in procs)


def test_docker_stop_exits_0_and_leaves_nothing(
    engine: Engine, app_image: str, registry: Registry, name: str
) -> None:
    """`docker stop` inside the grace: exit code 0, not the 137 of Docker's SIGKILL."""
    model = registry.name("tiny-chat")
    start(engine, app_image, name, "-e", f"OLLAMA_PRELOAD_MODELS={model}?insecure=true")
    engine.wait_health(name)
    engine.run("stop", "-t", "30", name)
    state = engine.inspect(name)["State"]
    assert (state["Running"], state["ExitCode"], state["OOMKilled"]) == (False, 0, False)


def test_hup_and_models_file_edit_via_a_bind_mounted_dir(
    engine: Engine, app_image: str, registry: Registry, name: str, tmp_path: Path
) -> None:
    """A models file in a bind-mounted directory: an edit is applied live, HUP re-reads it."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "models.txt").write_text(registry.name("tiny-chat") + "?insecure=true\n")
    start(
        engine, app_image, name, "-v", f"{models}:/etc/ollama-preloader/m:ro",
        "-e", "PRELOADER_MODELS_FILE=/etc/ollama-preloader/m/models.txt",
    )  # fmt: skip
    engine.wait_health(name)
    (models / "models.txt").write_text(registry.name("tiny-embed") + "?insecure=true\n")
    engine.run("kill", "-s", "HUP", name)
    wait_ps(engine, name, "tiny-embed")
    engine.wait_health(name)


def test_baked_image_runs_offline(engine: Engine, baked_image: str, name: str) -> None:
    """--network none, no models variable: the baked list is pinned from the image's store,
    also with the Kubernetes manifests' PRELOADER_MODELS_FILE setting pointing at it."""
    engine.run(
        "run", "-d", "--name", name, "--network", "none",
        "-e", "PRELOADER_MODELS_FILE=/etc/ollama-preloader/baked-models.txt", baked_image,
    )  # fmt: skip
    engine.wait_health(name)
    assert "tiny-embed" in wait_ps(engine, name, "tiny-embed")
    assert engine.inspect(name)["State"]["Health"]["Status"] == "healthy"
