"""Live reload through the real CLI and the fake: edits of the models file, SIGHUP with `.env`,
in `run` and `watch`, observed from the server's side (/_fake/state, its event log) and the
supervisor's (events, /status, /metrics)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dotenv_harness import dotenv_file, start_from_dotenv
from fake_catalogs import SMALL, model, write_catalog
from fake_ollama.harness import FakeOllama, start_fake
from preloader_harness import FAKE_BIN, Launcher, Run

CHAT, EMBED, CODER = "llama3.2:latest", "nomic-embed-text:latest", "qwen2.5-coder:1.5b-base"


def models_file(launcher: Launcher) -> Path:
    return launcher.tmp / "models.txt"


def start(
    launcher: Launcher,
    text: str,
    args: tuple[str, ...] = ("run",),
    catalog: dict[str, dict[str, Any]] | None = None,
    **env: str,
) -> Run:
    """A supervisor whose list is the models file holding `text`."""
    path = models_file(launcher)
    path.write_text(text)
    full = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json", catalog),
        PRELOADER_MODELS_FILE=str(path),
        **env,
    )
    if args == ("watch",):
        # Without the executable the sidecar could not start Ollama even by mistake.
        parts = full["PATH"].split(os.pathsep)
        full["PATH"] = os.pathsep.join(p for p in parts if Path(p) != FAKE_BIN)
    return launcher.start(args, env=full)


def runners(run: Run | FakeOllama) -> dict[str, dict[str, Any]]:
    """The fake's runners by model name: pid, keep_alive, options."""
    if isinstance(run, FakeOllama):
        state: list[dict[str, Any]] = run.state()["runners"]
    else:
        state = run.http("GET", "/_fake/state")["runners"]
    return {r["model"]: r for r in state}


def serve_pids(run: Run) -> list[int]:
    return [e["pid"] for e in run.fake_events("serve_start")]


def unloads(run: Run, name: str) -> list[dict[str, Any]]:
    """Every time the fake stopped a runner of `name` (unload, evict, expire)."""
    return [
        e
        for kind in ("unload", "evict", "expire")
        for e in run.fake_events(kind)
        if e.get("model") == name
    ]


def status(run: Run) -> dict[str, Any]:
    code, doc = run.health_json("/status")
    assert code in (200, 503)
    result: dict[str, Any] = doc
    return result


def declared(run: Run) -> list[str]:
    return [m["name"] for m in status(run)["models"]]


def test_added_model_is_pinned_without_restarting_ollama(launcher: Launcher) -> None:
    """An entry appended to the file: pulled and pinned; same `ollama serve`, same runner."""
    run = start(launcher, f"{CHAT}\n")
    run.wait_all_pinned()
    (serve,) = serve_pids(run)
    before = runners(run)[CHAT]["pid"]

    models_file(launcher).write_text(f"{CHAT}\n{EMBED}   # embeddings too\n")
    reloaded = run.wait_event("config.reloaded")
    assert (reloaded["trigger"], reloaded["added"], reloaded["removed"]) == ("file", [EMBED], [])
    run.wait_event("model.pinned", model=EMBED)

    now = runners(run)
    assert sorted(now) == [CHAT, EMBED]
    assert now[EMBED]["pinned"]
    assert now[CHAT]["pid"] == before
    assert serve_pids(run) == [serve]
    assert unloads(run, CHAT) == []
    assert declared(run) == [CHAT, EMBED]
    run.wait_for(lambda: run.cli("health").returncode == 0, "health: ready with both")
    assert run.stop() == 0


@pytest.mark.parametrize("policy", ["release", "unload", "keep"])
def test_removed_model_is_handled_as_configured(launcher: Launcher, policy: str) -> None:
    """release: one request with OLLAMA_KEEP_ALIVE and its options; unload: gone; keep: still
    pinned. In every case it leaves status and metrics, and the other model is untouched."""
    run = start(
        launcher,
        f"{CHAT}\n{EMBED}?num_ctx=1024\n",
        PRELOADER_ON_REMOVE=policy,
        OLLAMA_KEEP_ALIVE="10m",
    )
    run.wait_all_pinned()
    before = runners(run)[CHAT]["pid"]
    assert f'model="{EMBED}"' in run.health_get("/metrics")[1]

    models_file(launcher).write_text(f"{CHAT}\n")
    reloaded = run.wait_event("config.reloaded")
    assert reloaded["removed"] == [EMBED]
    removed = run.wait_event("model.removed", model=EMBED)
    assert (removed["on_remove"], removed["loaded"]) == (policy, True)

    now = runners(run)
    if policy == "release":
        assert now[EMBED]["keep_alive"] == "10m0s"
        assert not now[EMBED]["pinned"]
        assert now[EMBED]["request_options"] == {"num_ctx": 1024}  # not reloaded
        assert unloads(run, EMBED) == []
        last = run.requests("/api/embed")[-1]["body"]
        assert last["keep_alive"] == 600
    elif policy == "unload":
        run.wait_for(lambda: EMBED not in runners(run), "the runner gone")
    else:
        assert now[EMBED]["pinned"]
        assert unloads(run, EMBED) == []
    assert now[CHAT]["pid"] == before
    assert now[CHAT]["pinned"]
    assert declared(run) == [CHAT]
    assert f'model="{EMBED}"' not in run.health_get("/metrics")[1]
    if policy != "unload":
        assert [m["name"] for m in status(run)["undeclared"]] == [EMBED]
    assert run.cli("health").returncode == 0
    assert run.stop() == 0


def test_changed_options_reload_the_model(launcher: Launcher) -> None:
    """num_ctx added to an entry: loaded again with it; the other model's runner stays."""
    run = start(launcher, f"{CHAT}\n{EMBED}\n")
    run.wait_all_pinned()
    (serve,) = serve_pids(run)
    embed_pid = runners(run)[EMBED]["pid"]

    models_file(launcher).write_text(f"{CHAT}?num_ctx=8192\n{EMBED}\n")
    assert run.wait_event("config.reloaded")["changed"] == [CHAT]
    run.wait_event("model.pinned", model=CHAT, reason="changed")

    chat = runners(run)[CHAT]
    assert (chat["context_length"], chat["pinned"]) == (8192, True)
    assert runners(run)[EMBED]["pid"] == embed_pid
    assert serve_pids(run) == [serve]
    assert status(run)["models"][0]["options"] == {"num_ctx": 8192}
    assert run.count_events("model.pinned", model=CHAT, already=True) == 0
    assert run.stop() == 0


def test_broken_edit_keeps_the_set_until_a_good_one(launcher: Launcher) -> None:
    """A bad line: config.reload_failed naming it, /status shows it, nothing unloaded; the
    fixed version then applies and clears the error."""
    run = start(launcher, f"{CHAT}\n{EMBED}\n")
    run.wait_all_pinned()

    models_file(launcher).write_text(f"{CHAT}\n{EMBED}?temperature=0.2\n")
    failed = run.wait_event("config.reload_failed")
    assert "models.txt, line 2" in failed["error"]
    assert failed["trigger"] == "file"
    error = status(run)["config_error"]
    assert error is not None
    assert "line 2" in error
    assert declared(run) == [CHAT, EMBED]
    assert sorted(runners(run)) == [CHAT, EMBED]

    models_file(launcher).write_text(f"{CHAT}\n")
    run.wait_event("config.reloaded")
    run.wait_event("model.removed", model=EMBED)
    assert status(run)["config_error"] is None
    assert declared(run) == [CHAT]
    assert run.count_events("config.reload_failed") == 1  # one bad version, one event
    assert run.stop() == 0


def test_file_that_disappears_keeps_the_set(launcher: Launcher) -> None:
    """The file deleted: one config.reload_failed, the set stays; back: applied."""
    run = start(launcher, f"{CHAT}\n")
    run.wait_all_pinned()
    models_file(launcher).unlink()
    assert "no such file" in run.wait_event("config.reload_failed")["error"]
    assert declared(run) == [CHAT]
    models_file(launcher).write_text(f"{CHAT}\n{EMBED}\n")
    run.wait_event("model.pinned", model=EMBED)
    assert status(run)["config_error"] is None
    assert run.stop() == 0


def test_sighup_rereads_the_list_in_dotenv(launcher: Launcher) -> None:
    """No models file: SIGHUP re-reads OLLAMA_PRELOAD_MODELS from `.env` and pins the new
    model; the supervisor keeps running (the signal no longer kills it)."""
    run = start_from_dotenv(launcher, f"OLLAMA_PRELOAD_MODELS={CHAT}\n")
    dotenv = dotenv_file(launcher)
    (serve,) = serve_pids(run)

    dotenv.write_text(f"OLLAMA_PRELOAD_MODELS={CHAT},{EMBED}\nPRELOADER_PULL_ATTEMPTS=2\n")
    run.proc.send_signal(signal.SIGHUP)
    reloaded = run.wait_event("config.reloaded")
    assert (reloaded["trigger"], reloaded["added"]) == ("signal", [EMBED])
    restart = run.wait_event("config.restart_needed")
    assert restart["variables"] == ["PRELOADER_PULL_ATTEMPTS"]
    run.wait_event("model.pinned", model=EMBED)
    assert run.proc.poll() is None
    assert serve_pids(run) == [serve]

    run.proc.send_signal(signal.SIGHUP)  # the same content: a result all the same
    run.wait_for(lambda: run.count_events("config.reloaded") == 2, "a second reload")
    assert run.events("config.reloaded")[-1]["added"] == []
    assert run.stop() == 0


def test_sighup_with_dotenv_missing_keeps_the_set(launcher: Launcher) -> None:
    """The list came from `.env` and `.env` is gone: config.reload_failed naming it, every
    model kept (as for a models file that disappears); back: a SIGHUP applies it."""
    run = start_from_dotenv(launcher, f"OLLAMA_PRELOAD_MODELS={CHAT},{EMBED}\n")
    dotenv = dotenv_file(launcher)
    dotenv.unlink()
    run.proc.send_signal(signal.SIGHUP)
    failed = run.wait_event("config.reload_failed")
    assert ".env" in failed["error"]
    assert run.count_events("config.reloaded") == 0
    assert declared(run) == [CHAT, EMBED]
    assert unloads(run, CHAT) == []
    assert unloads(run, EMBED) == []

    dotenv.write_text(f"OLLAMA_PRELOAD_MODELS={CHAT}\n")
    run.proc.send_signal(signal.SIGHUP)
    assert run.wait_event("config.reloaded")["models"] == 1
    assert run.stop() == 0


def test_sighup_with_the_list_in_the_environment_keeps_it(launcher: Launcher) -> None:
    """The list in the real environment cannot change: SIGHUP says so and changes nothing."""
    run = launcher.start(OLLAMA_PRELOAD_MODELS=CHAT)
    run.wait_all_pinned()
    run.proc.send_signal(signal.SIGHUP)
    warning = run.wait_event("config.warning")
    assert "PRELOADER_MODELS_FILE" in warning["msg"]
    assert run.wait_event("config.reloaded")["models"] == 1
    assert run.proc.poll() is None
    assert run.stop() == 0


def test_model_removed_while_it_is_pulled(launcher: Launcher) -> None:
    """Removed mid-pull: the pull stops, the supervisor carries on and pins the rest."""
    catalog = {**SMALL, CODER: model(size=1.0, pull_seconds=60.0)}
    run = start(launcher, f"{CHAT}\n", catalog=catalog)
    run.wait_all_pinned()
    models_file(launcher).write_text(f"{CHAT}\n{CODER}\n")
    run.wait_event("model.pull.start", model=CODER)

    models_file(launcher).write_text(f"{CHAT}\n{EMBED}\n")
    run.wait_event("model.pull.cancelled", model=CODER)
    run.wait_event("model.pinned", model=EMBED)
    assert run.proc.poll() is None
    assert declared(run) == [CHAT, EMBED]
    assert run.count_events("supervisor.crashed") == 0
    assert run.stop() == 0


def test_new_order_decides_who_gives_way(launcher: Launcher) -> None:
    """OLLAMA_MAX_LOADED_MODELS=1 and two models: the first is pinned; reversing the file
    makes the other the one that fits."""
    run = start(launcher, f"{CHAT}\n{EMBED}\n", OLLAMA_MAX_LOADED_MODELS="1")
    run.wait_event("model.pinned", model=CHAT)
    run.wait_event("model.failed", model=EMBED)

    models_file(launcher).write_text(f"{EMBED}\n{CHAT}\n")
    assert run.wait_event("config.reloaded")["reordered"] is True
    run.wait_event("model.pinned", model=EMBED)
    run.wait_for(lambda: sorted(runners(run)) == [EMBED], "only the new first model loaded")
    assert declared(run) == [EMBED, CHAT]
    assert [m["state"] for m in status(run)["models"]] == ["pinned", "failed"]
    assert run.stop() == 0


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeOllama]:
    with start_fake(tmp_path / "fake", catalog=SMALL, present=["llama3.2"]) as server:
        yield server


def test_watch_applies_an_edit(launcher: Launcher, fake: FakeOllama) -> None:
    """`watch`: an added model pinned, a removed one released with the sidecar's
    OLLAMA_KEEP_ALIVE; the server it does not own is never restarted."""
    run = start(
        launcher, f"{CHAT}\n{EMBED}\n", ("watch",), OLLAMA_HOST=fake.host, OLLAMA_KEEP_ALIVE="7m"
    )
    run.wait_all_pinned()
    chat_pid = runners(fake)[CHAT]["pid"]

    models_file(launcher).write_text(f"{CHAT}\n{CODER}\n")
    run.wait_event("model.pinned", model=CODER)
    run.wait_event("model.removed", model=EMBED)
    now = runners(fake)
    assert now[EMBED]["keep_alive"] == "7m0s"
    assert now[CODER]["pinned"]
    assert now[CHAT]["pinned"]
    assert now[CHAT]["pid"] == chat_pid
    assert len(fake.events("serve_start")) == 1
    assert run.stop() == 0


def test_sighup_applies_a_new_log_level(launcher: Launcher) -> None:
    """PRELOADER_LOG_LEVEL=warning in `.env` on SIGHUP: the info events of the reload and of
    the new model's pin are no longer logged; warnings still are."""
    run = start_from_dotenv(
        launcher,
        f"OLLAMA_PRELOAD_MODELS={CHAT}\nPRELOADER_LOG_LEVEL=info\n",
        unset=("PRELOADER_LOG_LEVEL",),  # the real environment would win over `.env`
    )
    dotenv = dotenv_file(launcher)

    dotenv.write_text(
        f"OLLAMA_PRELOAD_MODELS={CHAT},{EMBED}\nPRELOADER_LOG_LEVEL=warning\n"
        "PRELOADER_PULL_ATTEMPTS=2\n"
    )
    run.proc.send_signal(signal.SIGHUP)
    run.wait_event("config.restart_needed")
    run.wait_for(lambda: runners(run).get(EMBED, {}).get("pinned"), "the new model pinned")
    assert declared(run) == [CHAT, EMBED]
    assert run.count_events("config.reloaded") == 0
    assert run.count_events("model.pinned", model=EMBED) == 0
    assert run.stop() == 0


def test_watch_sighup_names_no_restart_for_its_own_defaults(
    launcher: Launcher, fake: FakeOllama
) -> None:
    """`watch` refreshes every 60 s by default (not `run`'s 5 m): a SIGHUP that re-reads an
    unchanged `.env` must not take that default for a changed PRELOADER_REFRESH_INTERVAL."""
    run = start(launcher, f"{CHAT}\n", ("watch",), OLLAMA_HOST=fake.host)
    run.wait_all_pinned()
    run.proc.send_signal(signal.SIGHUP)
    reloaded = run.wait_event("config.reloaded")
    assert reloaded["trigger"] == "signal"
    assert run.events("config.restart_needed") == []
    assert run.stop() == 0


def test_new_order_while_the_new_first_model_is_pulled(launcher: Launcher) -> None:
    """The same, with the reorder arriving while the model that now fits is still pulled (a
    busy machine's timing): once its pull is done it is loaded, and the other gives way."""
    catalog = {**SMALL, EMBED: model("embedding", size=0.27, pull_seconds=4.0)}
    run = start(launcher, f"{CHAT}\n{EMBED}\n", catalog=catalog, OLLAMA_MAX_LOADED_MODELS="1")
    run.wait_event("model.pinned", model=CHAT)
    run.wait_event("model.pull.start", model=EMBED)

    models_file(launcher).write_text(f"{EMBED}\n{CHAT}\n")
    assert run.wait_event("config.reloaded")["reordered"] is True
    run.wait_event("model.pull.complete", model=EMBED)
    run.wait_event("model.pinned", model=EMBED)
    run.wait_for(lambda: sorted(runners(run)) == [EMBED], "only the new first model loaded")
    assert declared(run) == [EMBED, CHAT]


def test_new_order_while_the_model_that_gives_way_is_pulled(launcher: Launcher) -> None:
    """The other way round: the model being pulled is the one the new order leaves out. It
    stays out once on disk, and the new first model is the one loaded."""
    catalog = {**SMALL, EMBED: model("embedding", size=0.27, pull_seconds=4.0)}
    run = start(launcher, f"{EMBED}\n{CHAT}\n", catalog=catalog, OLLAMA_MAX_LOADED_MODELS="1")
    run.wait_event("model.pull.start", model=EMBED)

    models_file(launcher).write_text(f"{CHAT}\n{EMBED}\n")
    assert run.wait_event("config.reloaded")["reordered"] is True
    run.wait_event("model.pinned", model=CHAT)
    run.wait_event("model.pull.complete", model=EMBED)
    run.wait_for(lambda: sorted(runners(run)) == [CHAT], "only the new first model loaded")
    assert [m["state"] for m in status(run)["models"]] == ["pinned", "failed"]
    assert run.count_events("model.pinned", model=EMBED) == 0
