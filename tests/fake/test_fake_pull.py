"""Pulls: the status sequence, errors, resume from partial files, state across restarts."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
from fake_ollama.harness import FakeOllama

from .conftest import CATALOG, MakeFake


def pull_lines(fake: FakeOllama, model: str, **extra: Any) -> tuple[int, list[dict[str, Any]]]:
    return fake.stream("/api/pull", {"model": model, **extra})


def model_digest(lines: list[dict[str, Any]]) -> str:
    """Digest of the first (model) layer in a pull stream."""
    return str(next(x["digest"] for x in lines if "digest" in x))


def test_pull_stream_sequence(make_fake: MakeFake) -> None:
    """Statuses come in the documented order with digest/total/completed (§6)."""
    fake = make_fake()
    status, lines = pull_lines(fake, "llama3.2")
    assert status == 200
    statuses = [x["status"] for x in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    pulling = [x for x in lines if x["status"].startswith("pulling ") and "digest" in x]
    assert pulling
    for x in pulling:
        assert x["status"] == "pulling " + x["digest"][7:19]
        assert x["digest"].startswith("sha256:")
        assert 0 < x.get("completed", 0) <= x["total"] or "completed" not in x
    model_lines = [x for x in pulling if x["digest"] == model_digest(lines)]
    assert len(model_lines) > 1  # progress ticks, not a single line
    assert "llama3.2:latest" in {m["name"] for m in fake.tags()}
    assert fake.state()["pull_counts"] == {"llama3.2:latest": 1}
    assert fake.ps() == []  # pulling does not load


def test_repull_present_model(make_fake: MakeFake) -> None:
    """Blobs already on disk give one line each with completed == total."""
    fake = make_fake(present=["llama3.2"])
    _, lines = pull_lines(fake, "llama3.2")
    pulling = [x for x in lines if "digest" in x]
    assert all(x["completed"] == x["total"] for x in pulling)
    assert len(pulling) == len({x["digest"] for x in pulling})


def test_pull_not_stream(make_fake: MakeFake) -> None:
    """stream:false answers one object: success, or 500 with the error (§6)."""
    fake = make_fake()
    ok = httpx.post(
        fake.url("/api/pull"), json={"model": "all-minilm", "stream": False}, timeout=30
    )
    assert (ok.status_code, ok.json()) == (200, {"status": "success"})
    bad = httpx.post(fake.url("/api/pull"), json={"model": "nosuch", "stream": False}, timeout=30)
    assert bad.status_code == 500
    assert bad.json() == {"error": "pull model manifest: file does not exist"}


def test_pull_nonexistent_and_invalid(make_fake: MakeFake) -> None:
    """Unknown model: 200 stream ending in an error line; invalid name: 400."""
    fake = make_fake()
    status, lines = pull_lines(fake, "nosuch:tag")
    assert status == 200
    assert lines == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    r = httpx.post(fake.url("/api/pull"), json={"model": "bad name"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid model name"})
    r2 = httpx.post(fake.url("/api/pull"), json={})
    assert (r2.status_code, r2.json()) == (400, {"error": "invalid model name"})


def test_pull_fail_then_resume(make_fake: MakeFake) -> None:
    """pull_fail stops at a fraction with an error line; the next pull resumes from the partial."""
    fake = make_fake(
        faults={"pull_fail": {"llama3.2": {"times": 1, "after_fraction": 0.5}}},
    )
    status, lines = pull_lines(fake, "llama3.2")
    assert status == 200
    assert lines[-1] == {"error": "max retries exceeded: unexpected EOF"}
    digest = model_digest(lines)
    partial = fake.models_dir / "blobs" / (digest.replace(":", "-") + "-partial")
    done = int(partial.read_text())
    total = next(x["total"] for x in lines if x.get("digest") == digest)
    assert total // 2 <= done < total
    assert fake.faults()["pull_fail"]["llama3.2"]["times"] == 0
    assert fake.tags() == []
    _, again = pull_lines(fake, "llama3.2")
    assert again[-1] == {"status": "success"}
    first = next(x for x in again if x.get("digest") == digest)
    assert first.get("completed", 0) >= done
    assert not partial.exists()


def test_pull_http_status_fault(make_fake: MakeFake) -> None:
    """pull_http_status answers with that status before any line."""
    fake = make_fake(
        faults={"pull_http_status": {"llama3.2": {"times": 1, "status": 500, "message": "boom"}}}
    )
    r = httpx.post(fake.url("/api/pull"), json={"model": "llama3.2"})
    assert (r.status_code, r.json()) == (500, {"error": "boom"})
    assert httpx.post(fake.url("/api/pull"), json={"model": "llama3.2"}).status_code == 200


def test_state_survives_restart(make_fake: MakeFake) -> None:
    """Pulled models are on disk: a restarted server lists and loads them."""
    fake = make_fake()
    pull_lines(fake, "all-minilm")
    digest = fake.tags()[0]["digest"]
    assert fake.stop() == 0
    fake.start()
    assert [(m["name"], m["digest"]) for m in fake.tags()] == [("all-minilm:latest", digest)]
    r = httpx.post(fake.url("/api/embed"), json={"model": "all-minilm", "input": "x"})
    assert r.status_code == 200


def test_sigterm_during_pull_keeps_partial(make_fake: MakeFake) -> None:
    """SIGTERM mid-pull exits 0 and leaves the -partial file for a later resume (§9.1)."""
    catalog = {**CATALOG, "llama3.2": {**CATALOG["llama3.2"], "pull_seconds": 20}}
    fake = make_fake(catalog=catalog)
    with httpx.stream(
        "POST", fake.url("/api/pull"), json={"model": "llama3.2"}, timeout=30
    ) as resp:
        for line in resp.iter_lines():
            if '"completed"' in line:
                break
        partials = fake.wait_for(
            lambda: list((fake.models_dir / "blobs").glob("*-partial")), what="partial file"
        )
        assert fake.stop(signal.SIGTERM) == 0
    assert partials[0].exists()
    assert int(partials[0].read_text()) > 0


def test_repull_new_revision_removes_old_layers(make_fake: MakeFake) -> None:
    """A re-pull that replaces the model blob reports and removes the unused layers (§6)."""
    fake = make_fake()
    _, first = pull_lines(fake, "all-minilm")
    old = model_digest(first)
    fake.set_catalog({**CATALOG, "all-minilm": {**CATALOG["all-minilm"], "revision": 2}})
    _, second = pull_lines(fake, "all-minilm")
    assert model_digest(second) != old
    assert "removing unused layers" in [x.get("status") for x in second]
    assert not (fake.models_dir / "blobs" / old.replace(":", "-")).exists()


def test_concurrent_pulls_share_download(make_fake: MakeFake) -> None:
    """Two pulls of one model share the download and both succeed."""
    import threading

    fake = make_fake()
    results: list[dict[str, Any]] = []

    def run() -> None:
        results.append(pull_lines(fake, "llama3.2")[1][-1])

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [{"status": "success"}, {"status": "success"}]


PLAIN = "127.0.0.1:5000/library/tiny-chat"
TLS = "127.0.0.1:5002/library/tiny-chat2"
REGISTRIES = {"registry": {"127.0.0.1:5000": "http", "127.0.0.1:5002": "private-ca"}}


def registry_catalog() -> dict[str, Any]:
    return {
        **CATALOG,
        f"{PLAIN}:latest": CATALOG["llama3.2:1b"],
        f"{TLS}:latest": CATALOG["all-minilm"],
    }


def test_plain_http_registry_needs_insecure(make_fake: MakeFake) -> None:
    """Without `insecure` the exact text of real Ollama; with it the pull succeeds."""
    fake = make_fake(catalog=registry_catalog(), faults=REGISTRIES)
    status, lines = pull_lines(fake, PLAIN)
    assert status == 200
    assert lines == [
        {"status": "pulling manifest"},
        {
            "error": 'pull model manifest: Get "https://127.0.0.1:5000/v2/library/tiny-chat/'
            'manifests/latest": http: server gave HTTP response to HTTPS client'
        },
    ]
    bad = httpx.post(fake.url("/api/pull"), json={"model": PLAIN, "stream": False}, timeout=30)
    assert bad.status_code == 500
    assert "server gave HTTP response to HTTPS client" in bad.json()["error"]
    _, lines = pull_lines(fake, PLAIN, insecure=True)
    assert lines[-1] == {"status": "success"}
    assert fake.state()["pull_counts"] == {f"{PLAIN}:latest": 1}


def test_private_ca_registry_needs_ssl_cert_file(make_fake: MakeFake, tmp_path: Path) -> None:
    """Unknown authority without SSL_CERT_FILE; plain HTTP refused with insecure; works with it."""
    fake = make_fake(catalog=registry_catalog(), faults=REGISTRIES, extra={"SSL_CERT_FILE": None})
    _, lines = pull_lines(fake, TLS)
    assert lines[-1] == {
        "error": 'pull model manifest: Get "https://127.0.0.1:5002/v2/library/tiny-chat2/'
        'manifests/latest": tls: failed to verify certificate: x509: certificate signed by '
        "unknown authority"
    }
    _, lines = pull_lines(fake, TLS, insecure=True)
    assert lines[-1] == {
        "error": "pull model manifest: 400: Client sent an HTTP request to an HTTPS server.\n"
    }
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    trusting = make_fake(
        catalog=registry_catalog(), faults=REGISTRIES, extra={"SSL_CERT_FILE": str(ca)}
    )
    _, lines = pull_lines(trusting, TLS)
    assert lines[-1] == {"status": "success"}
    assert fake.state()["pull_counts"] == {}
