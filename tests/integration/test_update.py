"""Updates against the fake: bad settings, a registry that cannot be reached, and a pull done
by hand while the model is pinned (the fake keeps the old runner beside the new one)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fake_catalogs import SMALL, write_catalog
from preloader_harness import Launcher, Run, free_port


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
