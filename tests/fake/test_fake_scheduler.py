"""Scheduler behaviour of the fake: keep_alive, pins, eviction order, reloads, crashes, VRAM."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import httpx
from fake_ollama.harness import FakeOllama, pid_alive

from .conftest import CATALOG, MakeFake

GB = 1_000_000_000


def gen(fake: FakeOllama, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(fake.url("/api/generate"), json={"model": model, **extra}, timeout=30)


def runner(fake: FakeOllama, model: str) -> dict[str, Any]:
    return next(r for r in fake.state()["runners"] if r["model"] == model)


def years_ahead(expires_at: str) -> float:
    delta = dt.datetime.fromisoformat(expires_at) - dt.datetime.now(dt.UTC)
    return delta.days / 365


def test_pinned_expiry_and_cli_forever(make_fake: MakeFake) -> None:
    """keep_alive -1 gives expires_at ~292 years ahead; `ollama ps` prints Forever (§2.4, §8.3)."""
    fake = make_fake(present=["llama3.2", "all-minilm"])
    gen(fake, "llama3.2", keep_alive=-1)
    httpx.post(
        fake.url("/api/embed"), json={"model": "all-minilm", "input": [], "keep_alive": "5m"}
    )
    ps = fake.ps()
    assert [m["name"] for m in ps] == ["llama3.2:latest", "all-minilm:latest"]
    assert years_ahead(ps[0]["expires_at"]) > 100
    assert years_ahead(ps[1]["expires_at"]) < 1
    out = fake.cli("ps")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert lines[1].split()[0] == "llama3.2:latest"
    assert lines[1].rstrip().endswith("Forever")
    assert "100% CPU" in lines[1]
    assert "4 minutes from now" in lines[2]


def test_omitted_keep_alive_keeps_pin(make_fake: MakeFake) -> None:
    """A later request without keep_alive leaves the pin in place (§2.3)."""
    fake = make_fake(present=["llama3.2"])
    gen(fake, "llama3.2", keep_alive=-1)
    gen(fake, "llama3.2", prompt="hi", stream=False)
    gen(fake, "llama3.2")
    assert runner(fake, "llama3.2:latest")["pinned"]
    assert years_ahead(fake.ps()[0]["expires_at"]) > 100
    gen(fake, "llama3.2", keep_alive="5m")
    assert not runner(fake, "llama3.2:latest")["pinned"]
    assert fake.state()["load_counts"] == {"llama3.2:latest": 1}


def test_reload_on_num_ctx_drops_pin(make_fake: MakeFake) -> None:
    """Different num_ctx reloads; the new runner takes the default keep_alive (§7.4, §2.3)."""
    fake = make_fake(present=["llama3.2"])
    gen(fake, "llama3.2", keep_alive=-1, options={"num_ctx": 8192})
    first = runner(fake, "llama3.2:latest")
    assert first["context_length"] == 8192
    gen(fake, "llama3.2")  # automatic num_ctx != 8192
    second = runner(fake, "llama3.2:latest")
    assert second["pid"] != first["pid"]
    assert not second["pinned"]
    assert second["keep_alive"] == "5m0s"
    assert second["context_length"] == 4096
    assert fake.events("reload", model="llama3.2:latest")[0]["reason"] == "options"
    fake.wait_for(lambda: not pid_alive(first["pid"]), what="old runner killed")
    gen(fake, "llama3.2", options={"temperature": 0.1})  # sampling options never reload
    assert runner(fake, "llama3.2:latest")["pid"] == second["pid"]


def test_eviction_picks_shortest_keep_alive(make_fake: MakeFake) -> None:
    """At the model limit the idle runner with the shortest keep_alive goes, not LRU (§7.2)."""
    fake = make_fake(
        present=["llama3.2", "llama3.2:1b", "qwen2.5-coder:1.5b-base"],
        extra={"OLLAMA_MAX_LOADED_MODELS": "2"},
    )
    gen(fake, "llama3.2", keep_alive=-1)
    gen(fake, "llama3.2:1b", keep_alive="10m")
    gen(fake, "llama3.2", prompt="recent use of the pinned one", stream=False)
    gen(fake, "qwen2.5-coder:1.5b-base", keep_alive="1h")
    names = {m["name"] for m in fake.ps()}
    assert names == {"llama3.2:latest", "qwen2.5-coder:1.5b-base"}
    evict = fake.events("evict")
    assert [(e["model"], e["reason"]) for e in evict] == [("llama3.2:1b", "max_loaded_models")]
    # the pinned model is not protected when it is the shortest idle one
    gen(fake, "llama3.2:1b", keep_alive="10m")
    assert {m["name"] for m in fake.ps()} == {"llama3.2:latest", "llama3.2:1b"}


def test_keep_alive_expiry_and_zero(make_fake: MakeFake) -> None:
    """A short keep_alive expires; keep_alive 0 with a prompt unloads after the request."""
    fake = make_fake(present=["llama3.2", "all-minilm"])
    gen(fake, "llama3.2", keep_alive=0.2)
    fake.wait_for(lambda: fake.events("expire", model="llama3.2:latest"), what="expire event")
    fake.wait_for(lambda: not fake.ps(), what="unloaded")
    body = {"model": "all-minilm", "input": "x", "keep_alive": 0}
    assert httpx.post(fake.url("/api/embed"), json=body).status_code == 200
    fake.wait_for(lambda: not fake.ps(), what="unloaded after embed")
    unloads = [e["reason"] for e in fake.events("unload")]
    assert unloads == ["expired", "keep_alive"]


def test_default_keep_alive_from_env(make_fake: MakeFake) -> None:
    """OLLAMA_KEEP_ALIVE=-1 pins every new load that has no keep_alive."""
    fake = make_fake(present=["llama3.2"], extra={"OLLAMA_KEEP_ALIVE": "-1"})
    gen(fake, "llama3.2")
    assert runner(fake, "llama3.2:latest")["pinned"]


def test_crashed_runner_listed_then_reloaded(make_fake: MakeFake) -> None:
    """A dead runner stays in /api/ps until the next request reloads it (§9.5)."""
    fake = make_fake(present=["llama3.2"])
    gen(fake, "llama3.2", keep_alive=-1)
    pid = fake.crash_runner("llama3.2")
    assert not pid_alive(pid)
    assert [m["name"] for m in fake.ps()] == ["llama3.2:latest"]
    assert fake.events("runner_crash")[0]["pid"] == pid
    gen(fake, "llama3.2")  # no keep_alive: the reloaded runner gets the default
    r = runner(fake, "llama3.2:latest")
    assert r["pid"] != pid
    assert r["alive"]
    assert not r["pinned"]
    assert fake.events("reload")[0]["reason"] == "runner_died"


def test_control_evict(make_fake: MakeFake) -> None:
    """/_fake/evict unloads like the scheduler and logs an evict event."""
    fake = make_fake(present=["llama3.2"])
    gen(fake, "llama3.2", keep_alive=-1)
    pid = fake.runner_pids()[0]
    fake.evict("llama3.2")
    fake.wait_for(lambda: not fake.ps(), what="evicted")
    assert not pid_alive(pid)
    assert fake.events("evict")[0]["reason"] == "control"


def test_concurrent_requests_share_one_load(make_fake: MakeFake) -> None:
    """A request for a model being loaded waits for that load."""
    catalog = {**CATALOG, "llama3.2": {**CATALOG["llama3.2"], "load_seconds": 0.3}}
    fake = make_fake(present=["llama3.2"], catalog=catalog)
    results: list[int] = []

    def call() -> None:
        results.append(gen(fake, "llama3.2").status_code)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200, 200, 200]
    assert fake.state()["load_counts"] == {"llama3.2:latest": 1}


def test_alias_shares_runner(make_fake: MakeFake) -> None:
    """Names sharing a blob share one runner, listed under the loader's name (§9.3)."""
    fake = make_fake(present=["llama3.2", "llama-alias"])
    gen(fake, "llama3.2", keep_alive=-1)
    r = gen(fake, "llama-alias", keep_alive=-1).json()
    assert r["done_reason"] == "load"
    assert [m["name"] for m in fake.ps()] == ["llama3.2:latest"]
    show = {
        n: httpx.post(fake.url("/api/show"), json={"model": n}).json()["modelfile"]
        for n in ("llama3.2", "llama-alias")
    }
    from_lines = {n: [x for x in t.splitlines() if x.startswith("FROM ")] for n, t in show.items()}
    assert from_lines["llama3.2"] == from_lines["llama-alias"]


def test_context_length_clamped_and_env(make_fake: MakeFake) -> None:
    """num_ctx is clamped to the training context; OLLAMA_CONTEXT_LENGTH sets the default."""
    fake = make_fake(present=["all-minilm", "llama3.2"], extra={"OLLAMA_CONTEXT_LENGTH": "8192"})
    body = {"model": "all-minilm", "input": [], "options": {"num_ctx": 99999}}
    httpx.post(fake.url("/api/embed"), json=body)
    gen(fake, "llama3.2")
    ctx = {m["name"]: m["context_length"] for m in fake.ps()}
    assert ctx == {"all-minilm:latest": 512, "llama3.2:latest": 8192}


def test_vram_preflight_eviction(make_fake: MakeFake) -> None:
    """With a GPU, a load needing >80% of free VRAM evicts first (§7.2)."""
    catalog = {
        "a": {"size": 4 * GB, "vram": 5 * GB, "load_seconds": 0.05},
        "b": {"size": 4 * GB, "vram": 5 * GB, "load_seconds": 0.05},
    }
    fake = make_fake(catalog=catalog, present=["a", "b"], extra={"FAKE_OLLAMA_VRAM": str(10 * GB)})
    gen(fake, "a", keep_alive=-1)
    assert fake.ps()[0]["size_vram"] == 5 * GB
    gen(fake, "b", keep_alive=-1)
    assert [m["name"] for m in fake.ps()] == ["b:latest"]
    assert fake.events("evict")[0]["reason"] == "vram"
    assert "100% GPU" in fake.cli("ps").stdout


def test_vram_oom_evicts_everything(make_fake: MakeFake) -> None:
    """A model that cannot fit evicts all loaded models, retries once, then 500 (§7.3)."""
    catalog = {
        "small": {"size": GB, "vram": GB, "load_seconds": 0.02},
        "huge": {"size": 40 * GB, "vram": 40 * GB, "load_seconds": 0.02},
    }
    fake = make_fake(
        catalog=catalog, present=["small", "huge"], extra={"FAKE_OLLAMA_VRAM": str(8 * GB)}
    )
    gen(fake, "small", keep_alive=-1)
    r = gen(fake, "huge")
    assert r.status_code == 500
    assert r.json()["error"].startswith("llama-server reported out-of-memory during startup")
    assert fake.ps() == []
    ooms = fake.events("oom")
    assert ooms[0]["evicting"] == ["small:latest"]


def test_load_oom_fault_once_then_fits(make_fake: MakeFake) -> None:
    """load_oom times=1: the OOM evicts everything, the retry succeeds (§7.3)."""
    fake = make_fake(
        present=["llama3.2", "all-minilm"], faults={"load_oom": {"all-minilm": {"times": 1}}}
    )
    gen(fake, "llama3.2", keep_alive=-1)
    r = httpx.post(fake.url("/api/embed"), json={"model": "all-minilm", "input": []})
    assert r.status_code == 200
    assert [m["name"] for m in fake.ps()] == ["all-minilm:latest"]
    assert fake.faults()["load_oom"]["all-minilm"]["times"] == 0


def test_max_queue_busy(make_fake: MakeFake) -> None:
    """A full pending queue answers 503 server busy (§7.1)."""
    catalog = {**CATALOG, "llama3.2": {**CATALOG["llama3.2"], "load_seconds": 1.5}}
    fake = make_fake(
        present=["llama3.2", "llama3.2:1b", "all-minilm"],
        catalog=catalog,
        extra={"OLLAMA_MAX_QUEUE": "1"},
    )
    statuses: list[int] = []

    def call(model: str) -> None:
        statuses.append(gen(fake, model).status_code)

    first = threading.Thread(target=call, args=("llama3.2",))
    first.start()
    fake.wait_for(lambda: "starting llama-server" in fake.stderr_text(), what="load started")
    rest = [threading.Thread(target=call, args=(m,)) for m in ("llama3.2:1b", "llama3.2:1b")]
    for t in rest:
        t.start()
    for t in [first, *rest]:
        t.join()
    assert sorted(statuses) == [200, 200, 503]


def test_load_timeout(make_fake: MakeFake) -> None:
    """A load slower than OLLAMA_LOAD_TIMEOUT fails with 500 and leaves nothing loaded (§7.6)."""
    catalog = {"slow": {"size": GB, "load_seconds": 5}}
    fake = make_fake(catalog=catalog, present=["slow"], extra={"OLLAMA_LOAD_TIMEOUT": "200ms"})
    r = gen(fake, "slow")
    assert r.status_code == 500
    assert r.json()["error"].startswith("timed out waiting for llama-server to start")
    assert fake.ps() == []


def test_speed_scales_model_delays(make_fake: MakeFake) -> None:
    """FAKE_OLLAMA_SPEED divides catalog delays (a 50 s load finishes at speed 1000)."""
    catalog = {"slow": {"size": GB, "load_seconds": 50, "pull_seconds": 50}}
    fake = make_fake(catalog=catalog, speed=1000)
    status, lines = fake.stream("/api/pull", {"model": "slow"})
    assert status == 200
    assert lines[-1] == {"status": "success"}
    assert gen(fake, "slow").json()["done_reason"] == "load"
