"""`ollama-preloader status` (table and --json) and /status, from another process, in each state."""

from __future__ import annotations

import json
from typing import Any

from fake_catalogs import SMALL, model, write_catalog
from preloader_harness import Launcher, Run


def catalog_env(
    launcher: Launcher, models: dict[str, dict[str, Any]] | None = None, **env: str
) -> dict[str, str]:
    path = write_catalog(launcher.tmp / "catalog.json", {**SMALL, **(models or {})})
    return launcher.env(FAKE_OLLAMA_CATALOG=path, **env)


def status_json(run: Run) -> tuple[int, dict[str, Any]]:
    result = run.cli("status", "--json")
    assert result.stderr == ""
    return result.returncode, json.loads(result.stdout)


def table(run: Run) -> tuple[int, list[dict[str, str]], str]:
    """The status table parsed by its header's column positions, and its last line."""
    result = run.cli("status")
    assert result.stderr == ""
    lines = result.stdout.rstrip("\n").split("\n")
    header, *body = lines
    blank = body.index("")
    rows, footer = body[:blank], body[blank + 1 :]
    names = header.split()
    starts = [header.index(n) for n in names]
    parsed = []
    for row in rows:
        cells = {}
        for i, name in enumerate(names):
            end = starts[i + 1] if i + 1 < len(names) else None
            cells[name] = row[starts[i] : end].strip()
        parsed.append(cells)
    assert len(footer) == 1
    return result.returncode, parsed, footer[0]


def ps_rows(run: Run) -> dict[str, dict[str, str]]:
    """`ollama ps` of the fake, parsed the same way (its columns are what status imitates)."""
    out = run.ollama("ps").stdout.rstrip("\n").split("\n")
    header, *rows = out
    names = header.split()
    starts = [header.index(n) for n in names]
    parsed = {}
    for row in rows:
        cells = {
            n: row[starts[i] : starts[i + 1] if i + 1 < len(names) else None].strip()
            for i, n in enumerate(names)
        }
        parsed[cells["NAME"]] = cells
    return parsed


def test_status_pinned_pulling_failed_and_undeclared(launcher: Launcher) -> None:
    """One run shows a pinned model, a pull in progress with its percentage, a failed pull with
    its reason, and a model a client loaded that is not declared; exit 1 until all pinned."""
    env = catalog_env(
        launcher,
        {"devstral:latest": model(size=14.3, pull_seconds=120)},
        OLLAMA_PRELOAD_MODELS="llama3.2,no-such-model:7b,devstral",
        FAKE_OLLAMA_PRESENT="llama3.2,qwen2.5-coder:1.5b-base",
    )
    run = launcher.start(env=env)
    run.wait_event("model.failed", model="no-such-model:7b")
    run.wait_event("model.pinned", model="llama3.2:latest")
    # Another client loads a model that is not in the list, with Ollama's default keep_alive.
    run.http("POST", "/api/generate", {"model": "qwen2.5-coder:1.5b-base"})

    def interesting() -> dict[str, Any] | None:
        code, doc = status_json(run)
        states = {m["name"]: m["state_text"] for m in doc["models"]}
        pulling = states["devstral:latest"].startswith("pulling ") and not states[
            "devstral:latest"
        ].endswith(" 0%")
        return doc if code == 1 and pulling and doc["undeclared"] else None

    doc = run.wait_for(interesting, "devstral pulling and an undeclared model")
    models = {m["name"]: m for m in doc["models"]}
    assert [m["name"] for m in doc["models"]] == [
        "llama3.2:latest",
        "no-such-model:7b",
        "devstral:latest",
    ]
    assert doc["ready"] is False
    assert doc["live"] is True
    assert models["llama3.2:latest"]["state"] == "pinned"
    assert models["llama3.2:latest"]["kind"] == "completion"
    assert models["llama3.2:latest"]["until"] == "Forever"
    assert models["no-such-model:7b"]["state"] == "failed"
    assert "not found in the registry" in models["no-such-model:7b"]["reason"]
    assert models["devstral:latest"]["state"] == "pulling"
    assert 0 < models["devstral:latest"]["pull_percent"] < 100
    assert [m["name"] for m in doc["undeclared"]] == ["qwen2.5-coder:1.5b-base"]
    # /status is the same document.
    code, body = run.health_json("/status")
    assert code == 200
    assert [m["name"] for m in body["models"]] == [m["name"] for m in doc["models"]]

    code, rows, footer = table(run)
    assert code == 1
    by_name = {r["NAME"]: r for r in rows}
    assert list(by_name) == [
        "llama3.2:latest",
        "no-such-model:7b",
        "devstral:latest",
        "qwen2.5-coder:1.5b-base",
    ]
    llama = by_name["llama3.2:latest"]
    assert (llama["KIND"], llama["STATE"], llama["UNTIL"]) == ("completion", "pinned", "Forever")
    failed = by_name["no-such-model:7b"]
    assert failed["STATE"] == "failed"
    assert failed["REASON"].startswith("not found in the registry")
    assert by_name["devstral:latest"]["STATE"].startswith("pulling ")
    assert by_name["devstral:latest"]["STATE"].endswith("%")
    assert by_name["devstral:latest"]["UNTIL"] == "-"
    extra = by_name["qwen2.5-coder:1.5b-base"]
    assert extra["STATE"] == "not declared"
    assert extra["UNTIL"].endswith("from now")
    # SIZE, PROCESSOR and CONTEXT read exactly as `ollama ps` prints them.
    ps = ps_rows(run)
    for name in ("llama3.2:latest", "qwen2.5-coder:1.5b-base"):
        for column in ("SIZE", "PROCESSOR", "CONTEXT"):
            assert by_name[name][column] == ps[name][column], (name, column)
    assert footer.startswith("not ready: ")
    assert "no-such-model:7b failed" in footer
    assert run.stop() == 0


def test_status_while_loading(launcher: Launcher) -> None:
    """A model being loaded shows `loading` (the others pinned); exit 1."""
    env = catalog_env(
        launcher,
        {"devstral:latest": model(size=14.3, load_seconds=60)},
        OLLAMA_PRELOAD_MODELS="llama3.2,devstral",
        FAKE_OLLAMA_PRESENT="llama3.2,devstral",
    )
    run = launcher.start(env=env)
    run.wait_event("model.loading", model="devstral:latest")
    code, rows, footer = table(run)
    assert code == 1
    assert {r["NAME"]: r["STATE"] for r in rows} == {
        "llama3.2:latest": "pinned",
        "devstral:latest": "loading",
    }
    assert footer == "not ready: devstral:latest loading"
    assert run.stop() == 0


def test_status_when_every_model_is_pinned(launcher: Launcher) -> None:
    """All pinned: exit 0, the table says so, the JSON carries the counters."""
    env = catalog_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2,nomic-embed-text",
        FAKE_OLLAMA_PRESENT="llama3.2",
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    code, rows, footer = table(run)
    assert code == 0
    assert [(r["NAME"], r["KIND"], r["STATE"], r["UNTIL"]) for r in rows] == [
        ("llama3.2:latest", "completion", "pinned", "Forever"),
        ("nomic-embed-text:latest", "embedding", "pinned", "Forever"),
    ]
    assert footer == "ready: all 2 declared models are loaded and pinned"
    code, doc = status_json(run)
    assert code == 0
    assert doc["ready"] is True
    assert doc["all_pinned_after"] > 0
    assert [m["loads"] for m in doc["models"]] == [1, 1]
    assert [m["pull_bytes"] > 0 for m in doc["models"]] == [False, True]
    assert run.stop() == 0
