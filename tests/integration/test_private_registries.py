"""Private registries against the fake: `?insecure=true`, SSL_CERT_FILE, and one clear failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import certifi
from fake_catalogs import SMALL, model, write_catalog
from preloader_harness import Launcher

PLAIN = "127.0.0.1:5000/library/tiny-chat"  # a plain-HTTP registry (the fake's `registry` fault)
TLS = "127.0.0.1:5002/library/tiny-embed"  # a TLS registry with a private CA
REGISTRIES = {"registry": {"127.0.0.1:5000": "http", "127.0.0.1:5002": "private-ca"}}
LOADS = ("/api/generate", "/api/embed")


def registry_env(launcher: Launcher, models: str, **env: str) -> dict[str, str]:
    catalog = {
        **SMALL,
        f"{PLAIN}:latest": model(size=0.002, family="llama"),
        f"{TLS}:latest": model("embedding", size=0.001, family="bert"),
    }
    full = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json", catalog),
        OLLAMA_PRELOAD_MODELS=models,
        **env,
    )
    if "SSL_CERT_FILE" not in env:
        full.pop("SSL_CERT_FILE", None)  # the runner's own CA file must not make TLS pass
    Path(full["FAKE_OLLAMA_FAULTS"]).write_text(json.dumps(REGISTRIES))
    return full


def pulls_of(requests: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r["body"] for r in requests if r["body"]["model"] == name]


def test_misconfigured_registries_fail_once_with_the_fix(launcher: Launcher) -> None:
    """Plain HTTP without insecure, a private CA without SSL_CERT_FILE: one `failed` each, the
    fix in its reason, no retries, a long wait; the public model is pinned all the same."""
    env = registry_env(launcher, f"{PLAIN},{TLS},llama3.2")
    run = launcher.start(env=env)
    plain = run.wait_event("model.failed", model=f"{PLAIN}:latest")
    tls = run.wait_event("model.failed", model=f"{TLS}:latest")
    run.wait_event("model.pinned", model="llama3.2:latest")

    assert "speaks plain HTTP" in plain["reason"]
    assert "add ?insecure=true to this entry of OLLAMA_PRELOAD_MODELS" in plain["reason"]
    assert "server gave HTTP response to HTTPS client" in plain["reason"]
    assert "set SSL_CERT_FILE=/path/ca.pem" in tls["reason"]
    assert "x509: certificate signed by unknown authority" in tls["reason"]
    assert plain["msg"].startswith(f"{PLAIN}:latest: the registry 127.0.0.1:5000 speaks")
    assert plain["retry_in"] == tls["retry_in"] == 600
    assert run.events("model.pull.retry") == []
    requests = run.requests("/api/pull")
    assert len(pulls_of(requests, PLAIN)) == len(pulls_of(requests, TLS)) == 1
    assert run.count_events("model.failed") == 2

    status = json.loads(run.cli("status", "--json").stdout)
    models = {m["name"]: m for m in status["models"]}
    assert models[f"{PLAIN}:latest"]["state"] == "failed"
    assert "insecure=true" in models[f"{PLAIN}:latest"]["reason"]
    assert models["llama3.2:latest"]["state"] == "pinned"
    assert run.stop() == 0


def test_insecure_and_ssl_cert_file_make_both_registries_work(launcher: Launcher) -> None:
    """`?insecure=true` reaches that entry's pull only and no load; SSL_CERT_FILE reaches the
    server, so the TLS registry needs no flag. Everything is pinned."""
    # Any real PEM bundle: the fake trusts its private CA once SSL_CERT_FILE names a file.
    env = registry_env(
        launcher, f"{PLAIN}?insecure=true,{TLS},llama3.2", SSL_CERT_FILE=certifi.where()
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()

    requests = run.requests("/api/pull")
    assert [p.get("insecure") for p in pulls_of(requests, PLAIN)] == [True]
    assert [p.get("insecure") for p in pulls_of(requests, TLS)] == [False]
    assert [p.get("insecure") for p in pulls_of(requests, "llama3.2")] == [False]
    for path in LOADS:
        for load in run.requests(path):
            assert "insecure" not in load["body"]
            assert "insecure" not in (load["body"].get("options") or {})
    assert {m["name"] for m in run.ps()} == {f"{PLAIN}:latest", f"{TLS}:latest", "llama3.2:latest"}
    assert run.events("model.failed") == []
    assert run.stop() == 0


def test_pull_command_exits_4_with_the_fix_and_no_retry(launcher: Launcher) -> None:
    """`pull` gives up on the plain registry at once: exit 4, the fix on its last line."""
    env = registry_env(launcher, f"{PLAIN},llama3.2", PRELOADER_PULL_ATTEMPTS="5")
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 4, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ollama-preloader: error: 1 of 2 models could not be pulled: ")
    assert f"{PLAIN}:latest (the registry 127.0.0.1:5000 speaks plain HTTP" in last
    assert "add ?insecure=true" in last
    assert "llama3.2" not in last
    assert '"model.pull.retry"' not in result.stderr
    records = [json.loads(line) for line in Path(env["FAKE_OLLAMA_LOG"]).read_text().splitlines()]
    pulls = [r for r in records if r.get("path") == "/api/pull"]
    assert len(pulls_of(pulls, PLAIN)) == 1


def test_pull_command_with_insecure_bakes_the_model(launcher: Launcher) -> None:
    """With `?insecure=true` the same registry gives exit 0."""
    env = registry_env(launcher, f"{PLAIN}?insecure=true")
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 0, result.stderr
    assert "bake.complete" in result.stderr


def test_a_wrong_ssl_cert_file_is_exit_2_before_anything_starts(launcher: Launcher) -> None:
    """A CA path that does not exist: one line naming SSL_CERT_FILE, exit 2, no server."""
    missing = str(launcher.tmp / "no-such-ca.pem")
    env = registry_env(launcher, f"{TLS}", SSL_CERT_FILE=missing)
    result = launcher.run_once(("run",), env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"ollama-preloader: error: SSL_CERT_FILE={missing!r}: cannot be read as CA certificates "
        "(no such file or directory); name the PEM file of the CA that signed your registry's "
        "certificate, or unset it"
    ]
    assert not Path(env["FAKE_OLLAMA_LOG"]).exists()


def test_adding_insecure_to_the_models_file_pulls_at_once(launcher: Launcher) -> None:
    """The fix the failure names, made live: `?insecure=true` added to the models file retries
    the refused pull now (not after its ten-minute wait), and the model is pinned."""
    models = launcher.tmp / "models.txt"
    models.write_text(f"{PLAIN}\nllama3.2\n")
    env = registry_env(launcher, "", PRELOADER_MODELS_FILE=str(models))
    run = launcher.start(env=env)
    failed = run.wait_event("model.failed", model=f"{PLAIN}:latest")
    assert failed["retry_in"] == 600
    run.wait_event("model.pinned", model="llama3.2:latest")

    models.write_text(f"{PLAIN}?insecure=true\nllama3.2\n")
    reloaded = run.wait_event("config.reloaded")
    assert reloaded["pull_changed"] == [f"{PLAIN}:latest"]
    assert reloaded["changed"] == []
    run.wait_event("model.pinned", model=f"{PLAIN}:latest")

    assert [p.get("insecure") for p in pulls_of(run.requests("/api/pull"), PLAIN)] == [False, True]
    assert run.count_events("model.pinned", model="llama3.2:latest") == 1  # never reloaded
    assert run.stop() == 0
