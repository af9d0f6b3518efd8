"""Updates on the real Ollama (issue 24): a new version pushed to a kit registry is found, applied
without a moment the name is missing from /api/ps, a hand pull is pinned and its old runner
reported, and a registry that goes away is one warning and `update --check` exit 1.

Each test has a registry of its own, over storage of its own: the pushes change what it
serves, which no other test may see.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from preloader_harness import Run, free_port
from real_harness import Kit, RealLauncher, Registry, access_count, free_port_pair

MODEL = "tiny-chat"


@dataclass
class Setup:
    launch: RealLauncher
    registry: Registry
    tmp: Path

    @property
    def name(self) -> str:
        return self.registry.name(MODEL)

    @property
    def listed(self) -> str:
        return f"{self.name}:latest"

    @property
    def declared(self) -> str:
        return f"{self.name}?insecure=true"

    def push_new_version(self) -> None:
        """Another server makes tiny-chat from tiny-chat2's weights and pushes it as the same
        tag, as a publisher does when it fixes a model (ollama-behaviour.md §9.4)."""
        port = free_port()
        serve = self.launch.serve(
            OLLAMA_HOST=f"127.0.0.1:{port}", OLLAMA_MODELS=str(self.tmp / "pusher")
        )
        models = self.tmp / "pusher-src"
        models.mkdir(exist_ok=True)
        source = self.launch.kit.root / "models" if self.launch.kit else Path()
        shutil.copy(source / "tiny-chat2.gguf", models / "tiny-chat2.gguf")
        shutil.copy(source / "Modelfile.tiny-chat2", models / "Modelfile")
        for args in (
            ["create", self.name, "-f", str(models / "Modelfile")],
            ["push", "--insecure", self.name],
        ):
            done = subprocess.run(
                [str(serve.kit.ollama), *args],
                env=serve.env,
                cwd=models,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        serve.stop()

    def registry_digest(self) -> str:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.registry.port}/v2/library/{MODEL}/manifests/latest",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            method="HEAD",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(resp.headers["Docker-Content-Digest"]).removeprefix("sha256:")

    def manifest_blobs(self) -> set[str]:
        path = self.launch.store / "manifests" / f"127.0.0.1:{self.registry.port}" / "library"
        doc = json.loads((path / MODEL / "latest").read_text())
        return {d["digest"] for d in [doc["config"], *doc["layers"]]}

    def blobs_on_disk(self) -> set[str]:
        return {p.name.replace("-", ":", 1) for p in (self.launch.store / "blobs").iterdir()}


@pytest.fixture
def setup(kit: Kit, tmp_path: Path) -> Iterator[Setup]:
    own = Kit(kit.root, tmp_path / "kitstate")
    registry = Registry(own, free_port_pair()).start()
    launch = RealLauncher(tmp_path, kit=kit, registry=registry)
    try:
        yield Setup(launch, registry, tmp_path)
    finally:
        launch.cleanup()
        if registry.running:
            registry.stop()
        own.script("stop-all", check=False)


def status_model(run: Run) -> dict[str, Any]:
    doc = json.loads(run.cli("status", "--json").stdout)
    model: dict[str, Any] = doc["models"][0]
    return model


def tags(run: Run) -> dict[str, str]:
    return {m["name"]: m["digest"] for m in run.http("GET", "/api/tags")["models"]}


@dataclass
class Sampler:
    """/api/ps every 50 ms in a thread: the names each sample listed."""

    run: Run
    samples: list[list[tuple[str, str]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        def loop() -> None:
            while not self._stop.is_set():
                rows = self.run.http("GET", "/api/ps")["models"]
                self.samples.append([(m["name"], m["digest"]) for m in rows])
                time.sleep(0.05)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)


def start(setup: Setup, **env: str) -> Run:
    full = setup.launch.env(
        OLLAMA_PRELOAD_MODELS=setup.declared, PRELOADER_STATE_DIR=str(setup.tmp / "state")
    )
    run = setup.launch.start(env={**full, **env})
    run.wait_all_pinned()
    return run


def test_check_finds_the_push_and_update_swaps_without_a_gap(setup: Setup) -> None:
    """check: `available` after a push, `update --check` 0 then 100 and nothing pulled;
    `update`: the new copy pinned, the old runner and its blobs gone, no hold, no gap."""
    run = start(setup, PRELOADER_UPDATE="check", PRELOADER_UPDATE_INTERVAL="1s")
    run.wait_for(lambda: status_model(run)["update"]["state"] == "current", "checked: current")
    before = run.cli("update", "--check")
    assert before.returncode == 0, before.stdout + before.stderr
    old_digest = tags(run)[setup.listed]
    old_blobs = setup.manifest_blobs()
    setup.push_new_version()
    new_digest = setup.registry_digest()
    assert new_digest != old_digest
    found = run.wait_for(
        lambda: (m := status_model(run))["update"]["state"] == "available" and m,
        "update available",
    )
    assert found["update"]["registry_digest"] == new_digest
    assert found["update"]["download_bytes"] > 0
    pulls = access_count(run, "POST", "/api/pull")
    after = run.cli("update", "--check")
    assert after.returncode == 100, after.stdout + after.stderr
    assert new_digest[:12] in after.stdout
    assert tags(run)[setup.listed] == old_digest  # nothing pulled
    assert access_count(run, "POST", "/api/pull") == pulls
    assert len(run.events("update.available")) == 1

    with Sampler(run) as sampler:
        applied = run.cli("update")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert sampler.samples
    assert all(any(name == setup.listed for name, _ in s) for s in sampler.samples)
    rows = run.ps()
    assert [(m["name"], m["digest"]) for m in rows] == [(setup.listed, new_digest)]
    assert rows[0]["expires_at"].startswith("23")  # Forever
    assert not [n for n in tags(run) if "preloader-hold" in n]
    gone = old_blobs - setup.manifest_blobs()
    assert gone
    assert not gone & setup.blobs_on_disk()
    run.wait_for(lambda: status_model(run)["digest"] == new_digest, "status: new digest")
    assert status_model(run)["stale_runner"] is None
    assert run.events("model.stale_runner") == []
    assert run.cli("update", "--check").returncode == 0
    assert run.stop() == 0


def test_apply_mode_swaps_in_the_supervisor(setup: Setup) -> None:
    """PRELOADER_UPDATE=apply: the supervisor swaps by itself, one `update.applied`, the name
    listed in every sample, one runner with the new digest at the end."""
    run = start(setup, PRELOADER_UPDATE="apply", PRELOADER_UPDATE_INTERVAL="1s")
    run.wait_for(lambda: status_model(run)["update"]["state"] == "current", "checked: current")
    with Sampler(run) as sampler:
        setup.push_new_version()
        new_digest = setup.registry_digest()
        event = run.wait_event("update.applied")
        time.sleep(0.3)  # a few samples after the swap (not an assertion on timing)
    assert event["new_digest"] == new_digest
    assert all(any(name == setup.listed for name, _ in s) for s in sampler.samples)
    assert [(m["name"], m["digest"]) for m in run.ps()] == [(setup.listed, new_digest)]
    assert not [n for n in tags(run) if "preloader-hold" in n]
    metrics = run.health_get("/metrics")[1]
    assert 'ollama_preloader_updates_total{result="applied"} 1.0' in metrics
    assert run.stop() == 0


def test_a_hand_pull_pins_the_new_copy_and_reports_the_old_runner(setup: Setup) -> None:
    """Without the guard: `ollama pull` by hand; the new copy is pinned, the old runner is
    `stale_runner` in status --json with its digest, one warning with both digests."""
    run = start(setup)
    old_digest = tags(run)[setup.listed]
    setup.push_new_version()
    new_digest = setup.registry_digest()
    pulled = run.ollama("pull", "--insecure", setup.name)
    assert pulled.returncode == 0, pulled.stderr

    def pinned_new() -> bool:
        return any(
            m["name"] == setup.listed
            and m["digest"] == new_digest
            and m["expires_at"].startswith("23")
            for m in run.ps()
        )

    run.wait_for(pinned_new, "the new copy pinned", timeout=20)
    warning = run.wait_event("model.stale_runner")
    assert warning["old_digest"] == old_digest
    assert warning["new_digest"] == new_digest
    # Advice that works: a restart frees it (`ollama stop` would unload the new copy).
    assert "Restart Ollama" in warning["msg"]
    assert "ollama-preloader update" in warning["msg"]
    model = run.wait_for(lambda: (m := status_model(run))["stale_runner"] and m, "stale runner")
    assert model["digest"] == new_digest
    assert model["stale_runner"]["digest"] == old_digest
    assert model["stale_runner"]["size"] > 0
    assert model["stale_runner"]["pid"] in setup.launch.runners()
    table = run.cli("status").stdout
    assert f"old runner {old_digest[:12]} still loaded" in table
    metrics = run.health_get("/metrics")[1]
    assert "ollama_preloader_model_stale_runner_bytes{" in metrics
    assert len(run.events("model.stale_runner")) == 1
    assert run.stop() == 0


def test_a_pull_through_the_guard_is_the_swap(setup: Setup) -> None:
    """With the guard: `ollama pull` by hand (through it) after a push is the swap: one
    runner, the new digest, Forever, the name listed in every sample, no hold, no stale
    runner; the client sees the progress and `success`."""
    run = start(setup, PRELOADER_GUARD="on", PRELOADER_GUARD_UPSTREAM=f"127.0.0.1:{free_port()}")
    old_digest = tags(run)[setup.listed]
    setup.push_new_version()
    new_digest = setup.registry_digest()
    with Sampler(run) as sampler:
        pulled = run.ollama("pull", "--insecure", setup.name)
    assert pulled.returncode == 0, pulled.stderr
    assert "success" in pulled.stderr
    assert "pulling" in pulled.stderr
    event = run.wait_event("update.applied", via="guard")
    assert (event["old_digest"], event["new_digest"]) == (old_digest, new_digest)
    assert sampler.samples
    assert all(any(name == setup.listed for name, _ in s) for s in sampler.samples)
    rows = run.ps()
    assert [(m["name"], m["digest"]) for m in rows] == [(setup.listed, new_digest)]
    assert rows[0]["expires_at"].startswith("23")  # Forever
    assert not [n for n in tags(run) if "preloader-hold" in n]
    model = status_model(run)
    assert model["stale_runner"] is None
    assert model["update"]["state"] == "current"
    assert run.events("model.stale_runner") == []
    assert run.stop() == 0


def test_a_registry_that_goes_away_is_one_warning_and_exit_1(setup: Setup) -> None:
    """Registry stopped: the model stays pinned, `failed` with a reason, one warning over
    several checks; `update --check` exits 1."""
    run = start(setup, PRELOADER_UPDATE="check", PRELOADER_UPDATE_INTERVAL="1s")
    run.wait_for(lambda: status_model(run)["update"]["state"] == "current", "checked: current")
    setup.registry.stop()
    model = run.wait_for(
        lambda: (m := status_model(run))["update"]["state"] == "failed" and m, "check failed"
    )
    assert "cannot reach the registry" in model["update"]["reason"]
    assert model["state"] == "pinned"
    time.sleep(3)  # three more checks (interval 1s): still one warning
    assert len(run.events("update.failed")) == 1
    assert status_model(run)["state"] == "pinned"
    done = run.cli("update", "--check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed" in done.stdout
    assert run.stop() == 0


def test_a_failed_pull_leaves_the_old_copy_pinned_and_no_hold(setup: Setup) -> None:
    """The blob server dies after the check: `update` fails (exit 1) with the pull's reason,
    the old copy stays pinned, the hold is gone."""
    run = start(setup)
    old_digest = tags(run)[setup.listed]
    setup.push_new_version()
    assert run.cli("update", "--check").returncode == 100
    pid_file = setup.registry.kit.state / "run" / f"blobserver-{setup.registry.port}.pid"
    os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)  # the kit's process we started
    done = run.cli("update", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    (row,) = json.loads(done.stdout)["models"]
    assert row["state"] == "failed"
    assert "the pull failed" in row["reason"]
    assert [(m["name"], m["digest"]) for m in run.ps()] == [(setup.listed, old_digest)]
    assert run.ps()[0]["expires_at"].startswith("23")
    assert tags(run) == {setup.listed: old_digest}
    assert run.stop() == 0


def test_a_hold_left_by_a_killed_swap_is_removed_at_start(setup: Setup) -> None:
    """A `preloader-hold/...` name in the store (a supervisor killed mid-swap) is removed at
    the next start, never declared, pinned or warned about."""
    serve = setup.launch.serve(OLLAMA_MODELS=str(setup.launch.store))
    serve.pull(setup.name, insecure=True)
    done = subprocess.run(
        [str(serve.kit.ollama), "cp", setup.name, "preloader-hold/tiny-chat:0123456789ab"],
        env=serve.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    serve.stop()
    run = start(setup)
    removed = run.wait_event("update.hold_removed")
    assert removed["hold"] == "preloader-hold/tiny-chat:0123456789ab"
    assert list(tags(run)) == [setup.listed]
    doc = json.loads(run.cli("status", "--json").stdout)
    assert [m["name"] for m in doc["models"]] == [setup.listed]
    assert doc["undeclared"] == []
    assert [e for e in run.events() if e.get("level") == "warning"] == []
    assert run.stop() == 0
