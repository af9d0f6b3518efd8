"""Issues 26 and 27 on the real Ollama: what a new user saw, checked where the real server can
show it (the fake tier has the same cases in tests/integration/test_defects.py and others)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.request
from pathlib import Path
from typing import Any

from preloader_harness import Run
from prometheus_client.parser import text_string_to_metric_families
from real_harness import RealLauncher, Registry, free_port_pair, ps_rows


def status_json(run: Run) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(run.cli("status", "--json").stdout)
    return doc


def states(run: Run) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in status_json(run)["models"]}


def until(run: Run) -> dict[str, str]:
    """`ollama ps` rows as {name: UNTIL}."""
    return {row[0]: row[-1] for row in ps_rows(run)}


def metric(run: Run, name: str, **labels: str) -> float | None:
    _, body, _ = run.health_get("/metrics")
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def seed_as(real: RealLauncher, model: str, host: str) -> str:
    """Copy a pre-pulled model into the store under the registry name `host/library/model`
    (the bytes are the same whichever registry served them); returns that name."""
    assert real.registry is not None
    assert real.template_store is not None
    real.seed_store(model)
    tls = Path("manifests", f"127.0.0.1:{real.registry.port}", "library", model, "latest")
    dest = real.store / "manifests" / host / "library" / model / "latest"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(real.store / tls, dest)
    return f"{host}/library/{model}"


def watch_env(real: RealLauncher, host: str, models: str) -> dict[str, str]:
    """`watch` beside the test's own server, without `ollama` on PATH."""
    assert real.kit is not None
    env = real.env(OLLAMA_HOST=host, OLLAMA_PRELOAD_MODELS=models)
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if p != str(real.kit.bin_dir)
    )
    return env


def test_always_with_the_registry_down_serves_the_copy_on_disk(real: RealLauncher) -> None:
    """Issue 26 item 1: PRELOADER_PULL_POLICY=always, the registry down, the model on disk: it
    is pinned at once with one warning, and the update is left for later."""
    name = seed_as(real, "tiny-chat", f"127.0.0.1:{free_port_pair()}")  # nothing listens there
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{name}?insecure=true", PRELOADER_PULL_POLICY="always")
    run.wait_all_pinned()
    warned = run.wait_event("model.update_failed", model=f"{name}:latest")
    assert "serving the copy on disk" in warned["msg"]
    assert "connection refused" in warned["reason"]
    assert until(run) == {f"{name}:latest": "Forever"}
    assert states(run)[f"{name}:latest"]["state"] == "pinned"
    assert run.count_events("model.failed") == 0
    assert run.stop() == 0


def test_while_serve_is_away_no_model_reads_pinned(real: RealLauncher) -> None:
    """Issue 26 item 3: `watch`, the server stopped: status, /status and /metrics say no model
    is pinned while nothing answers; started again, both are pinned again."""
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    real.seed_store("tiny-chat", "tiny-embed")
    server = real.serve()
    run = real.start(("watch",), env=watch_env(real, server.env["OLLAMA_HOST"], f"{chat},{embed}"))
    run.wait_all_pinned()
    declared = [f"{chat}:latest", f"{embed}:latest"]
    assert metric(run, "ollama_preloader_model_pinned", model=declared[0]) == 1.0

    assert server.stop() == 0
    run.wait_for(lambda: status_json(run)["server_up"] is False, "server_up false")
    doc = status_json(run)
    assert all(m["state"] != "pinned" for m in doc["models"]), doc["models"]
    _, body = run.health_json("/status")
    assert all(m["state"] != "pinned" for m in body["models"])
    assert metric(run, "ollama_preloader_server_up") == 0.0
    for name in declared:
        assert metric(run, "ollama_preloader_model_pinned", model=name) == 0.0
    code, _, _ = run.health_get("/readyz")
    assert code == 503

    server.start()
    run.wait_for(lambda: all(s["state"] == "pinned" for s in states(run).values()), "pinned")
    assert run.stop() == 0


def test_sighup_with_dotenv_gone_keeps_the_set(real: RealLauncher) -> None:
    """Issue 26 item 4: the list in `.env`, the file removed, SIGHUP: config.reload_failed,
    both models stay pinned on the same runners."""
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    real.seed_store("tiny-chat", "tiny-embed")
    work = real.tmp / "work"
    work.mkdir(exist_ok=True)
    (work / ".env").write_text(f"OLLAMA_PRELOAD_MODELS={chat},{embed}\n")
    run = real.start()
    run.wait_all_pinned()
    runners = sorted(real.runners())

    (work / ".env").unlink()
    run.proc.send_signal(signal.SIGHUP)
    failed = run.wait_event("config.reload_failed")
    assert ".env" in failed["msg"]
    assert run.count_events("config.reloaded") == 0
    assert run.count_events("model.removed") == 0
    assert until(run) == {f"{chat}:latest": "Forever", f"{embed}:latest": "Forever"}
    assert sorted(real.runners()) == runners
    assert [m["state"] for m in status_json(run)["models"]] == ["pinned", "pinned"]
    assert run.stop() == 0


def test_a_finite_keep_alive_entry_reads_expired_once_ollama_lets_it_go(
    real: RealLauncher,
) -> None:
    """Issue 26 item 6: `tiny-chat2?keep_alive=3s` is warmed up, counted as loaded (not
    pinned), and once the real server unloads it `status` says `expired`; /readyz stays 200."""
    chat, chat2 = real.name("tiny-chat"), real.name("tiny-chat2")
    real.seed_store("tiny-chat", "tiny-chat2")
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{chat},{chat2}?keep_alive=3s", PRELOADER_WARMUP="true")
    done = run.wait_all_pinned()
    assert "1 pinned, 1 loaded with a finite keep_alive" in done["msg"]
    run.wait_event("model.warmup", model=f"{chat2}:latest")
    run.wait_event("model.expired", model=f"{chat2}:latest")
    assert until(run) == {f"{chat}:latest": "Forever"}
    model = states(run)[f"{chat2}:latest"]
    assert model["state"] == "expired"
    code, body, _ = run.health_get("/readyz")
    assert code == 200
    assert "1 expired as its keep_alive asked" in body
    assert run.stop() == 0


def test_a_model_left_out_for_capacity_is_pulled(real: RealLauncher) -> None:
    """Issue 26 item 7: OLLAMA_MAX_LOADED_MODELS=2, three declared, the third not on disk: the
    third is pulled (clients will find it) and keeps its capacity reason, not loaded."""
    chat, embed, chat2 = real.name("tiny-chat"), real.name("tiny-embed"), real.name("tiny-chat2")
    real.seed_store("tiny-chat", "tiny-embed")
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{chat},{embed},{chat2}", OLLAMA_MAX_LOADED_MODELS="2")
    run.wait_event("model.pull.complete", model=f"{chat2}:latest")
    listed = run.ollama("list")
    assert listed.returncode == 0, listed.stderr
    assert f"{chat2}:latest" in listed.stdout
    run.wait_for(lambda: states(run)[f"{chat2}:latest"]["state"] == "failed", "failed again")
    assert states(run)[f"{chat2}:latest"]["reason"].startswith(
        "capacity: OLLAMA_MAX_LOADED_MODELS=2"
    )
    # Its pull runs beside the first two loads: the second may still be loading now.
    pinned = {f"{chat}:latest": "Forever", f"{embed}:latest": "Forever"}
    run.wait_for(lambda: until(run) == pinned, "the first two pinned, the third not loaded")
    assert states(run)[f"{chat2}:latest"]["state"] == "failed"
    assert run.stop() == 0


def test_a_pull_behind_another_reads_queued(real: RealLauncher, own_registry: Registry) -> None:
    """Issue 26 (small): two pulls from a slow registry; the second model reads `queued` while
    the first downloads, then `pulling`, then both are pinned."""
    assert real.kit is not None
    # 1 MB/s: tiny-chat2 (4.4 MB) takes seconds, time enough to read the second one's state.
    real.kit.script("start-registry", "--port", str(own_registry.port), "--rate", "1000000")
    own_registry.running = True
    chat2, chat = own_registry.name("tiny-chat2"), own_registry.name("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{chat2}?insecure=true,{chat}?insecure=true")
    run.wait_event("model.pull.start", model=f"{chat2}:latest")
    models = states(run)
    assert models[f"{chat2}:latest"]["state"] == "pulling"
    assert models[f"{chat}:latest"]["state"] == "queued"
    row = next(line for line in run.cli("status").stdout.splitlines() if "tiny-chat:" in line)
    assert row.split()[2] == "queued"
    run.wait_all_pinned()
    starts = [e["model"] for e in run.events("model.pull.start")]
    assert starts == [f"{chat2}:latest", f"{chat}:latest"]
    assert run.stop() == 0


def test_a_model_pinned_before_watch_starts_shows_its_kind(real: RealLauncher) -> None:
    """Issue 26 (small): a model already pinned on the server when `watch` starts is adopted
    as it is, and `status` shows its kind from /api/show, not `-`."""
    chat, embed = real.name("tiny-chat"), real.name("tiny-embed")
    real.seed_store("tiny-chat", "tiny-embed")
    server = real.serve()
    for model, path in ((chat, "/api/generate"), (embed, "/api/embed")):
        done = real_post(server.base_url + path, {"model": model, "keep_alive": -1})
        assert done == 200
    run = real.start(("watch",), env=watch_env(real, server.env["OLLAMA_HOST"], f"{chat},{embed}"))
    run.wait_event("model.pinned", model=f"{embed}:latest", already=True)
    run.wait_for(lambda: all(m["kind"] for m in states(run).values()), "kinds known")
    models = states(run)
    assert models[f"{chat}:latest"]["kind"] == "completion"
    assert models[f"{embed}:latest"]["kind"] == "embedding"
    rows = {line.split()[0]: line.split()[1] for line in run.cli("status").stdout.splitlines()[1:3]}
    assert rows == {f"{chat}:latest": "completion", f"{embed}:latest": "embedding"}
    assert run.count_events("model.loading") == 0
    assert run.stop() == 0


def real_post(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
        return int(response.status)


def test_a_kind_the_model_does_not_have_fails_once_with_the_fix(real: RealLauncher) -> None:
    """Issue 26 (small), on the real server: kind=completion on tiny-embed (Ollama's 400 for
    generate) and kind=embedding on tiny-chat (Ollama loads it for an empty /api/embed):
    both `failed` once, naming the entry and the fix; nothing left loaded, no retry."""
    chat, embed, chat2 = real.name("tiny-chat"), real.name("tiny-embed"), real.name("tiny-chat2")
    real.seed_store("tiny-chat", "tiny-embed", "tiny-chat2")
    run = real.start(
        OLLAMA_PRELOAD_MODELS=f"{embed}?kind=completion,{chat}?kind=embedding,{chat2}",
        PRELOADER_RETRY_INITIAL="0.1s",
        PRELOADER_RETRY_MAX="0.2s",
    )
    wrong_embed = run.wait_event("model.failed", model=f"{embed}:latest")
    wrong_chat = run.wait_event("model.failed", model=f"{chat}:latest")
    run.wait_event("model.pinned", model=f"{chat2}:latest")
    assert wrong_embed["reason"] == (
        f"the entry '{embed}?kind=completion' in OLLAMA_PRELOAD_MODELS sets kind=completion, "
        f"but {embed}:latest is an embedding model; drop kind= from the entry or use "
        "kind=embedding"
    )
    assert f"but {chat}:latest is a completion model" in wrong_chat["reason"]
    assert wrong_chat["reason"].endswith("drop kind= from the entry or use kind=completion")
    run.wait_for(lambda: until(run) == {f"{chat2}:latest": "Forever"}, "only tiny-chat2 loaded")
    loads = run.count_events("model.loading")
    run.cli("status")  # a moment later, and after a look or two: nothing retried
    assert run.count_events("model.failed") == 2
    assert run.count_events("model.loading") == loads
    assert run.stop() == 0


def test_a_model_that_fails_to_load_reads_load_failed_with_or_without_kind(
    real: RealLauncher,
) -> None:
    """Issue 27 item 5: a truncated model file. Without kind= the real server fails /api/show,
    with kind= the load: both read `load failed: <Ollama's error>` as the README says."""
    chat, chat2 = real.name("tiny-chat"), real.name("tiny-chat2")
    real.seed_store("tiny-chat", "tiny-chat2")
    for blob in (real.store / "blobs").iterdir():
        if blob.stat().st_size > 500_000:  # the model files, not configs or templates
            with blob.open("r+b") as handle:
                handle.truncate(blob.stat().st_size // 2)
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{chat},{chat2}?kind=completion")
    plain = run.wait_event("model.failed", model=f"{chat}:latest")
    kind = run.wait_event("model.failed", model=f"{chat2}:latest")
    assert plain["reason"].startswith("load failed: "), plain["reason"]
    assert kind["reason"].startswith("load failed: "), kind["reason"]
    assert "could not inspect" not in plain["reason"]
    assert run.stop() == 0
