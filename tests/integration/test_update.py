"""Updates against the fake: bad settings, a registry that cannot be reached, and a pull done
by hand while the model is pinned (the fake keeps the old runner beside the new one)."""

from __future__ import annotations

import http.client
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_catalogs import GB, SMALL, model, write_catalog
from fake_ollama.harness import start_fake
from fake_ollama.registry import FakeRegistry
from preloader_harness import FAKE_BIN, Launcher, Run, free_port

TB = 1000 * GB


class Sampler:
    """/api/ps in a thread until the block ends: the names each sample listed."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.samples: list[set[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.samples.append({m["name"] for m in self.run.ps()})

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def start(launcher: Launcher, models: str, catalog: dict[str, Any], **env: str) -> Run:
    full = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json", catalog),
        OLLAMA_PRELOAD_MODELS=models,
        PRELOADER_STATE_DIR=str(launcher.tmp / "state"),
        **env,
    )
    return launcher.start(env=full)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PRELOADER_UPDATE", "sometimes"),
        ("PRELOADER_UPDATE_INTERVAL", "daily"),
        ("PRELOADER_UPDATE_WINDOW", "2am-5am"),
    ],
)
@pytest.mark.parametrize("command", [("run",), ("update", "--check")])
def test_bad_update_settings_exit_2_naming_the_variable(
    launcher: Launcher, variable: str, value: str, command: tuple[str, ...]
) -> None:
    env = launcher.env(OLLAMA_PRELOAD_MODELS="llama3.2")
    env[variable] = value
    done = launcher.run_once(command, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{variable}={value!r}" in lines[0]


def test_update_without_models_or_with_a_bad_name_exits_2(launcher: Launcher) -> None:
    done = launcher.run_once(("update", "--check"))
    assert done.returncode == 2
    assert "no models to update" in done.stderr
    bad = launcher.run_once(("update", "--check", "bad name!"))
    assert bad.returncode == 2
    assert "'bad name!'" in bad.stderr


def test_an_unreachable_registry_is_failed_once_and_the_model_stays_pinned(
    launcher: Launcher,
) -> None:
    """PRELOADER_UPDATE=check against a registry nobody listens on: `failed` with the
    reason, one warning over several checks, still pinned; `update --check` exits 1."""
    name = f"127.0.0.1:{free_port()}/library/tiny:latest"
    catalog = {name: SMALL["llama3.2:latest"]}
    run = start(
        launcher,
        f"{name}?insecure=true",
        catalog,
        PRELOADER_UPDATE="check",
        PRELOADER_UPDATE_INTERVAL="200ms",
    )
    run.wait_all_pinned()
    run.wait_event("update.failed")

    def checks() -> float:
        text = run.health_get("/metrics")[1]
        line = next(x for x in text.splitlines() if 'update_checks_total{result="failed"}' in x)
        return float(line.split()[-1])

    run.wait_for(lambda: checks() >= 4, "four failed checks")
    assert len(run.events("update.failed")) == 1
    doc = json.loads(run.cli("status", "--json").stdout)
    (model,) = doc["models"]
    assert model["state"] == "pinned"
    assert model["update"]["state"] == "failed"
    assert "cannot reach the registry 127.0.0.1" in model["update"]["reason"]
    assert "failed" in run.cli("status").stdout.splitlines()[1]
    done = run.cli("update", "--check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert run.stop() == 0


def test_a_hand_pull_pins_the_new_copy_and_reports_the_old_runner(launcher: Launcher) -> None:
    """`ollama pull` of a pinned model after the registry changed: the new copy is loaded and
    pinned, the old runner is `stale_runner` (its digest), one warning with both digests."""
    catalog = dict(SMALL)
    run = start(launcher, "llama3.2", catalog)
    run.wait_all_pinned()
    (old,) = run.ps()
    catalog["llama3.2:latest"] = {**SMALL["llama3.2:latest"], "revision": 2}
    write_catalog(launcher.tmp / "catalog.json", catalog)
    assert run.ollama("pull", "llama3.2").returncode == 0
    warning = run.wait_event("model.stale_runner")
    new = next(m for m in run.ps() if m["digest"] != old["digest"])
    assert warning["old_digest"] == old["digest"]
    assert warning["new_digest"] == new["digest"]
    assert new["expires_at"].startswith(("22", "23"))
    model = run.wait_for(
        lambda: (
            (m := json.loads(run.cli("status", "--json").stdout)["models"][0])["stale_runner"] and m
        ),
        "stale_runner in status",
    )
    assert model["stale_runner"]["digest"] == old["digest"]
    assert model["digest"] == new["digest"]
    metrics = run.health_get("/metrics")[1]
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith('ollama_preloader_model_stale_runner_bytes{model="llama3.2:latest"}')
    )
    assert float(line.split()[-1]) == old["size"]
    assert run.stop() == 0


def guarded_then_new_revision(
    launcher: Launcher, catalog: dict[str, Any]
) -> tuple[Run, dict[str, Any]]:
    """`run` with the guard, llama3.2 pinned; then the registry has a new revision of it.
    Returns the run and the old copy's /api/ps row."""
    run = start(
        launcher,
        "llama3.2",
        catalog,
        PRELOADER_GUARD="on",
        PRELOADER_GUARD_UPSTREAM=f"127.0.0.1:{free_port()}",
    )
    run.wait_all_pinned()
    (old,) = run.ps()
    catalog["llama3.2:latest"] = {**catalog["llama3.2:latest"], "revision": 2}
    write_catalog(launcher.tmp / "catalog.json", catalog)
    return run, old


def test_a_pull_through_the_guard_is_the_swap(launcher: Launcher) -> None:
    """`ollama pull` of a pinned model through the guard after the registry changed: the new
    copy is pinned before the old one goes, so one runner (the new digest, Forever), no stale
    runner, no hold left; the client sees the pull's progress and `success`."""
    catalog = dict(SMALL)
    run, old = guarded_then_new_revision(launcher, catalog)
    with Sampler(run) as sampler:
        pulled = run.ollama("pull", "llama3.2")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    shown = pulled.stderr.splitlines()
    assert shown[-1] == "success"
    assert any(line.startswith("pulling ") and "100%" in line for line in shown)
    assert sampler.samples
    assert all("llama3.2:latest" in names for names in sampler.samples)
    applied = run.wait_event("update.applied", via="guard")
    (new,) = run.ps()
    assert new["digest"] != old["digest"]
    assert applied["old_digest"] == old["digest"]
    assert applied["new_digest"] == new["digest"]
    assert new["expires_at"].startswith(("22", "23"))
    tags = [m["name"] for m in run.http("GET", "/api/tags")["models"]]
    assert not [t for t in tags if t.startswith("preloader-hold/")]
    model = json.loads(run.cli("status", "--json").stdout)["models"][0]
    assert model["state"] == "pinned"
    assert model["stale_runner"] is None
    assert model["update"]["state"] == "current"
    assert not run.events("model.stale_runner")
    # Again, without streaming: nothing new, one answer as Ollama gives it.
    assert run.http("POST", "/api/pull", {"model": "llama3.2", "stream": False}) == {
        "status": "success"
    }
    run.wait_event("update.current", via="guard")
    # A model that is not declared is pulled as it would be without the guard.
    assert run.ollama("pull", "devstral").returncode == 0
    assert len(run.events("guard.pull.swap")) == 2
    assert any(e.get("model") == "devstral:latest" for e in run.fake_events("pull_success"))
    assert run.stop() == 0


def test_a_failed_pull_through_the_guard_is_an_error_line_and_the_old_copy_serves(
    launcher: Launcher,
) -> None:
    """The registry's download breaks mid-pull: the client gets Ollama's `error` line (and
    `ollama pull` fails), the old copy stays pinned and answers, no hold is left."""
    catalog = dict(SMALL)
    run, old = guarded_then_new_revision(launcher, catalog)
    run.set_faults(
        {"pull_fail": {"llama3.2": {"times": 1, "after_fraction": 0.5, "message": "EOF"}}}
    )
    pulled = run.ollama("pull", "llama3.2")
    assert pulled.returncode != 0
    assert "EOF" in pulled.stderr
    failed = run.wait_event("update.failed", via="guard")
    assert "the old copy still serves" in failed["reason"]
    assert [(m["name"], m["digest"]) for m in run.ps()] == [(old["name"], old["digest"])]
    answer = run.http(
        "POST", "/api/generate", {"model": "llama3.2", "prompt": "hi", "stream": False}
    )
    assert answer["done"] is True
    tags = [m["name"] for m in run.http("GET", "/api/tags")["models"]]
    assert not [t for t in tags if t.startswith("preloader-hold/")]
    model_ = status_model(run)
    assert model_["state"] == "pinned"
    assert model_["update"]["state"] == "failed"
    assert run.stop() == 0


def test_a_pull_through_the_guard_keeps_the_clients_insecure(launcher: Launcher) -> None:
    """A model on a plain-HTTP registry, declared without `?insecure=true` (it was on disk):
    a client's pull with `"insecure": true` works through the guard as it does without it."""
    name = f"127.0.0.1:{free_port()}/library/tiny:latest"
    run = start(
        launcher,
        name,
        {name: SMALL["llama3.2:latest"]},
        FAKE_OLLAMA_PRESENT=name,
        PRELOADER_GUARD="on",
        PRELOADER_GUARD_UPSTREAM=f"127.0.0.1:{free_port()}",
    )
    run.set_faults({"registry": {name.split("/", maxsplit=1)[0]: "http"}})
    run.wait_all_pinned()
    body = {"model": name, "insecure": True, "stream": False}
    assert run.http("POST", "/api/pull", body) == {"status": "success"}
    run.wait_event("update.current", via="guard")
    assert run.stop() == 0


def test_a_client_that_leaves_mid_pull_does_not_stop_the_swap(launcher: Launcher) -> None:
    """The client of a pull through the guard goes away after the first line: the swap goes
    on to the end (new copy pinned alone, no hold), as the supervisor's own update would."""
    catalog = {"llama3.2:latest": model(size=2.0, family="llama", pull_seconds=2.0)}
    run, old = guarded_then_new_revision(launcher, catalog)
    host, port = run.env["OLLAMA_HOST"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/api/pull", body=b'{"model":"llama3.2"}')
    resp = conn.getresponse()
    assert resp.status == 200
    first = json.loads(resp.readline())
    assert "status" in first
    conn.close()  # gone, well before the two-second download ends
    applied = run.wait_event("update.applied", via="guard")
    assert applied["old_digest"] == old["digest"]
    (new,) = run.ps()
    assert new["digest"] == applied["new_digest"]
    assert new["expires_at"].startswith(("22", "23"))
    tags = [m["name"] for m in run.http("GET", "/api/tags")["models"]]
    assert not [t for t in tags if t.startswith("preloader-hold/")]
    assert run.stop() == 0


@pytest.fixture
def registry(launcher: Launcher) -> Iterator[FakeRegistry]:
    """A registry serving the catalog's manifests, for the update checks."""
    fake = FakeRegistry(str(launcher.tmp / "catalog.json")).start()
    yield fake
    fake.stop()


def status_model(run: Run) -> dict[str, Any]:
    model_: dict[str, Any] = json.loads(run.cli("status", "--json").stdout)["models"][0]
    return model_


def checks(run: Run, result: str) -> float:
    text = run.health_get("/metrics")[1]
    line = next(
        (x for x in text.splitlines() if f'update_checks_total{{result="{result}"}}' in x), None
    )
    return float(line.split()[-1]) if line else 0.0


def test_an_update_without_the_disk_space_fails_once_and_the_old_copy_serves(
    launcher: Launcher, registry: FakeRegistry
) -> None:
    """PRELOADER_UPDATE=apply and the registry's new version needs more disk than there is:
    `failed` with the figures, one warning over several rounds, nothing pulled, no hold, and
    the old copy still pinned and answering."""
    name = registry.name("tiny") + ":latest"
    catalog = {name: model(size=2.0, family="llama")}
    run = start(
        launcher,
        f"{name}?insecure=true",
        catalog,
        PRELOADER_UPDATE="apply",
        PRELOADER_UPDATE_INTERVAL="200ms",
    )
    run.wait_all_pinned()
    (old,) = run.ps()
    run.wait_for(lambda: status_model(run)["update"]["state"] == "current", "current")
    catalog[name] = {**catalog[name], "revision": 2, "size": 1000 * TB}  # a petabyte
    write_catalog(launcher.tmp / "catalog.json", catalog)
    failed = run.wait_event("update.failed", stage="apply")
    assert "not enough disk space" in failed["reason"]
    assert "TB to download" in failed["reason"]  # the figures: what and where
    assert f"free in {launcher.tmp / 'models'}" in failed["reason"]
    assert "nothing was pulled" in failed["reason"]
    seen = checks(run, "available")
    run.wait_for(lambda: checks(run, "available") >= seen + 3, "three more rounds")
    assert len(run.events("update.failed")) == 1
    assert len(run.events("update.available")) == 1
    model_ = status_model(run)
    assert model_["state"] == "pinned"
    assert model_["update"]["state"] == "failed"
    assert "not enough disk space" in model_["update"]["reason"]
    assert [(m["name"], m["digest"]) for m in run.ps()] == [(old["name"], old["digest"])]
    answer = run.http("POST", "/api/generate", {"model": name, "prompt": "hi", "stream": False})
    assert answer["done"] is True
    assert len(run.fake_events("pull_success")) == 1  # the first pull only
    tags = [m["name"] for m in run.http("GET", "/api/tags")["models"]]
    assert not [t for t in tags if t.startswith("preloader-hold/")]
    assert run.stop() == 0


def test_an_update_whose_copies_do_not_fit_together_unloads_the_old_first(
    launcher: Launcher, registry: FakeRegistry
) -> None:
    """A 10 GB GPU holding the 6.6 GB model: the new copy cannot load beside the old one, so
    the old one is unloaded first and said so; meanwhile `status` shows it loading (not
    ready), then the new copy is pinned, alone."""
    name = registry.name("tiny") + ":latest"
    catalog = {name: model(size=6.0, family="llama", load_seconds=1.0)}
    run = start(
        launcher,
        f"{name}?insecure=true",
        catalog,
        FAKE_OLLAMA_VRAM=str(10 * GB),
        PRELOADER_UPDATE="apply",
        PRELOADER_UPDATE_INTERVAL="200ms",
    )
    run.wait_all_pinned()
    (old,) = run.ps()
    run.wait_for(lambda: status_model(run)["update"]["state"] == "current", "current")
    states: list[tuple[str, str | None]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            doc = run.health_json("/status")[1]
            states.append((doc["models"][0]["state"], doc["models"][0]["reason"]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        catalog[name] = {**catalog[name], "revision": 2}
        write_catalog(launcher.tmp / "catalog.json", catalog)
        warned = run.wait_event("update.unload_first")
        applied = run.wait_event("update.applied")
    finally:
        stop.set()
        sampler.join(timeout=10)
    assert warned["level"] == "warning"
    assert "do not both fit" in warned["msg"]
    assert applied["unloaded_first"] is True
    assert applied["old_digest"] == old["digest"]
    assert any(state == "loading" and "unloaded first" in (why or "") for state, why in states)
    (new,) = run.ps()
    assert new["digest"] == applied["new_digest"] != old["digest"]
    assert new["expires_at"].startswith(("22", "23"))
    model_ = status_model(run)
    assert model_["state"] == "pinned"
    assert model_["update"]["state"] == "current"
    assert run.stop() == 0


@pytest.mark.parametrize("store_visible", [True, False])
def test_watch_notices_a_hand_pull_soon(launcher: Launcher, store_visible: bool) -> None:
    """`watch` with an hour's refresh, and a hand `ollama pull` of the pinned model. With the
    store visible (mounted) the rewritten manifest is seen at once: the new copy pinned, the
    old runner reported. Without it nothing is seen until a client loads the new copy; then
    its runner's digest makes the sidecar read /api/tags first, so the old one, not the new,
    is reported stale."""
    catalog = dict(SMALL)
    with start_fake(launcher.tmp / "fake", catalog=catalog, present=["llama3.2"]) as fake:
        env = launcher.env(
            OLLAMA_HOST=fake.host,
            OLLAMA_PRELOAD_MODELS="llama3.2",
            PRELOADER_REFRESH_INTERVAL="1h",
            OLLAMA_MODELS=str(fake.models_dir if store_visible else launcher.tmp / "none"),
        )
        env["PATH"] = os.pathsep.join(
            p for p in env["PATH"].split(os.pathsep) if Path(p) != FAKE_BIN
        )
        run = launcher.start(("watch",), env=env)
        run.wait_all_pinned()
        (old,) = fake.ps()
        revised = {**SMALL["llama3.2:latest"], "revision": 2}
        fake.set_catalog({**catalog, "llama3.2:latest": revised})
        assert fake.cli("pull", "llama3.2").returncode == 0
        if not store_visible:
            reads = len(fake.requests("/api/ps"))
            run.wait_for(lambda: len(fake.requests("/api/ps")) >= reads + 10, "10 ps reads")
            assert not run.events("model.stale_runner")
            assert status_model(run)["digest"] == old["digest"]
            assert fake.request("POST", "/api/generate", {"model": "llama3.2"})[0] == 200
        warning = run.wait_event("model.stale_runner")
        assert warning["old_digest"] == old["digest"]
        assert warning["new_digest"] != old["digest"]
        pinned = run.wait_for(
            lambda: [
                m
                for m in fake.ps()
                if m["digest"] == warning["new_digest"] and m["expires_at"] > "2200"
            ],
            "the new copy pinned",
        )
        assert pinned
        model_ = status_model(run)
        assert model_["digest"] == warning["new_digest"]
        assert model_["stale_runner"]["digest"] == old["digest"]
        assert run.stop() == 0
