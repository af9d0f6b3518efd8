"""The supervisor end to end: the real CLI, the fake `ollama` on PATH, observed from outside."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from fake_catalogs import write_catalog
from preloader_harness import Launcher, processes_in_group


def catalog_env(launcher: Launcher, **env: str) -> dict[str, str]:
    return launcher.env(FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"), **env)


def test_cold_start_pulls_and_pins_everything(launcher: Launcher) -> None:
    """Missing models are pulled, all three pinned (one embedding); `ollama ps` says Forever."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2,devstral,nomic-embed-text")
    run = launcher.start(env=env)
    run.wait_all_pinned()

    pulled = sorted(r["body"]["model"] for r in run.requests("/api/pull"))
    assert pulled == ["devstral", "llama3.2", "nomic-embed-text"]
    # The embedding model is loaded through the embed API, the others through generate.
    embeds = [r["body"] for r in run.requests("/api/embed")]
    assert [b["model"] for b in embeds] == ["nomic-embed-text"]
    assert embeds[0]["input"] == []
    generates = [r["body"] for r in run.requests("/api/generate")]
    assert sorted(b["model"] for b in generates) == ["devstral", "llama3.2"]
    for body in [*embeds, *generates]:
        assert body["keep_alive"] == -1
        assert not isinstance(body["keep_alive"], str)

    ps = run.ollama("ps")
    assert ps.returncode == 0, ps.stderr
    rows = [line for line in ps.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 3
    assert all(row.rstrip().endswith("Forever") for row in rows), ps.stdout
    kinds = {e["model"]: e["kind"] for e in run.events("model.pinned")}
    assert kinds == {
        "llama3.2:latest": "completion",
        "devstral:latest": "completion",
        "nomic-embed-text:latest": "embedding",
    }
    assert run.stop() == 0


def test_present_models_are_not_pulled(launcher: Launcher) -> None:
    """A model already in the store is loaded without a pull; only the missing one is pulled."""
    env = catalog_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2,all-minilm",
        FAKE_OLLAMA_PRESENT="llama3.2",
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    assert [r["body"]["model"] for r in run.requests("/api/pull")] == ["all-minilm"]
    assert run.stop() == 0


def test_seed_configuration_verbatim(launcher: Launcher) -> None:
    """The product card's configuration works as written, with Ollama's own variables."""
    env = catalog_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="qwen3-coder:30b,devstral,qwen2.5-coder:1.5b-base,nomic-embed-text",
        OLLAMA_KEEP_ALIVE="-1",
        OLLAMA_MAX_LOADED_MODELS="6",
    )
    run = launcher.start(env=env)
    done = run.wait_all_pinned()
    assert done["models"] == 4
    names = sorted(m["name"] for m in run.ps())
    assert names == [
        "devstral:latest",
        "nomic-embed-text:latest",
        "qwen2.5-coder:1.5b-base",
        "qwen3-coder:30b",
    ]
    # Ollama's variables reach `ollama serve` untouched.
    start = run.fake_events("serve_start")[-1]
    assert start["env"]["OLLAMA_MAX_LOADED_MODELS"] == "6"
    assert start["env"]["OLLAMA_KEEP_ALIVE"] == "-1"
    assert run.stop() == 0


def test_evicted_model_comes_back(launcher: Launcher) -> None:
    """A model the scheduler evicts is loaded again with the same request."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2,devstral")
    run = launcher.start(env=env)
    run.wait_all_pinned()
    run.http("POST", "/_fake/evict", {"model": "devstral"})
    run.wait_event("model.evicted", model="devstral:latest")
    run.wait_for(
        lambda: run.count_events("model.pinned", model="devstral:latest") >= 2, "devstral back"
    )
    assert "devstral:latest" in [m["name"] for m in run.ps()]
    loads = [r for r in run.requests("/api/generate") if r["body"]["model"] == "devstral"]
    assert len(loads) == 2
    assert loads[0]["body"] == loads[1]["body"]
    assert run.stop() == 0


def test_model_stopped_by_a_user_comes_back(launcher: Launcher) -> None:
    """`ollama stop` unloads a model; the supervisor puts it back."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2")
    run = launcher.start(env=env)
    run.wait_all_pinned()
    assert run.ollama("stop", "llama3.2").returncode == 0
    run.wait_for(lambda: run.count_events("model.pinned") >= 2, "llama3.2 reloaded")
    assert run.stop() == 0


def test_unpinned_model_is_repinned(launcher: Launcher) -> None:
    """Another client's keep_alive "5m" un-pins a model; it is pinned again with -1."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2")
    run = launcher.start(env=env)
    run.wait_all_pinned()
    run.http("POST", "/api/generate", {"model": "llama3.2", "keep_alive": "5m"})
    run.wait_event("model.unpinned", model="llama3.2:latest")
    run.wait_event("model.pinned", model="llama3.2:latest", reason="unpinned")
    run.wait_for(lambda: run.ollama("ps").stdout.rstrip().endswith("Forever"), "Forever again")
    assert run.stop() == 0


def test_pull_failing_mid_stream_is_retried(launcher: Launcher) -> None:
    """An error line in the pull stream is retried with backoff and the model gets pinned."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2")
    Path(env["FAKE_OLLAMA_FAULTS"]).write_text(
        '{"pull_fail": {"llama3.2": {"times": 2, "after_fraction": 0.5, '
        '"message": "max retries exceeded: unexpected EOF"}}}'
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    assert len(run.requests("/api/pull")) == 3
    retries = run.events("model.pull.retry")
    assert len(retries) == 2
    assert "unexpected EOF" in retries[0]["error"]
    assert run.stop() == 0


def test_nonexistent_model_fails_alone(launcher: Launcher) -> None:
    """A name the registry does not know is failed with its reason; the rest are pinned."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="no-such-model:7b,llama3.2")
    run = launcher.start(env=env)
    failed = run.wait_event("model.failed", model="no-such-model:7b")
    assert "not found in the registry" in failed["reason"]
    run.wait_event("model.pinned", model="llama3.2:latest")
    assert run.proc.poll() is None
    # Not found is final for a while: one pull, not a retry storm.
    assert len([r for r in run.requests("/api/pull") if r["body"]["model"] != "llama3.2"]) == 1
    assert run.stop() == 0


def test_server_exiting_at_startup_gives_exit_3(launcher: Launcher) -> None:
    """`ollama serve` dying before it is ready ends the supervisor with code 3 and its error."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2")
    Path(env["FAKE_OLLAMA_FAULTS"]).write_text(
        '{"exit_at_startup": {"code": 1, "message": "Error: could not create directory"}}'
    )
    result = launcher.run_once(env=env)
    assert result.returncode == 3
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ollama-preloader: error: ollama serve exited with code 1")
    assert "Error: could not create directory" in last


def test_missing_ollama_gives_exit_3(launcher: Launcher) -> None:
    """Without `ollama` on PATH the error says so and how to fix it."""
    env = launcher.env(PATH="/usr/bin:/bin")
    result = launcher.run_once(env=env)
    assert result.returncode == 3
    assert "'ollama' was not found on PATH" in result.stderr
    assert "PRELOADER_OLLAMA_COMMAND" in result.stderr


def test_sigterm_stops_the_whole_group(launcher: Launcher) -> None:
    """SIGTERM stops the child; no process of its group (runners included) is left."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2,devstral")
    run = launcher.start(env=env)
    run.wait_all_pinned()
    serve_pid = run.fake_events("serve_start")[-1]["pid"]
    assert len(processes_in_group(serve_pid)) >= 3  # serve and two runners
    assert run.stop(signal.SIGTERM) == 0
    assert processes_in_group(serve_pid) == []
    run.wait_event("supervisor.stopped")


def test_sigterm_as_serve_is_spawned_still_stops_it(launcher: Launcher) -> None:
    """`ollama serve` is spawned before the event loop and the supervisor exist: a `docker
    stop` then is the same clean stop as later, not a death that leaves the server behind."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2")
    run = launcher.start(env=env)
    serve_pid = run.wait_event("server.started")["pid"]
    assert run.stop(signal.SIGTERM) == 0
    assert processes_in_group(serve_pid) == []
    run.wait_event("supervisor.stopped")


def test_sigint_also_stops_cleanly(launcher: Launcher) -> None:
    """Ctrl-C behaves like SIGTERM."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="")
    run = launcher.start(env=env)
    run.wait_event("server.ready")
    assert run.stop(signal.SIGINT) == 0


def test_empty_list_runs_serve_alone(launcher: Launcher) -> None:
    """No models declared: the supervisor still starts and supervises `ollama serve`."""
    env = catalog_env(launcher)
    run = launcher.start(env=env)
    run.wait_event("server.ready")
    plan = run.wait_event("preload.plan")
    assert plan["models"] == 0
    assert run.http("GET", "/api/version")["version"]
    assert run.requests("/api/pull") == []
    assert run.stop() == 0


BAD_CONFIG = [
    ({"OLLAMA_PRELOAD_MODELS": "llama3.2?foo=1"}, "unknown parameter 'foo'"),
    ({"OLLAMA_PRELOAD_MODELS": "bad name"}, "OLLAMA_PRELOAD_MODELS entry 'bad name'"),
    ({"OLLAMA_PRELOAD_MODELS": "llama3.2?num_ctx=lots"}, "num_ctx='lots' is not a whole number"),
    ({"OLLAMA_PRELOAD_MODELS": "llama3.2?keep_alive=1d"}, "keep_alive='1d' is not a duration"),
    ({"OLLAMA_PRELOAD_MODELS": "llama3.2?kind=vision"}, "kind='vision'"),
    ({"OLLAMA_PRELOAD_MODELS": "x:cloud"}, "cloud models"),
    ({"OLLAMA_PRELOAD_MODELS": "llama3.2:"}, "entry 'llama3.2:': the tag in 'llama3.2:' is empty"),
    ({"OLLAMA_PRELOAD_MODELS": "devstral,/llama3.2"}, "entry '/llama3.2': the namespace"),
    ({"OLLAMA_PRELOAD_MODELS": "library//llama3.2"}, "entry 'library//llama3.2': the namespace"),
    ({"OLLAMA_HOST": "127.0.0.1:99999"}, "OLLAMA_HOST='127.0.0.1:99999': invalid port"),
    ({"OLLAMA_HOST": "127.0.0.1:0"}, "OLLAMA_HOST='127.0.0.1:0': invalid port '0'"),
    ({"OLLAMA_HOST": "127.0.0.1:00"}, "OLLAMA_HOST='127.0.0.1:00': invalid port '00'"),
    ({"OLLAMA_HOST": "127.0.0.1:11434:"}, "OLLAMA_HOST='127.0.0.1:11434:': not a host:port"),
    ({"OLLAMA_HOST": "https://127.0.0.1:11434"}, "OLLAMA_HOST='https://127.0.0.1:11434': `run`"),
    ({"OLLAMA_HOST": "127.0.0.1:11434/ollama"}, "OLLAMA_HOST='127.0.0.1:11434/ollama': `run`"),
    # Quoted back as set (issue 27 item 4), not as parsed; the quotes a ConfigMap keeps trimmed.
    ({"OLLAMA_HOST": '"https://gpu-box"'}, "OLLAMA_HOST='https://gpu-box': `run` starts"),
    ({"PRELOADER_WATCH_INTERVAL": "often"}, "PRELOADER_WATCH_INTERVAL='often'"),
    ({"PRELOADER_PULL_POLICY": "maybe"}, "PRELOADER_PULL_POLICY='maybe'"),
    ({"PRELOADER_ON_SERVER_EXIT": "panic"}, "PRELOADER_ON_SERVER_EXIT='panic'"),
    ({"PRELOADER_PULL_ATTEMPTS": "none"}, "PRELOADER_PULL_ATTEMPTS='none'"),
    ({"PRELOADER_SHUTDOWN_GRACE": "-5"}, "PRELOADER_SHUTDOWN_GRACE='-5'"),
    ({"PRELOADER_LOG_LEVEL": "loud"}, "PRELOADER_LOG_LEVEL='loud'"),
]


@pytest.mark.parametrize(("env", "fragment"), BAD_CONFIG)
def test_bad_configuration_exits_2(launcher: Launcher, env: dict[str, str], fragment: str) -> None:
    """Bad input: exit 2, one line on stderr naming the problem, and no `ollama serve` started."""
    full = launcher.env(**env)
    result = launcher.run_once(env=full)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ollama-preloader: error: ")
    assert fragment in lines[0]
    assert not Path(full["FAKE_OLLAMA_LOG"]).exists()


def test_grep_from_the_guide_tells_the_story(launcher: Launcher) -> None:
    """Plain logs: Ollama's guide's grep shows planning, loading, pinning and completion."""
    env = catalog_env(
        launcher, OLLAMA_PRELOAD_MODELS="llama3.2,nomic-embed-text", PRELOADER_LOG_FORMAT="plain"
    )
    run = launcher.start(env=env)
    run.wait_for(lambda: any("preload.complete" in line for line in run.lines), "completion")
    assert run.stop() == 0
    story = [
        line for line in run.lines if re.search(r"(Preloading|Loading|loaded|complete|✓)", line)
    ]
    text = "\n".join(story)
    assert "Preloading 2 models" in text
    assert "Loading llama3.2:latest" in text
    assert "Loading nomic-embed-text:latest" in text
    assert "✓ Loaded and pinned nomic-embed-text:latest (embedding)" in text
    assert "Preloading complete" in text
    assert not any("\x1b[" in line for line in run.lines)  # no colour codes off a TTY


def test_embedding_detected_without_capabilities(launcher: Launcher) -> None:
    """Older servers: no capabilities, so pooling_type marks the embedding model."""
    env = catalog_env(
        launcher, OLLAMA_PRELOAD_MODELS="all-minilm", FAKE_OLLAMA_PRESENT="all-minilm"
    )
    Path(env["FAKE_OLLAMA_FAULTS"]).write_text('{"no_capabilities": true}')
    run = launcher.start(env=env)
    run.wait_all_pinned()
    kind = run.wait_event("model.kind")
    assert kind["source"] == "pooling_type"
    assert kind["msg"] == "all-minilm:latest is an embedding model"
    assert run.requests("/api/generate") == []
    assert run.stop() == 0


def test_embed_endpoint_missing_falls_back_to_legacy(launcher: Launcher) -> None:
    """A server without /api/embed is loaded through /api/embeddings with an empty prompt."""
    env = catalog_env(
        launcher, OLLAMA_PRELOAD_MODELS="all-minilm", FAKE_OLLAMA_PRESENT="all-minilm"
    )
    Path(env["FAKE_OLLAMA_FAULTS"]).write_text('{"no_embed_endpoint": true}')
    run = launcher.start(env=env)
    run.wait_all_pinned()
    legacy = run.requests("/api/embeddings")
    assert [r["body"]["prompt"] for r in legacy] == [""]
    assert run.stop() == 0


def test_kind_override_and_options_are_sent(launcher: Launcher) -> None:
    """`?num_ctx=` reaches the load request and the runner; kind= skips detection (the load
    goes first; /api/show only checks the kind once it is loaded)."""
    env = catalog_env(
        launcher,
        OLLAMA_PRELOAD_MODELS="llama3.2?num_ctx=8192,all-minilm?kind=embedding",
        FAKE_OLLAMA_PRESENT="llama3.2,all-minilm",
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()
    generate = run.requests("/api/generate")[0]["body"]
    assert generate["options"] == {"num_ctx": 8192}
    contexts = {m["name"]: m["context_length"] for m in run.ps()}
    assert contexts["llama3.2:latest"] == 8192
    asked = [(r["path"], r["body"].get("model")) for r in run.requests() if r.get("body")]
    first_load = asked.index(("/api/embed", "all-minilm"))
    assert ("/api/show", "all-minilm") not in asked[:first_load]
    assert run.stop() == 0


def test_dotenv_configures_the_supervisor_and_the_server(launcher: Launcher) -> None:
    """A `.env` in the working directory is read; its OLLAMA_* reach `ollama serve`."""
    env = catalog_env(launcher)
    env.pop("OLLAMA_PRELOAD_MODELS", None)
    work = launcher.tmp / "work"
    work.mkdir(exist_ok=True)
    (work / ".env").write_text("OLLAMA_PRELOAD_MODELS=llama3.2\nOLLAMA_NUM_PARALLEL=2\n")
    run = launcher.start(env=env)
    run.wait_all_pinned()
    assert run.fake_events("serve_start")[-1]["env"]["OLLAMA_NUM_PARALLEL"] == "2"
    assert run.stop() == 0


def test_second_signal_kills_at_once(launcher: Launcher) -> None:
    """A second SIGTERM during shutdown kills the group and exits 128+15."""
    env = catalog_env(launcher, OLLAMA_PRELOAD_MODELS="llama3.2", PRELOADER_SHUTDOWN_GRACE="60")
    run = launcher.start(env=env)
    run.wait_all_pinned()
    serve_pid = run.fake_events("serve_start")[-1]["pid"]
    os.kill(serve_pid, signal.SIGSTOP)  # a serve that ignores SIGTERM for now
    run.proc.send_signal(signal.SIGTERM)
    run.wait_event("supervisor.stopping")
    run.wait_event("server.stopping")
    assert run.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    run.wait_for(lambda: processes_in_group(serve_pid) == [], "group gone")
