"""The image on a real Docker Engine: cold start from a registry to healthy, tini as PID 1 with
repairs and no zombies, a clean `docker stop` that leaves nothing, SIGHUP and a models-file
edit, a baked image offline. Judged by what Docker, the container and the host show: inspect,
exec `ollama ps`, /proc inside the container, `docker top`, the host's /proc, logs."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

from container_harness import Engine, Ports, host_alive, host_processes_matching
from real_harness import Registry

RUNNER = "/usr/lib/ollama/llama-server"  # the image's runner path; the host kit's differs
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def is_serve(cmd: str) -> bool:
    """`ollama serve` as the supervisor starts it (`/usr/bin/ollama serve`)."""
    words = cmd.split()
    return len(words) >= 2 and words[0].rsplit("/", 1)[-1] == "ollama" and words[1] == "serve"


def is_kind(needle: str, cmd: str) -> bool:
    return is_serve(cmd) if needle == "serve" else cmd.startswith(needle)


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        data: dict[str, object] = json.load(reply)
        return data


def log_events(engine: Engine, name: str) -> dict[str, dict[str, str]]:
    """The supervisor's log lines from `docker logs` (the plain format it uses off a TTY:
    `time level event msg  key=value ...`): event name -> its key=value fields (last one)."""
    done = engine.run("logs", name)
    events: dict[str, dict[str, str]] = {}
    for line in (done.stdout + done.stderr).splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0][:4].isdigit():
            continue
        fields = dict(FIELD.findall(line))
        events[parts[2]] = {k: v.strip('"') for k, v in fields.items()}
    return events


def test_cold_start_pulls_and_turns_healthy(
    engine: Engine, app_image: str, registry: Registry, name: str, ports: Ports
) -> None:
    """Empty store: the model is pulled from the registry, pinned, and Docker says healthy; the
    API and the health port answer on the documented addresses."""
    model = registry.name("tiny-chat")
    engine.start_container(
        app_image, name, "-e", f"OLLAMA_PRELOAD_MODELS={model}?insecure=true", ports=ports
    )
    engine.wait_health(name)
    assert "Forever" in engine.wait_pinned(name, ["tiny-chat"])
    assert "version" in get_json(f"http://127.0.0.1:{ports.api}/api/version")
    with urllib.request.urlopen(f"http://127.0.0.1:{ports.health}/readyz", timeout=5) as r:
        assert r.status == 200
    health = engine.inspect(name)["State"]["Health"]
    assert health["Log"], health
    assert health["Log"][-1]["ExitCode"] == 0, health


def test_tini_is_pid_1_and_repairs_leave_no_zombies(
    engine: Engine, app_image: str, registry: Registry, name: str, ports: Ports
) -> None:
    """tini is PID 1; SIGKILL of the runner and of `ollama serve` are repaired to healthy with
    the model pinned again, and no zombie or orphan is left."""
    model = registry.name("tiny-chat")
    engine.start_container(
        app_image, name, "-e", f"OLLAMA_PRELOAD_MODELS={model}?insecure=true", ports=ports
    )
    engine.wait_health(name)
    engine.wait_pinned(name, ["tiny-chat"])
    procs = engine.ps(name)
    assert next(p for p in procs if p[0] == 1)[3].startswith("/usr/bin/tini"), procs
    for needle in (RUNNER, "serve"):
        victims = [p[0] for p in engine.ps(name) if is_kind(needle, p[3])]
        assert len(victims) == 1, (needle, engine.ps(name))
        engine.kill_in(name, victims[0])
        # Repaired: a new process of that kind, the model pinned again, Docker healthy.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = [p[0] for p in engine.ps(name) if is_kind(needle, p[3])]
            if now and victims[0] not in now:
                break
            time.sleep(0.2)
        engine.wait_pinned(name, ["tiny-chat"])
        engine.wait_health(name)
        assert victims[0] not in [p[0] for p in engine.ps(name)]
    procs = engine.ps(name)
    assert not [p for p in procs if p[2] == "Z"], procs
    supervisor = [p[0] for p in procs if "ollama-preloader" in p[3] and p[1] == 1]
    assert len(supervisor) == 1, procs
    serve = [p for p in procs if is_serve(p[3])]
    runners = [p for p in procs if p[3].startswith(RUNNER)]
    assert [p[1] for p in serve] == supervisor, procs
    assert len(runners) == 1, procs
    assert runners[0][1] == serve[0][0], procs


def test_docker_stop_exits_0_and_leaves_nothing(
    engine: Engine, app_image: str, registry: Registry, name: str, ports: Ports
) -> None:
    """`docker stop` inside the grace: exit code 0, not the 137 of Docker's SIGKILL at the end
    of it; the supervisor stopped `ollama serve` itself (serve exit 0, which stops its runners);
    not one of the container's processes, nor any process running the image's runner, is left
    on the host."""
    model = registry.name("tiny-chat")
    engine.start_container(
        app_image, name, "-e", f"OLLAMA_PRELOAD_MODELS={model}?insecure=true", ports=ports
    )
    engine.wait_health(name)
    engine.wait_pinned(name, ["tiny-chat"])
    inside = engine.host_pids(name)
    assert any(RUNNER in cmd for cmd in inside.values()), inside
    assert any(is_serve(cmd) for cmd in inside.values()), inside
    # Runners on the host that are not this container's: an earlier test's container may
    # still be dying after its `docker rm -f`. None may be added by this one's stop.
    others = set(host_processes_matching(RUNNER)) - set(inside)
    engine.run("stop", "-t", "30", name)
    state = engine.inspect(name)["State"]
    assert (state["Running"], state["ExitCode"], state["OOMKilled"]) == (False, 0, False)
    assert engine.run("top", name, check=False).returncode != 0  # no process table any more
    assert host_alive(list(inside)) == {}
    assert set(host_processes_matching(RUNNER)) - others == set()
    events = log_events(engine, name)
    assert events["supervisor.stopping"]["signal"] == "SIGTERM", events.keys()
    assert events["server.stopped"]["returncode"] == "0", events["server.stopped"]
    assert "supervisor.stopped" in events


def test_hup_and_models_file_edit_via_a_bind_mounted_dir(
    engine: Engine, app_image: str, registry: Registry, name: str, *, ports: Ports, tmp_path: Path
) -> None:
    """A models file in a bind-mounted directory: after an edit, `docker kill -s HUP` pins the
    new model."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "models.txt").write_text(registry.name("tiny-chat") + "?insecure=true\n")
    engine.start_container(
        app_image, name, "-v", f"{models}:/etc/ollama-preloader/m:ro",
        "-e", "PRELOADER_MODELS_FILE=/etc/ollama-preloader/m/models.txt", ports=ports,
    )  # fmt: skip
    engine.wait_health(name)
    engine.wait_pinned(name, ["tiny-chat"])
    (models / "models.txt").write_text(registry.name("tiny-embed") + "?insecure=true\n")
    engine.run("kill", "-s", "HUP", name)
    engine.wait_pinned(name, ["tiny-embed"])
    engine.wait_health(name)
    assert engine.inspect(name)["State"]["Running"]


def test_baked_image_runs_offline(
    engine: Engine, baked_image: str, name: str, ports: Ports
) -> None:
    """--network none, no models variable: the baked list is pinned from the image's store,
    with the Kubernetes manifests' PRELOADER_MODELS_FILE setting pointing at it, and the
    image's HEALTHCHECK (`ollama-preloader health`) turns healthy."""
    engine.start_container(
        baked_image, name, "-e", "PRELOADER_MODELS_FILE=/etc/ollama-preloader/baked-models.txt",
        network="none", ports=ports,
    )  # fmt: skip
    engine.wait_health(name)
    assert "tiny-embed" in engine.wait_pinned(name, ["tiny-embed"])
    events = log_events(engine, name)
    assert "model.pinned" in events, events.keys()
    assert not [e for e in events if e.startswith("model.pull.")], events.keys()
