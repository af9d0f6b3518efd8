"""`ollama-preloader health` and the /livez, /readyz endpoints, against the fake `ollama`."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

from fake_catalogs import SMALL, model, write_catalog
from preloader_harness import Launcher, Run


def catalog_env(
    launcher: Launcher, models: dict[str, dict[str, object]] | None = None, **env: str
) -> dict[str, str]:
    path = write_catalog(launcher.tmp / "catalog.json", {**SMALL, **(models or {})})
    return launcher.env(FAKE_OLLAMA_CATALOG=path, **env)


def health(run: Run, *args: str) -> tuple[int, str]:
    result = run.cli("health", *args)
    return result.returncode, (result.stdout + result.stderr).strip()


def test_health_while_ollama_is_starting(launcher: Launcher) -> None:
    """Before `ollama serve` answers: not ready (exit 1, reason), but live (exit 0)."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2", FAKE_OLLAMA_STARTUP_DELAY="60")
    run = launcher.start(env=env)
    run.wait_event("server.started")
    # `ollama serve` is spawned first; the endpoints listen once the supervisor is built.
    run.wait_event("health.listening")
    names = [event["event"] for event in run.events()]
    assert names.index("server.started") < names.index("health.listening")
    code, out = health(run)
    assert code == 1
    assert out == "not ready: ollama serve is not ready"
    code, out = health(run, "--live")
    assert code == 0, out
    assert out.startswith("live: ")
    assert run.stop() == 0


def test_health_while_a_model_loads(launcher: Launcher) -> None:
    """A model being loaded: exit 1 naming it; liveness is unaffected."""
    env = catalog_env(
        launcher,
        {"llama3.2:latest": model(size=2.0, load_seconds=60)},
        OLLAMA_PRELOAD_MODELS="llama3.2",
        FAKE_OLLAMA_PRESENT="llama3.2",
    )
    run = launcher.start(env=env)
    run.wait_event("model.loading", model="llama3.2:latest")
    code, out = health(run)
    assert (code, out) == (1, "not ready: llama3.2:latest loading")
    assert health(run, "--live")[0] == 0
    assert run.stop() == 0


def test_health_when_all_pinned(launcher: Launcher) -> None:
    """Every declared model pinned: exit 0 with a one-line message."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2,nomic-embed-text")
    run = launcher.start(env=env)
    run.wait_all_pinned()
    code, out = health(run)
    assert (code, out) == (0, "ready: all 2 declared models are loaded and pinned")
    assert health(run, "--live")[0] == 0
    assert run.stop() == 0


def test_health_with_one_failed_model(launcher: Launcher) -> None:
    """One model failed: exit 1 with its reason, even though the others are pinned."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2,no-such-model:7b")
    run = launcher.start(env=env)
    run.wait_event("model.failed", model="no-such-model:7b")
    run.wait_event("model.pinned", model="llama3.2:latest")
    code, out = health(run)
    assert code == 1
    assert out.startswith("not ready: no-such-model:7b failed: not found in the registry")
    assert "\n" not in out
    assert health(run, "--live")[0] == 0
    assert run.stop() == 0


def test_health_and_status_without_a_supervisor(launcher: Launcher) -> None:
    """Nobody listening: exit 1 and the message says so, with the address asked."""
    env = launcher.env()
    port = env["PRELOADER_HEALTH_PORT"]
    for args in (("health",), ("health", "--live"), ("status",), ("status", "--json")):
        result = launcher.run_once(args, env=env)
        assert result.returncode == 1, args
        assert f"supervisor not running (no answer on 127.0.0.1:{port})" in result.stderr, args
        assert result.stdout == ""


def test_health_reads_the_port_from_dotenv(launcher: Launcher) -> None:
    """`health` finds the port in `.env`, as the supervisor does, when the environment has none."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2")
    run = launcher.start(env=env)
    run.wait_all_pinned()
    (run.workdir / ".env").write_text(f"PRELOADER_HEALTH_PORT={env['PRELOADER_HEALTH_PORT']}\n")
    bare = {k: v for k, v in env.items() if k != "PRELOADER_HEALTH_PORT"}
    result = launcher.run_once(("health",), env=bare)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ready: ")
    assert run.stop() == 0


def test_health_configuration_errors_exit_2(launcher: Launcher) -> None:
    """Endpoints turned off, or a port that is not one: exit 2 naming the variable."""
    for value, fragment in (
        ("off", "PRELOADER_HEALTH_PORT=off: the supervisor's health endpoints are turned off"),
        ("lots", "PRELOADER_HEALTH_PORT='lots': must be a TCP port"),
    ):
        result = launcher.run_once(("health",), env=launcher.env(PRELOADER_HEALTH_PORT=value))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"ollama-preloader: error: {fragment}")


def test_port_in_use_exits_2_before_ollama_starts(launcher: Launcher) -> None:
    """A taken health port: one line naming PRELOADER_HEALTH_PORT, exit 2, no `ollama serve`."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["PRELOADER_HEALTH_PORT"])))
        taken.listen()
        result = launcher.run_once(env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    last = lines[-1]
    assert last.startswith("ollama-preloader: error: PRELOADER_HEALTH_PORT=")
    assert "already in use" in last
    assert "set PRELOADER_HEALTH_PORT to a free port" in last
    assert not Path(env["FAKE_OLLAMA_LOG"]).exists()


def test_endpoints_can_be_turned_off(launcher: Launcher) -> None:
    """PRELOADER_HEALTH_PORT=off: the supervisor works as before, with no listener."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2", PRELOADER_HEALTH_PORT="off")
    run = launcher.start(env=env)
    run.wait_all_pinned()
    assert run.events("health.listening") == []
    assert run.stop() == 0


def test_readyz_flips_with_the_last_pin_and_an_eviction(launcher: Launcher) -> None:
    """/readyz: 503 with a JSON reason until the last model is pinned, 200 then, 503 again
    while an evicted model is put back, and 200 once it is."""
    env = catalog_env(
        launcher,
        {"devstral:latest": model(size=14.3, load_seconds=1.5)},
        OLLAMA_PRELOAD_MODELS="llama3.2,devstral",
        FAKE_OLLAMA_PRESENT="llama3.2,devstral",
    )
    run = launcher.start(env=env)
    run.wait_event("health.listening")

    seen: list[tuple[int, dict[str, object]]] = []

    def answer(status: int) -> dict[str, object] | None:
        code, body = run.health_json("/readyz")
        seen.append((code, body))
        return body if code == status else None

    waiting = run.wait_for(lambda: answer(503), "a 503")
    assert waiting["ready"] is False
    assert isinstance(waiting["reason"], str)
    assert waiting["reason"]
    ready = run.wait_for(lambda: answer(200), "/readyz 200")
    assert ready == {"ready": True, "message": "all 2 declared models are loaded and pinned"}
    # 200 only once the last model was pinned: every earlier answer was a 503.
    first_ok = next(i for i, (code, _) in enumerate(seen) if code == 200)
    assert all(code == 503 for code, _ in seen[:first_ok])
    run.wait_event("preload.complete")
    assert {m["name"]: m["expires_at"][:2] for m in run.ps()} == {
        "llama3.2:latest": "23",
        "devstral:latest": "23",
    }

    run.http("POST", "/_fake/evict", {"model": "devstral"})
    evicted = run.wait_for(lambda: answer(503), "503 after the eviction")
    assert "devstral:latest" in str(evicted["reason"])
    run.wait_for(lambda: answer(200), "200 once devstral is back")
    # The log line may reach the harness's reader a moment after /readyz answers.
    run.wait_for(
        lambda: run.count_events("model.pinned", model="devstral:latest") == 2,
        "devstral's second model.pinned",
    )

    code, body = run.health_json("/livez")
    assert (code, body["live"]) == (200, True)
    assert run.stop() == 0
    assert run.count_events("model.pinned", model="devstral:latest") == 2


def test_endpoints_are_read_only_get_and_head(launcher: Launcher) -> None:
    """HEAD answers like GET without a body; other methods get 405, unknown paths 404."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2")
    run = launcher.start(env=env)
    run.wait_all_pinned()
    status, body, headers = run.health_get("/readyz", method="HEAD")
    assert (status, body) == (200, "")
    assert int(headers["Content-Length"]) > 0
    for path in ("/readyz", "/livez", "/status", "/metrics"):
        status, _, headers = run.health_get(path, method="POST")
        assert status == 405, path
        assert headers["Allow"] == "GET, HEAD"
    status, body, _ = run.health_get("/nothing-here")
    assert status == 404
    assert "/readyz" in json.loads(body)["error"]
    # Nothing was changed by those requests: the model is still pinned, loaded once.
    assert run.health_json("/readyz")[0] == 200
    assert len(run.requests("/api/generate")) == 1
    assert run.stop() == 0


def test_livez_fails_while_ollama_serve_is_down(launcher: Launcher) -> None:
    """/livez is 503 between `ollama serve` dying and its restart, 200 again after."""
    env = catalog_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2",
        FAKE_OLLAMA_PRESENT="llama3.2",
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    serve_pid = run.fake_events("serve_start")[-1]["pid"]
    os.kill(serve_pid, signal.SIGKILL)
    run.wait_event("server.exited")

    def status_of_livez(expected: int) -> dict[str, object] | None:
        code, body = run.health_json("/livez")
        return body if code == expected else None

    down = run.wait_for(lambda: status_of_livez(503), "/livez 503")
    assert "ollama serve is not running" in str(down["reason"])
    run.wait_event("server.ready", restart=True)
    run.wait_for(lambda: status_of_livez(200), "/livez 200 again")
    assert run.stop() == 0
