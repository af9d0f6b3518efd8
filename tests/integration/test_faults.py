"""Survive the real world: capacity thrash, crashes, faults and bad input, against the fake."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

from fake_catalogs import GB, SMALL, model, write_catalog
from preloader_harness import Launcher, Run, processes_in_group


def start(
    launcher: Launcher, models: str, catalog: dict[str, Any] | None = None, **env: str
) -> Run:
    full = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json", catalog),
        OLLAMA_PRELOAD_MODELS=models,
        **env,
    )
    return launcher.start(env=full)


def loads(run: Run, name: str | None = None) -> int:
    return len([e for e in run.fake_events("load") if name in (None, e.get("model"))])


def ps_polls(run: Run) -> int:
    return run.count_requests("/api/ps")


def settle(run: Run, polls: int = 10) -> None:
    """Let the supervisor run `polls` more watch cycles (observed at the fake, not timed)."""
    target = ps_polls(run) + polls
    run.wait_for(lambda: ps_polls(run) >= target, f"{polls} more watch cycles")


def pinned_names(run: Run) -> set[str]:
    return {m["name"] for m in run.ps() if m["expires_at"] > "2200"}


# --- capacity ---------------------------------------------------------------------------------


def test_explicit_limit_keeps_the_first_models(launcher: Launcher) -> None:
    """Four models, OLLAMA_MAX_LOADED_MODELS=2: the first two pinned, the others never loaded."""
    run = start(
        launcher,
        "llama3.2,devstral,qwen2.5-coder:1.5b-base,all-minilm",
        OLLAMA_MAX_LOADED_MODELS="2",
    )
    warning = run.wait_event("capacity.warning")
    assert "OLLAMA_MAX_LOADED_MODELS=2" in warning["msg"]
    run.wait_event("model.pinned", model="devstral:latest")
    settle(run)
    assert pinned_names(run) == {"llama3.2:latest", "devstral:latest"}
    assert loads(run) == 2
    failed = {e["model"]: e["reason"] for e in run.events("model.failed")}
    assert set(failed) == {"qwen2.5-coder:1.5b-base", "all-minilm:latest"}
    assert all(r.startswith("capacity:") for r in failed.values())
    assert run.proc.poll() is None
    assert run.stop() == 0


def test_memory_thrash_is_stopped(launcher: Launcher) -> None:
    """Only two models fit in VRAM: the first two stay pinned and the loads are bounded."""
    catalog = {
        name: model(size=3.0, vram=3.5 * GB)
        for name in ("a:latest", "b:latest", "c:latest", "d:latest")
    }
    run = start(launcher, "a,b,c,d", catalog, FAKE_OLLAMA_VRAM=str(10 * GB))
    run.wait_for(lambda: len(run.events("model.failed")) >= 2, "c and d giving way")
    settle(run, 20)
    assert pinned_names(run) == {"a:latest", "b:latest"}
    failed = {e["model"] for e in run.events("model.failed")}
    assert failed == {"c:latest", "d:latest"}
    conflict = run.events("capacity.conflict")[0]
    assert "cannot all be loaded together" in conflict["msg"]
    assert "OLLAMA_MAX_LOADED_MODELS" in conflict["msg"]
    total = loads(run)
    assert total <= 8  # a, b, c, d, and a, b put back: no storm
    settle(run, 20)
    assert loads(run) == total
    assert run.stop() == 0


def test_oom_on_load_gives_way_and_others_return(launcher: Launcher) -> None:
    """A model too big for the GPU clears every model (Ollama's OOM path); it gives way and
    the others are loaded again."""
    catalog = {
        "a:latest": model(size=2.0, vram=2 * GB),
        "b:latest": model(size=2.0, vram=2 * GB),
        "huge:latest": model(size=30.0, vram=30 * GB),
    }
    run = start(launcher, "a,b,huge", catalog, FAKE_OLLAMA_VRAM=str(10 * GB))
    failed = run.wait_event("model.failed", model="huge:latest")
    assert "ran out of memory" in failed["reason"]
    assert run.fake_events("oom")
    # It pushed out models earlier in the list: no quick retry, which would evict them again.
    assert "pushed out models earlier in the list" in failed["reason"]
    assert failed["retry_in"] == 900  # PRELOADER_CAPACITY_BACKOFF's default
    run.wait_for(lambda: pinned_names(run) == {"a:latest", "b:latest"}, "a and b back")
    assert run.stop() == 0


def test_transient_oom_is_retried_after_a_short_delay(launcher: Launcher) -> None:
    """Two loads that run out of memory, then room: retried after PRELOADER_OOM_RETRY, then
    twice that, not after the capacity backoff; then pinned."""
    env = launcher.env(
        OLLAMA_PRELOAD_MODELS="llama3.2",
        FAKE_OLLAMA_PRESENT="llama3.2",
        PRELOADER_OOM_RETRY="0.3",
        PRELOADER_CAPACITY_BACKOFF="10m",
    )
    Path(env["FAKE_OLLAMA_FAULTS"]).write_text(json.dumps({"load_oom": {"llama3.2": {"times": 2}}}))
    run = launcher.start(env=env)
    pinned = run.wait_event("model.pinned", model="llama3.2:latest")
    assert pinned["reason"] == "preload"
    failed = run.events("model.failed")
    assert [e["retry_in"] for e in failed] == [0.3, 0.6]
    assert "out-of-memory loads in the last hour: 1 of at most 6" in failed[0]["reason"]
    assert "out-of-memory loads in the last hour: 2 of at most 6" in failed[1]["reason"]
    assert [r["body"]["model"] for r in run.requests("/api/generate")] == ["llama3.2"] * 3
    assert pinned_names(run) == {"llama3.2:latest"}
    assert run.stop() == 0


def test_model_that_never_fits_is_tried_six_times_an_hour(launcher: Launcher) -> None:
    """Every load runs out of memory: doubling waits up to the capacity backoff, then the sixth
    failure waits for the hour to pass; no seventh load."""
    catalog = {"huge:latest": model(size=30.0, vram=30 * GB)}
    run = start(
        launcher,
        "huge",
        catalog,
        FAKE_OLLAMA_VRAM=str(10 * GB),
        PRELOADER_OOM_RETRY="0.1",
        PRELOADER_CAPACITY_BACKOFF="1",
    )
    run.wait_for(lambda: len(run.events("model.failed")) >= 6, "six out-of-memory loads")
    settle(run, 20)  # 4 s of watch cycles: without the bound, four more loads at the 1 s cap
    failed = run.events("model.failed")
    assert [e["retry_in"] for e in failed[:5]] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert len(failed) == 6
    assert failed[5]["retry_in"] > 3000  # an hour after the first of the six
    assert "6 of at most 6" in failed[5]["reason"]
    assert len(run.requests("/api/generate")) == 6
    assert run.proc.poll() is None
    assert run.stop() == 0


def test_client_unpinning_is_put_back_every_time(launcher: Launcher) -> None:
    """A client that keeps un-pinning a model is no capacity conflict: six times (past the old
    reload-storm count of five), six re-pins, never `failed`."""
    run = start(launcher, "llama3.2", FAKE_OLLAMA_PRESENT="llama3.2")
    run.wait_all_pinned()

    def repinned(times: int) -> bool:
        return run.count_events("model.pinned", reason="unpinned") >= times

    for i in range(1, 7):
        run.http("POST", "/api/generate", {"model": "llama3.2", "keep_alive": "5m"})
        run.wait_for(functools.partial(repinned, i), f"repin {i}")
    settle(run)
    assert pinned_names(run) == {"llama3.2:latest"}
    assert run.events("model.failed") == []
    assert run.stop() == 0


def test_declared_models_pushing_each_other_out_give_up(launcher: Launcher) -> None:
    """Only one of a and b fits and clients keep loading b: a is put back five times, each
    evicting b again, then gives way naming b (the reload storm the guard is for)."""
    catalog = {name: model(size=3.0, vram=6 * GB) for name in ("a:latest", "b:latest")}
    run = start(launcher, "a,b", catalog, FAKE_OLLAMA_VRAM=str(10 * GB))
    run.wait_event("model.failed", model="b:latest")  # the first conflict: b gives way
    run.wait_for(lambda: pinned_names(run) == {"a:latest"}, "a back")

    def a_back_or_failed(pinned: int) -> bool:
        back = run.count_events("model.pinned", model="a:latest") > pinned
        return back or run.count_events("model.failed", model="a:latest") > 0

    for i in range(1, 6):
        if run.count_events("model.failed", model="a:latest"):
            break
        pinned = run.count_events("model.pinned", model="a:latest")
        run.http("POST", "/api/generate", {"model": "b", "prompt": "hi", "stream": False})
        run.wait_for(functools.partial(a_back_or_failed, pinned), f"a put back {i}")
    failed = run.wait_event("model.failed", model="a:latest")
    assert "pushed out by other declared models (last by b:latest)" in failed["reason"]
    assert "5 times in 10 minutes" in failed["reason"]
    settle(run)
    assert "a:latest" not in pinned_names(run)  # it gave way: unloaded, as status says
    doc = json.loads(run.cli("status", "--json").stdout)
    assert {m["name"]: m["state"] for m in doc["models"]}["a:latest"] == "failed"
    assert run.stop() == 0


def test_undeclared_model_evicting_a_declared_one_is_repaired_and_named(
    launcher: Launcher,
) -> None:
    """OLLAMA_MAX_LOADED_MODELS=2, a and b declared, a client loads the undeclared c six times:
    every eviction is repaired (never `failed`), and one warning names c."""
    catalog = {name: model(size=1.0) for name in ("a:latest", "b:latest", "c:latest")}
    run = start(launcher, "a,b", catalog, OLLAMA_MAX_LOADED_MODELS="2", FAKE_OLLAMA_PRESENT="a,b,c")
    run.wait_all_pinned()

    def both_back() -> bool:
        return {m["name"] for m in run.ps()} == {"a:latest", "b:latest"} == pinned_names(run)

    for i in range(1, 7):
        run.http("POST", "/api/generate", {"model": "c", "prompt": "hi", "stream": False})
        run.wait_for(both_back, f"a and b back after {i}")
    assert run.events("model.failed") == []
    warned = run.events("capacity.undeclared")
    assert warned
    assert {e["undeclared"] for e in warned} == {"c:latest"}
    assert "c:latest is loaded but not declared" in warned[0]["msg"]
    doc = json.loads(run.cli("status", "--json").stdout)
    assert {m["state"] for m in doc["models"]} == {"pinned"}
    assert run.stop() == 0


# --- crashes ----------------------------------------------------------------------------------


def test_serve_killed_is_restarted_and_models_return(launcher: Launcher) -> None:
    """SIGKILL to `ollama serve`: restarted with backoff, models back, old runners gone."""
    run = start(launcher, "llama3.2,all-minilm")
    run.wait_all_pinned()
    old = run.fake_events("serve_start")[-1]["pid"]
    assert len(processes_in_group(old)) == 3
    os.kill(old, signal.SIGKILL)
    exited = run.wait_event("server.exited")
    # Its last output was access lines for our loads: none of them is quoted as the cause.
    assert exited["msg"] == "ollama serve was killed by SIGKILL (signal 9)"
    assert (exited["returncode"], exited["signal"]) == (-signal.SIGKILL, "SIGKILL")
    run.wait_event("server.ready", restart=True)
    run.wait_for(lambda: len(pinned_names(run)) == 2, "both models back")
    assert processes_in_group(old) == []
    new = run.fake_events("serve_start")[-1]["pid"]
    assert new != old
    assert run.proc.poll() is None
    assert run.stop() == 0
    assert processes_in_group(new) == []


def test_serve_dying_with_exit_policy_exits_with_its_code(launcher: Launcher) -> None:
    """PRELOADER_ON_SERVER_EXIT=exit: the supervisor exits with the child's code (137 = KILL)."""
    run = start(launcher, "llama3.2", PRELOADER_ON_SERVER_EXIT="exit")
    run.wait_all_pinned()
    pid = run.fake_events("serve_start")[-1]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert run.wait_exit() == 128 + signal.SIGKILL
    assert processes_in_group(pid) == []
    assert run.lines[-1] == (
        "ollama-preloader: error: ollama serve was killed by SIGKILL (signal 9); "
        "exiting too (PRELOADER_ON_SERVER_EXIT=exit)"
    )


def test_crashed_runner_is_repaired_by_the_refresh(launcher: Launcher) -> None:
    """A runner that died stays listed; the periodic refresh makes Ollama reload it."""
    run = start(launcher, "llama3.2", PRELOADER_REFRESH_INTERVAL="0.5")
    run.wait_all_pinned()
    run.http("POST", "/_fake/crash_runner", {"model": "llama3.2"})
    run.wait_for(
        lambda: any(e.get("reason") == "runner_died" for e in run.fake_events("reload")),
        "the reload of the dead runner",
    )

    def new_runner() -> list[dict[str, Any]]:
        runners: list[dict[str, Any]] = run.http("GET", "/_fake/state")["runners"]
        return runners if len(runners) == 1 and runners[0]["pinned"] else []

    runners = run.wait_for(new_runner, "the new runner, pinned")
    os.kill(runners[0]["pid"], 0)  # alive
    assert run.stop() == 0


# --- faults -----------------------------------------------------------------------------------


def test_pull_failing_repeatedly_then_succeeding(launcher: Launcher) -> None:
    """Three broken pull streams in a row, then success: pinned, and every retry logged."""
    full = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"),
        OLLAMA_PRELOAD_MODELS="llama3.2",
    )
    Path(full["FAKE_OLLAMA_FAULTS"]).write_text(
        json.dumps({"pull_fail": {"llama3.2": {"times": 3, "after_fraction": 0.3}}})
    )
    run = launcher.start(env=full)
    run.wait_all_pinned()
    assert len(run.events("model.pull.retry")) == 3
    assert len(run.fake_events("pull_error")) == 3
    assert len(run.fake_events("pull_success")) == 1
    assert run.stop() == 0


def test_policy_always_serves_the_copy_on_disk_while_the_update_fails(
    launcher: Launcher,
) -> None:
    """PRELOADER_PULL_POLICY=always, the model on disk, the registry away: pinned from the copy
    on disk at once with a warning, the update retried in the background until it works."""
    full = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"),
        OLLAMA_PRELOAD_MODELS="llama3.2",
        FAKE_OLLAMA_PRESENT="llama3.2",
        PRELOADER_PULL_POLICY="always",
    )
    down = {"pull_http_status": {"llama3.2": {"status": 502, "message": "registry down"}}}
    Path(full["FAKE_OLLAMA_FAULTS"]).write_text(json.dumps(down))
    run = launcher.start(env=full)
    warning = run.wait_event("model.update_failed")
    assert warning["model"] == "llama3.2:latest"
    assert "copy on disk" in warning["msg"]
    run.wait_for(lambda: "llama3.2:latest" in pinned_names(run), "pinned from the disk copy")
    assert run.count_events("model.failed") == 0
    run.wait_for(lambda: run.count_events("model.update_failed") >= 2, "a background retry")
    assert "llama3.2:latest" in pinned_names(run)

    run.set_faults({})
    run.wait_event("model.pull.complete")
    assert "llama3.2:latest" in pinned_names(run)
    assert run.stop() == 0


def test_hung_ps_does_not_freeze_the_loop(launcher: Launcher) -> None:
    """/api/ps hangs twice: each times out, then an eviction is still repaired."""
    run = start(launcher, "llama3.2", PRELOADER_API_TIMEOUT="1")
    run.wait_all_pinned()
    run.set_faults({"hang": {"/api/ps": {"times": 2, "seconds": 30}}})
    run.wait_for(lambda: len(run.events("watch.unavailable")) >= 2, "two timed-out reads")
    run.http("POST", "/_fake/evict", {"model": "llama3.2"})
    run.wait_event("model.pinned", reason="evicted")
    assert run.stop() == 0


def test_sigterm_while_ps_hangs(launcher: Launcher) -> None:
    """A hung API call never holds up a stop."""
    run = start(launcher, "llama3.2", PRELOADER_API_TIMEOUT="2")
    run.wait_all_pinned()
    run.set_faults({"hang": {"/api/ps": {"seconds": 60}}})
    run.wait_event("watch.unavailable")  # one read timed out; the next one is hanging now
    assert run.stop(timeout=20) == 0


def test_busy_server_is_retried(launcher: Launcher) -> None:
    """503 `server busy` on loads is retried later and the model gets pinned."""
    full = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"),
        OLLAMA_PRELOAD_MODELS="llama3.2",
        FAKE_OLLAMA_PRESENT="llama3.2",
    )
    Path(full["FAKE_OLLAMA_FAULTS"]).write_text('{"busy": {"/api/generate": {"times": 2}}}')
    run = launcher.start(env=full)
    run.wait_all_pinned()
    retries = run.events("model.load.retry")
    assert len(retries) == 2
    assert "server busy" in retries[0]["error"]
    assert run.events("model.failed") == []
    assert run.stop() == 0


def test_sigterm_during_a_pull_keeps_the_partial_download(launcher: Launcher) -> None:
    """Stopping mid-pull exits 0 and leaves the partial download for the next start."""
    catalog = dict(SMALL)
    catalog["llama3.2:latest"] = model(size=2.0, pull_seconds=30)
    run = start(launcher, "llama3.2", catalog)
    run.wait_event("model.pull.progress")
    assert run.stop() == 0
    blobs = Path(run.env["OLLAMA_MODELS"]) / "blobs"
    partial = [p for p in blobs.iterdir() if p.name.endswith("-partial")]
    assert partial
    assert int(partial[0].read_text().strip() or 0) > 0


def test_sigterm_during_a_load(launcher: Launcher) -> None:
    """Stopping mid-load exits 0 and leaves no process of the group behind."""
    catalog = dict(SMALL)
    catalog["llama3.2:latest"] = model(size=2.0, load_seconds=60)
    run = start(launcher, "llama3.2", catalog, FAKE_OLLAMA_PRESENT="llama3.2")
    run.wait_event("model.loading")
    pid = run.fake_events("serve_start")[-1]["pid"]
    assert run.stop() == 0
    assert processes_in_group(pid) == []


def test_model_that_fails_to_load_is_failed_alone(launcher: Launcher) -> None:
    """A model that exists but cannot load is `failed` with Ollama's reason; others pinned."""
    full = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"),
        OLLAMA_PRELOAD_MODELS="devstral,llama3.2",
    )
    Path(full["FAKE_OLLAMA_FAULTS"]).write_text(
        '{"load_fail": {"devstral": {"status": 500, '
        '"message": "llama-server process has terminated: exit status 2"}}}'
    )
    run = launcher.start(env=full)
    failed = run.wait_event("model.failed", model="devstral:latest")
    assert "llama-server process has terminated" in failed["reason"]
    run.wait_event("model.pinned", model="llama3.2:latest")
    assert run.proc.poll() is None
    assert run.stop() == 0


def test_names_sharing_a_model_file_do_not_reload_forever(launcher: Launcher) -> None:
    """Two names for one model file share one runner: both count as pinned, loads stop."""
    catalog = dict(SMALL)
    catalog["my-llama:latest"] = {"alias_of": "llama3.2:latest"}
    run = start(launcher, "llama3.2,my-llama", catalog)
    run.wait_all_pinned()
    shared = run.wait_event("model.shared_runner")
    assert shared["model"] == "my-llama:latest"
    settle(run, 20)
    generates = len(run.requests("/api/generate"))
    settle(run, 20)
    assert len(run.requests("/api/generate")) == generates
    assert [m["name"] for m in run.ps()] == ["llama3.2:latest"]
    assert run.stop() == 0


def test_repulled_model_is_reported_not_reloaded_forever(launcher: Launcher) -> None:
    """A newer download of a pinned model: one warning, a bounded number of loads."""
    catalog = dict(SMALL)
    run = start(launcher, "llama3.2", catalog, PRELOADER_REFRESH_INTERVAL="0.5")
    run.wait_all_pinned()
    catalog["llama3.2:latest"] = {**SMALL["llama3.2:latest"], "revision": 2}
    write_catalog(launcher.tmp / "catalog.json", catalog)
    assert run.ollama("pull", "llama3.2").returncode == 0
    run.wait_event("model.stale_runner")
    settle(run, 20)
    before = loads(run)
    settle(run, 20)
    assert loads(run) == before <= 3
    assert len(run.events("model.stale_runner")) == 1
    assert run.stop() == 0


# --- bad input --------------------------------------------------------------------------------


def test_port_in_use_gives_exit_3_with_the_fix(launcher: Launcher) -> None:
    """Another program on OLLAMA_HOST's port: exit 3, Ollama's error and what to do."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = launcher.run_once(
            env=launcher.env(OLLAMA_HOST=f"127.0.0.1:{port}", PRELOADER_READY_TIMEOUT="10")
        )
    assert result.returncode == 3
    line = result.stderr.strip().splitlines()[-1]
    assert "address already in use" in line
    assert "set OLLAMA_HOST to a free address" in line


def test_unusable_model_store_gives_exit_3_with_the_fix(launcher: Launcher) -> None:
    """OLLAMA_MODELS that cannot be created: exit 3 naming the variable."""
    blocker = launcher.tmp / "a-file"
    blocker.write_text("not a directory")
    result = launcher.run_once(env=launcher.env(OLLAMA_MODELS=str(blocker / "models")))
    assert result.returncode == 3
    line = result.stderr.strip().splitlines()[-1]
    assert "OLLAMA_MODELS" in line


def test_server_that_never_answers_times_out_with_exit_3(launcher: Launcher) -> None:
    """Ollama bound but never serving (stuck GPU discovery): exit 3 after the ready timeout."""
    result = launcher.run_once(
        env=launcher.env(FAKE_OLLAMA_STARTUP_DELAY="60", PRELOADER_READY_TIMEOUT="2")
    )
    assert result.returncode == 3
    assert "PRELOADER_READY_TIMEOUT" in result.stderr.strip().splitlines()[-1]


# --- soak -------------------------------------------------------------------------------------


def _rss_and_fds(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def test_soak_no_growth_in_memory_or_descriptors(launcher: Launcher) -> None:
    """Thousands of watch cycles with evictions injected: RSS and open files stay flat."""
    run = start(
        launcher,
        "llama3.2,all-minilm",
        PRELOADER_WATCH_INTERVAL="0.001",
        PRELOADER_LOG_LEVEL="info",
    )
    run.wait_all_pinned()
    settle(run, 300)
    rss_before, fds_before = _rss_and_fds(run.proc.pid)
    # Four evictions per model: fewer than the reload-storm guard's five, so each comes back.
    for i in range(8):
        run.wait_for(lambda: len(pinned_names(run)) == 2, "both pinned")
        run.http("POST", "/_fake/evict", {"model": "llama3.2" if i % 2 else "all-minilm"})
        settle(run, 300)
    run.wait_for(lambda: len(pinned_names(run)) == 2, "both pinned")
    rss_after, fds_after = _rss_and_fds(run.proc.pid)
    assert ps_polls(run) >= 2500
    assert run.count_events("model.evicted") == 8
    assert fds_after <= fds_before + 2
    assert rss_after - rss_before < 8 * 1024  # kB
    assert run.stop() == 0


def test_transient_oom_with_three_models_pins_all_three(launcher: Launcher) -> None:
    """One out-of-memory load of the second model: Ollama's OOM path unloads the first and its
    retry succeeds. That eviction proves no conflict: the first is loaded back, all three fit,
    and nothing gives way for PRELOADER_CAPACITY_BACKOFF."""
    catalog = {name: model(size=2.0, vram=2 * GB) for name in ("a:latest", "b:latest", "c:latest")}
    env = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json", catalog),
        OLLAMA_PRELOAD_MODELS="a,b,c",
        FAKE_OLLAMA_VRAM=str(10 * GB),
    )
    Path(env["FAKE_OLLAMA_FAULTS"]).write_text(json.dumps({"load_oom": {"b": {"times": 1}}}))
    run = launcher.start(env=env)
    run.wait_event("model.pinned", model="c:latest")
    run.wait_for(lambda: pinned_names(run) == {"a:latest", "b:latest", "c:latest"}, "all three")
    oom = run.fake_events("oom")
    assert oom, "the fake's OOM path did not run"
    assert oom[0]["evicting"] == ["a:latest"]
    settle(run)
    assert pinned_names(run) == {"a:latest", "b:latest", "c:latest"}
    assert run.events("capacity.conflict") == []
    assert run.events("model.failed") == []
    assert run.stop() == 0
