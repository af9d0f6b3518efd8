"""Sidecar mode (`watch`) end to end: a fake `ollama serve` started on its own, the real CLI
keeping models on it, observed from both sides."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fake_catalogs import SMALL
from fake_ollama.harness import FakeOllama, fake_env, free_port, start_fake
from preloader_harness import FAKE_BIN, WAIT, Launcher, Run
from shipping import systemd

MODELS = "llama3.2,nomic-embed-text"
DECLARED = ["llama3.2:latest", "nomic-embed-text:latest"]
CENTURY = timedelta(days=365 * 100)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeOllama]:
    """A fake `ollama serve` the test starts and stops itself, one model already on disk."""
    with start_fake(tmp_path / "fake", catalog=SMALL, present=["llama3.2"]) as server:
        yield server


def sidecar_env(launcher: Launcher, host: str, **env: str) -> dict[str, str]:
    """The sidecar's environment: OLLAMA_HOST names the fake, and no `ollama` is on PATH."""
    full = launcher.env(OLLAMA_HOST=host, OLLAMA_PRELOAD_MODELS=MODELS, **env)
    # Without the executable the sidecar could not start Ollama even by mistake.
    full["PATH"] = os.pathsep.join(p for p in full["PATH"].split(os.pathsep) if Path(p) != FAKE_BIN)
    return full


def pinned_on(fake: FakeOllama) -> list[str]:
    """The models /api/ps lists with an expiry centuries ahead (keep_alive forever)."""
    now = datetime.now(UTC)
    return sorted(
        m["name"] for m in fake.ps() if datetime.fromisoformat(m["expires_at"]) - now > CENTURY
    )


def loads_since_last_start(fake: FakeOllama) -> list[str]:
    """Models the fake has loaded since its latest `serve_start`."""
    records = fake.records()
    start = max(i for i, r in enumerate(records) if r.get("event") == "serve_start")
    return sorted(r["model"] for r in records[start:] if r.get("event") == "load")


def watch(launcher: Launcher, fake: FakeOllama, **env: str) -> Run:
    return launcher.start(("watch",), env=sidecar_env(launcher, fake.host, **env))


def test_sidecar_pins_the_declared_models(launcher: Launcher, fake: FakeOllama) -> None:
    """Against a server it did not start: pulls the missing model, pins both, starts nothing."""
    run = watch(launcher, fake)
    run.wait_all_pinned()
    assert pinned_on(fake) == DECLARED
    assert [r["body"]["model"] for r in fake.requests("/api/pull")] == ["nomic-embed-text"]
    assert run.wait_event("server.external")["url"] == fake.base_url
    assert run.wait_event("server.ready")["restart"] is False
    assert run.count_events("server.started") == 0
    assert len(fake.events("serve_start")) == 1  # only the one the test started
    assert run.stop() == 0


def test_sidecar_brings_every_model_back_after_a_restart(
    launcher: Launcher, fake: FakeOllama
) -> None:
    """The fake restarts on the same store; the sidecar, still running, pins every model again."""
    run = watch(launcher, fake)
    run.wait_all_pinned()
    pulls = len(fake.requests("/api/pull"))

    fake.restart()  # SIGTERM and start again, as `systemctl restart ollama` does
    fake.wait_for(
        lambda: loads_since_last_start(fake) == DECLARED, timeout=WAIT, what="both models reloaded"
    )
    fake.wait_for(
        lambda: pinned_on(fake) == DECLARED, timeout=WAIT, what="both models pinned again"
    )

    assert run.proc.poll() is None, "the sidecar exited"
    noticed = run.count_events("server.ready", restart=True) + run.count_events(
        "server.models_lost"
    )
    assert noticed >= 1, run.output()
    run.wait_for(
        lambda: all(run.count_events("model.pinned", model=m) >= 2 for m in DECLARED),
        "model.pinned twice for each model",
    )
    assert len(fake.requests("/api/pull")) == pulls  # the store survived: nothing pulled again
    assert run.stop() == 0
    assert fake.proc is not None
    assert fake.proc.poll() is None


def test_sidecar_waits_while_the_server_is_down(launcher: Launcher, fake: FakeOllama) -> None:
    """Server stopped: lost, then unreachable reports with growing gaps; back: models pinned."""
    run = watch(launcher, fake)
    run.wait_all_pinned()
    fake.stop()
    lost = run.wait_event("server.lost")
    assert "connection refused" in lost["error"]
    run.wait_for(lambda: run.count_events("server.unreachable") >= 3, "three reports")
    reports = run.events("server.unreachable")[:3]
    assert all(r["url"] == fake.base_url for r in reports)
    assert "OLLAMA_HOST" in reports[0]["msg"]
    assert "systemctl status ollama" in reports[0]["msg"]
    waited = [r["waited"] for r in reports]
    gaps = [r["next_report_in"] for r in reports]
    assert waited == sorted(waited)
    assert gaps[0] < gaps[1] < gaps[2]  # backoff: the reports get rarer
    assert run.proc.poll() is None

    fake.start()
    run.wait_event("server.ready", restart=True)
    fake.wait_for(
        lambda: pinned_on(fake) == DECLARED, timeout=WAIT, what="both models pinned again"
    )
    assert run.stop() == 0


def test_sidecar_serves_status_health_and_metrics(launcher: Launcher, fake: FakeOllama) -> None:
    """`health`, `/metrics` and `/livez` describe the watched server: up, away, back."""
    run = watch(launcher, fake)
    run.wait_all_pinned()
    ready = run.cli("health")
    assert (ready.returncode, ready.stdout.strip()) == (
        0,
        "ready: all 2 declared models are loaded and pinned",
    )
    status, body, _ = run.health_get("/metrics")
    assert status == 200
    assert "ollama_preloader_server_up 1.0" in body

    fake.stop()
    run.wait_event("server.lost")
    away = run.cli("health")
    assert away.returncode == 1
    assert "not ready" in away.stdout + away.stderr
    status, live = run.health_json("/livez")
    assert status == 503
    assert fake.base_url in live["reason"]
    assert "ollama_preloader_server_up 0.0" in run.health_get("/metrics")[1]

    fake.start()
    fake.wait_for(
        lambda: run.cli("health").returncode == 0, timeout=WAIT, what="ready again after return"
    )
    assert run.stop() == 0


def test_models_are_not_pinned_while_the_server_is_away(
    launcher: Launcher, fake: FakeOllama
) -> None:
    """Server gone: `status`, /status and /metrics stop saying pinned (per-model alerts see the
    outage); back: pinned again."""
    run = watch(launcher, fake)
    run.wait_all_pinned()
    fake.stop()
    run.wait_event("server.lost")
    _, doc = run.health_json("/status")
    assert doc["server_up"] is False
    assert [m["state"] for m in doc["models"]] == ["evicted", "evicted"]
    assert doc["pinned"] == 0
    metrics = run.health_get("/metrics")[1]
    assert 'ollama_preloader_model_pinned{model="llama3.2:latest"} 0.0' in metrics
    table = run.cli("status").stdout
    assert "pinned" not in table.split("not ready")[0], table
    assert "Forever" not in table, table

    fake.start()
    fake.wait_for(lambda: pinned_on(fake) == DECLARED, timeout=WAIT, what="pinned again")
    run.wait_for(lambda: run.health_json("/status")[1]["pinned"] == 2, "pinned in /status")
    assert run.stop() == 0


def test_sidecar_started_before_the_server(launcher: Launcher, tmp_path: Path) -> None:
    """Boot order: the sidecar waits for a server that is not up yet, then pins the models."""
    server = FakeOllama(fake_env(tmp_path / "fake", catalog=SMALL), tmp_path / "fake")
    try:
        run = launcher.start(("watch",), env=sidecar_env(launcher, server.host))
        run.wait_event("server.unreachable")
        assert run.count_events("server.ready") == 0
        server.start()
        run.wait_all_pinned()
        assert pinned_on(server) == DECLARED
        assert run.stop() == 0
    finally:
        server.cleanup()


def test_sigterm_stops_the_sidecar_and_leaves_ollama_running(
    launcher: Launcher, fake: FakeOllama
) -> None:
    """SIGTERM: exit 0; the server, its runners and the pins are untouched."""
    run = watch(launcher, fake)
    run.wait_all_pinned()
    runners = sorted(fake.runner_pids())
    assert run.stop(signal.SIGTERM) == 0
    run.wait_event("supervisor.stopped")
    assert run.count_events("server.stopping") == 0
    assert fake.proc is not None
    assert fake.proc.poll() is None
    assert fake.events("serve_stop") == []
    assert sorted(fake.runner_pids()) == runners
    assert pinned_on(fake) == DECLARED


def test_restart_between_two_looks_is_noticed(launcher: Launcher, fake: FakeOllama) -> None:
    """A restart the probes never saw (sidecar frozen meanwhile) shows as an empty /api/ps."""
    run = watch(launcher, fake, PRELOADER_WATCH_INTERVAL="1")
    run.wait_all_pinned()
    os.kill(run.proc.pid, signal.SIGSTOP)
    try:
        fake.wait_for(lambda: _state(run.proc.pid) == "T", what="sidecar stopped")
        fake.restart()
    finally:
        os.kill(run.proc.pid, signal.SIGCONT)
    fake.wait_for(
        lambda: pinned_on(fake) == DECLARED, timeout=WAIT, what="both models pinned again"
    )
    run.wait_for(lambda: run.count_events("model.pinned") >= 4, "both pinned twice")
    # The server answers again before the sidecar looks: only the empty /api/ps tells.
    assert run.count_events("server.models_lost") == 1
    assert run.count_events("server.lost") == 0
    assert run.stop() == 0


def test_no_probe_traffic_while_the_server_answers(launcher: Launcher, fake: FakeOllama) -> None:
    """While /api/ps answers, no `GET /` is sent: Ollama's own log only sees the watch."""
    run = watch(launcher, fake)
    run.wait_all_pinned()
    probes = len(fake.requests("/", method="GET"))
    watched = len(fake.requests("/api/ps"))
    fake.wait_for(lambda: len(fake.requests("/api/ps")) >= watched + 10, what="ten more looks")
    assert len(fake.requests("/", method="GET")) == probes
    assert run.stop() == 0


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _non_loopback_ipv4() -> str | None:
    """An address of this machine other than loopback (the route to the outside), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP: picks a route, sends nothing
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def test_sidecar_against_a_non_loopback_address(launcher: Launcher, tmp_path: Path) -> None:
    """OLLAMA_HOST with a scheme and a non-loopback address: the models are pinned there."""
    address = _non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    port = free_port()
    with start_fake(
        tmp_path / "fake",
        catalog=SMALL,
        present=["llama3.2", "nomic-embed-text"],
        extra={"OLLAMA_HOST": f"0.0.0.0:{port}"},
    ) as server:
        url = f"http://{address}:{port}"
        run = launcher.start(("watch",), env=sidecar_env(launcher, url))
        run.wait_all_pinned()
        assert run.wait_event("server.ready")["url"] == url
        assert pinned_on(server) == DECLARED
        assert run.stop() == 0


@pytest.mark.parametrize("form", ['"{}"', "'{}'", " {} "])
def test_a_quoted_or_padded_ollama_host_is_trimmed(
    launcher: Launcher, fake: FakeOllama, form: str
) -> None:
    """Quotes (docker --env-file) or spaces: trimmed as Ollama trims them, in
    `watch` and `status`, never a traceback from the client library reading the raw value."""
    host = form.format(fake.host)
    run = launcher.start(("watch",), env=sidecar_env(launcher, host))
    run.wait_all_pinned()
    assert pinned_on(fake) == DECLARED
    status = launcher.run_once(("status",), env=run.env)
    assert "Traceback" not in status.stderr, status.stderr
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in run.output()
    assert run.stop() == 0


def test_unreachable_remote_host_is_reported_not_fatal(launcher: Launcher) -> None:
    """Nothing listens at OLLAMA_HOST: repeated reports naming the URL; SIGTERM still exits 0."""
    address = _non_loopback_ipv4() or "127.0.0.1"
    url = f"http://{address}:{free_port()}"
    run = launcher.start(("watch",), env=sidecar_env(launcher, url))
    run.wait_for(lambda: run.count_events("server.unreachable") >= 2, "two reports")
    first = run.events("server.unreachable")[0]
    assert first["url"] == url
    assert first["error"] == "connection refused (nothing listens on that port)"
    assert url in first["msg"]
    assert run.proc.poll() is None
    assert run.stop() == 0


BAD_CONFIG = [
    ({"OLLAMA_PRELOAD_MODELS": ""}, "OLLAMA_PRELOAD_MODELS is empty"),
    ({"OLLAMA_HOST": "ollama.com"}, "OLLAMA_HOST='ollama.com' is Ollama's cloud"),
    # Quoted as set (issue 27 item 4), not as the bare host it parses to.
    ({"OLLAMA_HOST": "https://ollama.com"}, "OLLAMA_HOST='https://ollama.com' is Ollama's cloud"),
    ({"OLLAMA_HOST": "gpu-box:99999"}, "OLLAMA_HOST='gpu-box:99999': invalid port"),
    # Ollama itself fails on these (a lookup of '127.0.0.1:1:'; a random port for 0).
    ({"OLLAMA_HOST": "127.0.0.1:11434:"}, "OLLAMA_HOST='127.0.0.1:11434:': not a host:port"),
    ({"OLLAMA_HOST": "127.0.0.1:0"}, "OLLAMA_HOST='127.0.0.1:0': invalid port '0'"),
    ({"OLLAMA_HOST": "127.0.0.1:00"}, "OLLAMA_HOST='127.0.0.1:00': invalid port '00'"),
    ({"PRELOADER_PROFILE": "gpu"}, "PRELOADER_PROFILE='gpu' sets variables of an `ollama serve`"),
]


@pytest.mark.parametrize(("env", "fragment"), BAD_CONFIG)
def test_bad_sidecar_configuration_exits_2(
    launcher: Launcher, env: dict[str, str], fragment: str
) -> None:
    """Exit 2 with one line naming the variable, before any request is sent."""
    full = sidecar_env(launcher, "127.0.0.1:1")
    full.update(env)
    result = launcher.run_once(("watch",), env=full)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ollama-preloader: error: ")
    assert fragment in lines[0]


def test_the_units_command_runs_as_systemd_would(launcher: Launcher, fake: FakeOllama) -> None:
    """ExecStart with the EnvironmentFile example, systemd's PATH and cwd /: models pinned."""
    assigned, _ = systemd.environment_file()
    argv = systemd.exec_start()
    argv[0] = str(Path(sys.executable).parent / Path(argv[0]).name)  # the installed command
    # Only what systemd gives a service; Ollama and the health endpoints on free ports.
    env = {
        "PATH": systemd.SERVICE_PATH,
        "LANG": "C.UTF-8",
        **assigned,
        "OLLAMA_HOST": fake.host,
        "PRELOADER_HEALTH_PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    run = Run(proc=proc, env=env, workdir=Path("/"))
    run.start_reader()
    launcher.runs.append(run)
    # Plain lines, as journald would store them (not a terminal, no PRELOADER_LOG_FORMAT).
    run.wait_for(lambda: any(" preload.complete " in line for line in run.lines), "preloaded")
    assert pinned_on(fake) == DECLARED
    assert run.stop(signal.SIGTERM) == 0  # systemd's KillSignal: a clean stop


def test_a_model_pinned_before_the_start_shows_its_kind(
    launcher: Launcher, fake: FakeOllama
) -> None:
    """Issue 26 (small): a model already loaded and pinned when `watch` starts is not loaded
    again, yet `status` shows its kind (from /api/show), not `-`."""
    fake.request("POST", "/api/generate", {"model": "llama3.2", "keep_alive": -1})
    env = sidecar_env(launcher, fake.host)
    env["OLLAMA_PRELOAD_MODELS"] = "llama3.2"
    run = launcher.start(("watch",), env=env)
    run.wait_event("model.pinned", model="llama3.2:latest", already=True)
    run.wait_event("model.kind", model="llama3.2:latest")
    doc = json.loads(run.cli("status", "--json").stdout)
    assert [(m["name"], m["kind"], m["state"]) for m in doc["models"]] == [
        ("llama3.2:latest", "completion", "pinned")
    ]
    row = next(line for line in run.cli("status").stdout.splitlines() if "llama3.2" in line)
    assert row.split()[1:3] == ["completion", "pinned"]
    assert loads_since_last_start(fake) == ["llama3.2:latest"]  # the test's load only
