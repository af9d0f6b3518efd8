"""Each FAKE_OLLAMA_FAULTS knob works, is consumed, and can change while the server runs."""

from __future__ import annotations

import httpx
import pytest

from .conftest import MakeFake


def test_hang_then_answer(make_fake: MakeFake) -> None:
    """hang delays a path's answer; the count is consumed, then answers are immediate."""
    fake = make_fake()
    fake.set_faults({"hang": {"/api/ps": {"times": 1, "seconds": 1.0}}})
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(fake.url("/api/ps"), timeout=0.2)
    assert httpx.get(fake.url("/api/ps"), timeout=5).json() == {"models": []}
    assert fake.faults()["hang"]["/api/ps"]["times"] == 0


def test_busy(make_fake: MakeFake) -> None:
    """busy answers 503 with the scheduler's queue-full text (§7.7)."""
    fake = make_fake(present=["llama3.2"], faults={"busy": {"/api/generate": {"times": 2}}})
    for _ in range(2):
        r = httpx.post(fake.url("/api/generate"), json={"model": "llama3.2"})
        assert r.status_code == 503
        assert r.json() == {
            "error": "server busy, please try again.  maximum pending requests exceeded"
        }
    assert httpx.post(fake.url("/api/generate"), json={"model": "llama3.2"}).status_code == 200


def test_load_fail(make_fake: MakeFake) -> None:
    """load_fail returns its status and message; -1 means every time until removed."""
    fake = make_fake(
        present=["llama3.2"],
        faults={
            "load_fail": {
                "llama3.2": {
                    "times": -1,
                    "status": 500,
                    "message": "llama-server process has terminated: exit status 2",
                }
            }
        },
    )
    for _ in range(2):
        r = httpx.post(fake.url("/api/generate"), json={"model": "llama3.2"})
        assert r.status_code == 500
        assert r.json() == {"error": "llama-server process has terminated: exit status 2"}
    assert fake.ps() == []
    assert fake.state()["runners"] == []
    fake.set_faults({})
    assert httpx.post(fake.url("/api/generate"), json={"model": "llama3.2"}).status_code == 200
    assert len(fake.events("load_failed")) == 2


def test_no_embed_endpoint(make_fake: MakeFake) -> None:
    """no_embed_endpoint makes /api/embed a plain-text 404 like an old server."""
    fake = make_fake(present=["all-minilm"], faults={"no_embed_endpoint": True})
    r = httpx.post(fake.url("/api/embed"), json={"model": "all-minilm", "input": []})
    assert (r.status_code, r.text) == (404, "404 page not found")
    legacy = httpx.post(fake.url("/api/embeddings"), json={"model": "all-minilm", "prompt": ""})
    assert legacy.json() == {"embedding": []}


def test_no_capabilities(make_fake: MakeFake) -> None:
    """no_capabilities drops `capabilities`; model_info still has pooling_type."""
    fake = make_fake(present=["all-minilm"], faults={"no_capabilities": True})
    show = httpx.post(fake.url("/api/show"), json={"model": "all-minilm"}).json()
    assert "capabilities" not in show
    assert "bert.pooling_type" in show["model_info"]
    assert "capabilities" not in fake.tags()[0]


def test_runtime_oom(make_fake: MakeFake) -> None:
    """runtime_oom fails the request and expires every loaded runner (§7.3)."""
    fake = make_fake(
        present=["llama3.2", "all-minilm"], faults={"runtime_oom": {"llama3.2": {"times": 1}}}
    )
    httpx.post(fake.url("/api/embed"), json={"model": "all-minilm", "input": [], "keep_alive": -1})
    body = {"model": "llama3.2", "prompt": "hi", "stream": False, "keep_alive": -1}
    r = httpx.post(fake.url("/api/generate"), json=body)
    assert r.status_code == 500
    assert "out of memory" in r.json()["error"]
    fake.wait_for(lambda: not fake.ps(), what="all runners unloaded")


def test_faults_file_changes_while_running(make_fake: MakeFake) -> None:
    """The faults file is re-read per request, so tests can add faults mid-run."""
    fake = make_fake(present=["llama3.2"])
    assert httpx.get(fake.url("/api/tags")).status_code == 200
    fake.set_faults({"busy": {"/api/tags": {"times": 1}}})
    assert httpx.get(fake.url("/api/tags")).status_code == 503
    assert httpx.get(fake.url("/api/tags")).status_code == 200
