"""Defects found trying the supervisor as a new user (issues 26 and 27), against the fake."""

from __future__ import annotations

import json
from typing import Any

from fake_catalogs import SMALL, write_catalog
from preloader_harness import Launcher, Run


def catalog_env(launcher: Launcher, **env: str) -> dict[str, str]:
    path = write_catalog(launcher.tmp / "catalog.json", SMALL)
    return launcher.env(FAKE_OLLAMA_CATALOG=path, **env)


def states(run: Run) -> dict[str, dict[str, Any]]:
    result = run.cli("status", "--json")
    return {m["name"]: m for m in json.loads(result.stdout)["models"]}


def test_a_finite_keep_alive_entry_is_warmed_then_reads_expired(launcher: Launcher) -> None:
    """Issue 26 item 6: the finite entry is warmed up, preload.complete and /readyz do not
    call it pinned, and once Ollama lets it expire it reads `expired`, not `loaded`."""
    env = catalog_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2,all-minilm?keep_alive=2s",
        FAKE_OLLAMA_PRESENT="llama3.2,all-minilm",
        PRELOADER_WARMUP="true",
    )
    run = launcher.start(env=env)
    done = run.wait_all_pinned()
    assert "loaded and pinned" not in done["msg"]
    assert "1 pinned, 1 loaded with a finite keep_alive" in done["msg"]
    run.wait_event("model.warmup", model="all-minilm:latest")
    expired = run.wait_event("model.expired", model="all-minilm:latest")
    assert "2s" in expired["msg"]
    assert not any(m["name"].startswith("all-minilm") for m in run.ps())
    model = states(run)["all-minilm:latest"]
    assert model["state"] == "expired"
    assert model["size"] is None
    code, body, _ = run.health_get("/readyz")
    assert code == 200  # it did what its entry asked; nothing would load it again
    assert "1 expired as its keep_alive asked" in body
    # A client's request loads it again: `loaded` once more, not put back by the supervisor.
    run.http("POST", "/api/embed", {"model": "all-minilm", "input": "x", "keep_alive": "1h"})
    run.wait_for(lambda: states(run)["all-minilm:latest"]["state"] == "loaded", "loaded again")


def test_a_model_left_out_for_capacity_is_pulled(launcher: Launcher) -> None:
    """Issue 26 item 7: three declared, OLLAMA_MAX_LOADED_MODELS=2, the third not on disk:
    it is pulled although it gives way, and keeps its capacity reason (not loaded)."""
    env = catalog_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2,all-minilm,qwen2.5-coder:1.5b-base",
        FAKE_OLLAMA_PRESENT="llama3.2,all-minilm",
        OLLAMA_MAX_LOADED_MODELS="2",
    )
    run = launcher.start(env=env)
    run.wait_event("model.pull.complete", model="qwen2.5-coder:1.5b-base")
    tags = {m["name"] for m in run.http("GET", "/api/tags")["models"]}
    assert "qwen2.5-coder:1.5b-base" in tags
    run.wait_for(
        lambda: states(run)["qwen2.5-coder:1.5b-base"]["state"] == "failed", "failed again"
    )
    model = states(run)["qwen2.5-coder:1.5b-base"]
    assert model["reason"].startswith("capacity: OLLAMA_MAX_LOADED_MODELS=2")
    assert {m["name"] for m in run.ps()} == {"llama3.2:latest", "all-minilm:latest"}


def test_a_pull_behind_another_reads_queued_until_it_starts(launcher: Launcher) -> None:
    """Issue 26 (small): one pull runs at a time; the model behind it reads `queued` in
    `status --json`, the table and /status, and `pulling` only once its own pull starts."""
    catalog = dict(SMALL)
    catalog["devstral:latest"] = {**SMALL["devstral:latest"], "pull_seconds": 3.0}
    path = write_catalog(launcher.tmp / "catalog.json", catalog)
    env = launcher.env(
        FAKE_OLLAMA_CATALOG=path,
        OLLAMA_PRELOAD_MODELS="devstral,qwen2.5-coder:1.5b-base",
        FAKE_OLLAMA_PRESENT="",
    )
    run = launcher.start(env=env)
    run.wait_event("model.pull.start", model="devstral:latest")
    models = states(run)
    assert models["devstral:latest"]["state"] == "pulling"
    assert models["qwen2.5-coder:1.5b-base"]["state"] == "queued"
    _, body = run.health_json("/status")
    assert {m["name"]: m["state"] for m in body["models"]}["qwen2.5-coder:1.5b-base"] == "queued"
    table = run.cli("status").stdout
    row = next(line for line in table.splitlines() if line.startswith("qwen2.5-coder"))
    assert row.split()[2] == "queued"
    run.wait_event("model.pull.start", model="qwen2.5-coder:1.5b-base")
    assert run.count_events("model.pull.complete", model="devstral:latest") == 1
    run.wait_all_pinned()


def test_a_kind_the_model_does_not_have_is_bad_input_not_retried(launcher: Launcher) -> None:
    """Issue 26 (small), both ways: kind=completion on an embedding model (Ollama answers the
    load with a 400) and kind=embedding on a completion model (the load answers 200, and
    /api/show says otherwise): `failed` once with the entry and the fix, not loaded again."""
    env = catalog_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="all-minilm?kind=completion,llama3.2?kind=embedding,devstral",
        FAKE_OLLAMA_PRESENT="llama3.2,all-minilm,devstral",
        PRELOADER_RETRY_INITIAL="0.1s",
        PRELOADER_RETRY_MAX="0.2s",
    )
    run = launcher.start(env=env)
    embed = run.wait_event("model.failed", model="all-minilm:latest")
    chat = run.wait_event("model.failed", model="llama3.2:latest")
    assert embed["reason"] == (
        "the entry 'all-minilm?kind=completion' in OLLAMA_PRELOAD_MODELS sets kind=completion, "
        "but all-minilm:latest is an embedding model; drop kind= from the entry or use "
        "kind=embedding"
    )
    assert "llama3.2:latest is a completion model" in chat["reason"]
    assert chat["reason"].endswith("drop kind= from the entry or use kind=completion")
    assert embed["retry_in"] is None
    assert chat["retry_in"] is None
    assert "not retried" in embed["msg"]
    run.wait_event("model.pinned", model="devstral:latest")
    loads = run.count_requests("/api/generate") + run.count_requests("/api/embed")
    models = states(run)
    assert models["all-minilm:latest"]["state"] == "failed"
    assert models["llama3.2:latest"]["state"] == "failed"
    assert {m["name"] for m in run.ps()} == {"devstral:latest"}  # the wrong load was undone
    assert run.count_events("model.failed") == 2
    assert run.count_requests("/api/generate") + run.count_requests("/api/embed") == loads


def test_messages_name_the_models_file_the_entry_came_from(launcher: Launcher) -> None:
    """Issue 27 item 4: with the list in PRELOADER_MODELS_FILE, a reason names the file and the
    entry's line, the capacity fix says to trim the file, and `pull` with a file that lists no
    model says so, not "OLLAMA_PRELOAD_MODELS is empty"."""
    models = launcher.tmp / "models.txt"
    models.write_text("# chat first\nllama3.2\n\nall-minilm?kind=completion\ndevstral\n")
    env = catalog_env(
        launcher,
        PRELOADER_MODELS_FILE=str(models),
        FAKE_OLLAMA_PRESENT="llama3.2,all-minilm,devstral",
        OLLAMA_MAX_LOADED_MODELS="2",
    )
    env.pop("OLLAMA_PRELOAD_MODELS", None)
    run = launcher.start(env=env)
    wrong = run.wait_event("model.failed", model="all-minilm:latest")
    assert (
        f"'all-minilm?kind=completion' in PRELOADER_MODELS_FILE={models} (line 4)"
        in (wrong["reason"])
    )
    limit = run.wait_event("capacity.warning")
    assert limit["msg"].endswith(f"or trim PRELOADER_MODELS_FILE={models}")
    assert "OLLAMA_PRELOAD_MODELS" not in wrong["reason"] + limit["msg"]
    assert run.stop() == 0

    models.write_text("# nothing yet\n")
    pulled = launcher.run_once(("pull",), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert f"No models declared (PRELOADER_MODELS_FILE={models} lists no model)" in (
        pulled.stdout + pulled.stderr
    )
