"""`ollama-preloader pull` (build-time baking) end to end against the fake `ollama`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fake_catalogs import model, write_catalog
from fake_ollama.harness import read_jsonl, start_fake
from preloader_harness import Launcher, processes_in_group

LOADS = ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings")


def pull_env(launcher: Launcher, models: str, **env: str) -> dict[str, str]:
    return launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"),
        OLLAMA_PRELOAD_MODELS=models,
        **env,
    )


def log_events(result: subprocess.CompletedProcess[str], name: str) -> list[dict[str, Any]]:
    """The supervisor's JSON events (on stderr) with this name."""
    out = []
    for line in result.stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                out.append(event)
    return out


def fake_records(env: dict[str, str]) -> list[dict[str, Any]]:
    return read_jsonl(env["FAKE_OLLAMA_LOG"])


def requested(env: dict[str, str], *paths: str) -> list[str]:
    """Model names of the requests the fake received on these paths."""
    return [r["body"]["model"] for r in fake_records(env) if r.get("path") in paths]


def serve_pids(env: dict[str, str]) -> list[int]:
    return [r["pid"] for r in fake_records(env) if r.get("event") == "serve_start"]


def store_listing(tmp: Path, env: dict[str, str]) -> list[str]:
    """`ollama list` from a fresh fake server on the same model store."""
    with start_fake(tmp / "check", models_dir=Path(env["OLLAMA_MODELS"])) as fake:
        listed = fake.cli("list")
    assert listed.returncode == 0, listed.stderr
    return sorted(line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip())


def test_pull_bakes_every_model_and_loads_none(launcher: Launcher) -> None:
    """Every declared model lands in OLLAMA_MODELS; nothing is loaded; the server is gone."""
    env = pull_env(launcher, "llama3.2,nomic-embed-text")
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 0, result.stderr

    assert sorted(requested(env, "/api/pull")) == ["llama3.2", "nomic-embed-text"]
    assert requested(env, *LOADS) == []
    assert not [r for r in fake_records(env) if r.get("event") == "load"]
    (pid,) = serve_pids(env)
    assert processes_in_group(pid) == []
    assert [r for r in fake_records(env) if r.get("event") == "serve_stop"]
    done = log_events(result, "bake.complete")
    assert [(e["pulled"], e["present"]) for e in done] == [(2, 0)]
    assert len(log_events(result, "model.pull.complete")) == 2
    assert store_listing(launcher.tmp, env) == ["llama3.2:latest", "nomic-embed-text:latest"]


def test_a_model_that_cannot_be_pulled_exits_4_naming_it(launcher: Launcher) -> None:
    """Exit 4 with one line naming the failed model; the other is still pulled."""
    env = pull_env(launcher, "no-such-model,llama3.2")
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 4, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ollama-preloader: error: 1 of 2 models could not be pulled: ")
    assert "no-such-model:latest (not found in the registry" in last
    assert "llama3.2" not in last
    assert log_events(result, "bake.failed")[0]["failed"] == ["no-such-model:latest"]
    (pid,) = serve_pids(env)
    assert processes_in_group(pid) == []
    assert store_listing(launcher.tmp, env) == ["llama3.2:latest"]


@pytest.mark.parametrize(("attempts", "code"), [("5", 0), ("2", 4)])
def test_transient_failures_are_retried_up_to_the_attempts(
    launcher: Launcher, attempts: str, code: int
) -> None:
    """Two broken streams: five attempts get through, two attempts give up (exit 4)."""
    env = pull_env(launcher, "llama3.2", PRELOADER_PULL_ATTEMPTS=attempts)
    faults = {"pull_fail": {"llama3.2": {"times": 2, "after_fraction": 0.5}}}
    Path(env["FAKE_OLLAMA_FAULTS"]).write_text(json.dumps(faults))
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == code, result.stderr
    assert len(requested(env, "/api/pull")) == min(3, int(attempts))
    assert len(log_events(result, "model.pull.retry")) == min(2, int(attempts) - 1)
    if code:
        assert "llama3.2:latest (pull failed: " in result.stderr.splitlines()[-1]


def test_models_already_in_the_store_are_not_pulled(launcher: Launcher) -> None:
    """With the default policy a present model is skipped; `always` pulls it anyway."""
    env = pull_env(launcher, "llama3.2,all-minilm", FAKE_OLLAMA_PRESENT="llama3.2")
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 0, result.stderr
    assert requested(env, "/api/pull") == ["all-minilm"]
    assert [e["model"] for e in log_events(result, "model.present")] == ["llama3.2:latest"]

    again = launcher.run_once(("pull",), env={**env, "PRELOADER_PULL_POLICY": "always"})
    assert again.returncode == 0, again.stderr
    assert requested(env, "/api/pull") == ["all-minilm", "llama3.2", "all-minilm"]


def test_policy_never_only_checks_the_store(launcher: Launcher) -> None:
    """PRELOADER_PULL_POLICY=never: nothing is pulled, a missing model means exit 4."""
    env = pull_env(
        launcher,
        "llama3.2,all-minilm",
        FAKE_OLLAMA_PRESENT="llama3.2",
        PRELOADER_PULL_POLICY="never",
    )
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 4, result.stderr
    assert requested(env, "/api/pull") == []
    assert "all-minilm:latest (not on disk and PRELOADER_PULL_POLICY=never" in result.stderr


def test_nothing_declared_starts_nothing(launcher: Launcher) -> None:
    """An empty list (the Dockerfile's default build arg) exits 0 without starting Ollama."""
    env = pull_env(launcher, "")
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 0, result.stderr
    assert log_events(result, "bake.plan")[0]["models"] == 0
    assert not Path(env["FAKE_OLLAMA_LOG"]).exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OLLAMA_PRELOAD_MODELS": "llama3.2?bogus=1"},
            "OLLAMA_PRELOAD_MODELS entry 'llama3.2?bogus=1': unknown parameter 'bogus' (allowed: "
            "keep_alive, kind, insecure, num_ctx, num_batch, num_gpu, num_thread, main_gpu, "
            "use_mmap)",
        ),
        (
            {"OLLAMA_HOST": "127.0.0.1:99999"},
            "OLLAMA_HOST='127.0.0.1:99999': invalid port '99999' (use a number from 1 to 65535)",
        ),
    ],
)
def test_bad_configuration_exits_2_before_starting_ollama(
    launcher: Launcher, env: dict[str, str], message: str
) -> None:
    """Bad input is one line on stderr naming the variable, exit 2; no server was started."""
    full = {**pull_env(launcher, "llama3.2"), **env}
    result = launcher.run_once(("pull",), env=full)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"ollama-preloader: error: {message}"]
    assert not Path(full["FAKE_OLLAMA_LOG"]).exists()


def test_sigterm_during_a_pull_stops_cleanly_and_keeps_the_partial_download(
    launcher: Launcher,
) -> None:
    """SIGTERM mid-download: exit 128+15, the server's group is gone, the partial file stays."""
    env = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(
            launcher.tmp / "catalog.json", {"llama3.2:latest": model(pull_seconds=60)}
        ),
        OLLAMA_PRELOAD_MODELS="llama3.2",
    )
    run = launcher.start(("pull",), env=env)
    run.wait_event("model.pull.progress")
    assert run.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    run.wait_event("bake.stopping")
    (pid,) = serve_pids(env)
    assert processes_in_group(pid) == []
    partial = list((Path(env["OLLAMA_MODELS"]) / "blobs").glob("*-partial"))
    assert partial, "the partial download was lost"
    assert not run.events("bake.complete")


def test_server_dying_during_the_pulls_exits_3(launcher: Launcher) -> None:
    """`ollama serve` killed mid-download: exit 3 with one line saying so, no retry storm."""
    env = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(
            launcher.tmp / "catalog.json", {"llama3.2:latest": model(pull_seconds=60)}
        ),
        OLLAMA_PRELOAD_MODELS="llama3.2",
        # The broken stream may be retried once before the exit is seen; not five times.
        PRELOADER_RETRY_INITIAL="5",
        PRELOADER_RETRY_MAX="10",
    )
    run = launcher.start(("pull",), env=env)
    run.wait_event("model.pull.progress")
    (pid,) = serve_pids(env)
    os.kill(pid, signal.SIGKILL)
    assert run.wait_exit() == 3
    errors = [line for line in run.lines if line.startswith("ollama-preloader: error: ")]
    assert len(errors) == 1, run.output()
    # Said as a signal, and no access-log or INFO line quoted as the cause.
    assert errors == [
        "ollama-preloader: error: ollama serve was killed by SIGKILL (signal 9) during the pulls"
    ]
    assert len(run.events("model.pull.start")) == 1
    assert len(run.events("model.pull.retry")) <= 1
    assert processes_in_group(pid) == []
