"""HTTP behaviour of the fake server: bodies, status codes and error texts from the reference."""

from __future__ import annotations

import datetime as dt
import re
import socket

import httpx
import pytest
from fake_ollama.harness import FakeOllama

from .conftest import MakeFake


@pytest.fixture
def fake(make_fake: MakeFake) -> FakeOllama:
    """A server with a completion model, an embedding model and an alias present."""
    return make_fake(present=["llama3.2", "nomic-embed-text", "qwen2.5-coder:1.5b-base"])


def post(fake: FakeOllama, path: str, body: object) -> httpx.Response:
    return httpx.post(fake.url(path), json=body, timeout=30)


def test_root_and_version(fake: FakeOllama) -> None:
    """GET/HEAD / and /api/version answer like the real server (§1.1)."""
    r = httpx.get(fake.url("/"))
    assert (r.status_code, r.text) == (200, "Ollama is running")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    h = httpx.head(fake.url("/"))
    assert h.status_code == 200
    assert h.content == b""
    assert httpx.get(fake.url("/api/version")).json() == {"version": "0.12.0-fake"}


def test_unknown_path_and_wrong_method(fake: FakeOllama) -> None:
    """Unknown paths are 404 text, known paths with the wrong method 405."""
    r = httpx.get(fake.url("/api/nope"))
    assert (r.status_code, r.text) == (404, "404 page not found")
    assert httpx.get(fake.url("/api/generate")).status_code == 405
    assert httpx.post(fake.url("/api/delete"), json={"model": "x"}).status_code == 405


def test_host_header_check(fake: FakeOllama) -> None:
    """A loopback server rejects foreign Host headers with an empty 403 (§1.1)."""
    r = httpx.get(fake.url("/"), headers={"Host": "evil.example.com"})
    assert (r.status_code, r.content) == (403, b"")
    assert httpx.get(fake.url("/"), headers={"Host": "localhost:1"}).status_code == 200


@pytest.mark.parametrize(
    ("keep_alive", "error"),
    [
        ("-1", 'time: missing unit in duration "-1"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("300", 'time: missing unit in duration "300"'),
        (True, "Unsupported type: 'bool'"),
    ],
)
def test_bad_keep_alive_is_400(fake: FakeOllama, keep_alive: object, error: str) -> None:
    """Bad keep_alive values are rejected with 400 and Go's message (§2.1)."""
    r = post(fake, "/api/generate", {"model": "llama3.2", "keep_alive": keep_alive})
    assert r.status_code == 400
    assert r.json() == {"error": error}


def test_generate_load_response(fake: FakeOllama) -> None:
    """An empty prompt only loads and answers done_reason=load echoing the name (§3.1)."""
    r = post(fake, "/api/generate", {"model": "LLAMA3.2", "keep_alive": -1.0})
    body = r.json()
    assert r.status_code == 200
    assert body["model"] == "LLAMA3.2"
    assert (body["response"], body["done"], body["done_reason"]) == ("", True, "load")
    assert body["created_at"].endswith("Z")
    ps = fake.ps()
    assert [m["name"] for m in ps] == ["llama3.2:latest"]
    expires = dt.datetime.fromisoformat(ps[0]["expires_at"])
    assert expires > dt.datetime.now(dt.UTC) + dt.timedelta(days=365 * 100)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"model": "nope"}, 404, "model 'nope' not found"),
        ({"model": ""}, 404, "model '' not found"),
        ({"name": "llama3.2"}, 404, "model '' not found"),
        ({"model": "bad name!"}, 400, "invalid model name"),
        ({"model": "nomic-embed-text"}, 400, '"nomic-embed-text" does not support generate'),
        (
            {"model": "llama3.2", "options": {"num_ctx": "big"}},
            500,
            'option "num_ctx" must be of type integer',
        ),
    ],
)
def test_generate_errors(fake: FakeOllama, body: object, status: int, error: str) -> None:
    """Generate errors: status codes and texts (§3.1, §7.4)."""
    r = post(fake, "/api/generate", body)
    assert (r.status_code, r.json()) == (status, {"error": error})


def test_generate_missing_body(fake: FakeOllama) -> None:
    """No body at all is 400 missing request body."""
    r = httpx.post(fake.url("/api/generate"))
    assert (r.status_code, r.json()) == (400, {"error": "missing request body"})


def test_generate_prompt_stream_and_num_predict(fake: FakeOllama) -> None:
    """A prompt streams tokens then a final done line; num_predict limits them."""
    st, lines = fake.stream("/api/generate", {"model": "llama3.2", "prompt": "hi"})
    assert st == 200
    assert all(not x["done"] for x in lines[:-1])
    assert lines[-1]["done"] is True
    assert lines[-1]["done_reason"] == "stop"
    assert lines[-1]["eval_count"] == len(lines) - 1
    body = {"model": "llama3.2", "prompt": "hi", "stream": False, "options": {"num_predict": 3}}
    r = post(fake, "/api/generate", body).json()
    assert (r["done_reason"], r["eval_count"]) == ("length", 3)
    assert len(r["response"].split()) == 3


def test_unload_fast_path(fake: FakeOllama) -> None:
    """keep_alive:0 with an empty prompt answers done_reason=unload, also when not loaded."""
    body = {"model": "llama3.2", "keep_alive": 0}
    assert post(fake, "/api/generate", body).json()["done_reason"] == "unload"
    post(fake, "/api/generate", {"model": "llama3.2"})
    assert fake.ps()
    r = post(fake, "/api/generate", body).json()
    assert r["done_reason"] == "unload"
    fake.wait_for(lambda: not fake.ps(), what="unloaded")
    emb = post(fake, "/api/generate", {"model": "nomic-embed-text", "keep_alive": 0})
    assert emb.json()["done_reason"] == "unload"
    missing = post(fake, "/api/generate", {"model": "nope", "keep_alive": 0})
    assert missing.status_code == 404


def test_chat_load_and_errors(fake: FakeOllama) -> None:
    """Chat with messages:[] loads; missing model and embedding models error (§3.2)."""
    r = post(fake, "/api/chat", {"model": "llama3.2", "messages": []}).json()
    assert r["message"] == {"role": "assistant", "content": ""}
    assert r["done_reason"] == "load"
    r2 = post(fake, "/api/chat", {"model": "llama3.2", "messages": [], "keep_alive": 0})
    assert r2.json()["done_reason"] == "unload"
    assert post(fake, "/api/chat", {"model": ""}).json() == {"error": "model is required"}
    r3 = post(fake, "/api/chat", {"model": "nomic-embed-text", "messages": []})
    assert (r3.status_code, r3.json()["error"]) == (400, '"nomic-embed-text" does not support chat')
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    r4 = post(fake, "/api/chat", body).json()
    assert r4["message"]["role"] == "assistant"
    assert r4["message"]["content"]


def test_embed(fake: FakeOllama) -> None:
    """/api/embed: empty input loads any model; vectors; 501 for completion models (§3.3)."""
    r = post(fake, "/api/embed", {"model": "llama3.2", "input": [], "keep_alive": -1})
    assert r.json() == {"model": "llama3.2", "embeddings": []}
    assert "llama3.2:latest" in [m["name"] for m in fake.ps()]
    r2 = post(fake, "/api/embed", {"model": "llama3.2", "input": "hello"})
    assert r2.status_code == 501
    assert r2.json()["error"].startswith("This server does not support embeddings.")
    r3 = post(fake, "/api/embed", {"model": "nomic-embed-text", "input": ["a", "b"]}).json()
    assert len(r3["embeddings"]) == 2
    assert len(r3["embeddings"][0]) == 768
    missing = post(fake, "/api/embed", {"model": "nope", "input": ""})
    assert missing.status_code == 404
    assert missing.json()["error"] == 'model "nope" not found, try pulling it first'
    bad = post(fake, "/api/embed", {"model": "nomic-embed-text", "input": [1]})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid input type")


def test_legacy_embeddings(fake: FakeOllama) -> None:
    """/api/embeddings: empty prompt -> embedding [], completion model -> 500 (§3.4)."""
    r = post(fake, "/api/embeddings", {"model": "nomic-embed-text", "prompt": ""})
    assert r.json() == {"embedding": []}
    r2 = post(fake, "/api/embeddings", {"model": "nomic-embed-text", "prompt": "x"}).json()
    assert len(r2["embedding"]) == 768
    assert post(fake, "/api/embeddings", {"model": "llama3.2", "prompt": "x"}).status_code == 500
    assert post(fake, "/api/embeddings", {"model": ""}).json() == {"error": "model is required"}
    upper = post(fake, "/api/embeddings", {"model": "NOMIC-embed-text", "prompt": ""})
    assert upper.status_code == 404


def test_show(fake: FakeOllama) -> None:
    """/api/show: capabilities, model_info, modelfile FROM blob, errors (§4)."""
    emb = post(fake, "/api/show", {"model": "nomic-embed-text"}).json()
    assert emb["capabilities"] == ["embedding"]
    assert emb["model_info"]["general.architecture"] == "nomic-bert"
    assert "nomic-bert.pooling_type" in emb["model_info"]
    assert emb["model_info"]["nomic-bert.context_length"] == 2048
    assert re.search(r"^FROM /.*/blobs/sha256-[0-9a-f]{64}$", emb["modelfile"], re.M)
    comp = post(fake, "/api/show", {"name": "llama3.2"}).json()
    assert comp["capabilities"] == ["completion", "tools"]
    assert comp["details"]["family"] == "llama"
    r = post(fake, "/api/show", {"model": "nomodel"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'nomodel:latest' not found"})
    assert post(fake, "/api/show", {}).json() == {"error": "model is required"}
    assert post(fake, "/api/show", {"model": "a b"}).json() == {"error": "invalid model name"}


def test_tags(fake: FakeOllama) -> None:
    """/api/tags: name == model, 64-hex digest, size is the sum of the layers (§5.1)."""
    models = fake.tags()
    names = {m["name"] for m in models}
    assert names == {"llama3.2:latest", "nomic-embed-text:latest", "qwen2.5-coder:1.5b-base"}
    for m in models:
        assert m["name"] == m["model"]
        assert re.fullmatch(r"[0-9a-f]{64}", m["digest"])
    llama = next(m for m in models if m["name"] == "llama3.2:latest")
    assert llama["size"] == 2_000_000_000
    assert llama["details"]["context_length"] == 131072


def test_copy_and_delete(fake: FakeOllama) -> None:
    """Copy keeps the manifest digest; delete answers an empty 200 then 404 (§8)."""
    r = post(fake, "/api/copy", {"source": "llama3.2", "destination": "mine:v1"})
    assert (r.status_code, r.content) == (200, b"")
    digests = {m["name"]: m["digest"] for m in fake.tags()}
    assert digests["mine:v1"] == digests["llama3.2:latest"]
    missing = post(fake, "/api/copy", {"source": "nope", "destination": "x"})
    assert (missing.status_code, missing.json()["error"]) == (404, 'model "nope" not found')
    d = httpx.request("DELETE", fake.url("/api/delete"), json={"model": "mine:v1"})
    assert (d.status_code, d.content) == (200, b"")
    d2 = httpx.request("DELETE", fake.url("/api/delete"), json={"model": "mine:v1"})
    assert (d2.status_code, d2.json()) == (404, {"error": "model 'mine:v1' not found"})
    bad = httpx.request("DELETE", fake.url("/api/delete"), json={"model": "a b"})
    assert bad.json() == {"error": 'name "a b" is invalid'}
    assert "llama3.2:latest" in {m["name"] for m in fake.tags()}


def test_delete_does_not_unload(fake: FakeOllama) -> None:
    """A deleted model's runner stays in /api/ps (§8.1)."""
    post(fake, "/api/generate", {"model": "qwen2.5-coder:1.5b-base", "keep_alive": -1})
    httpx.request("DELETE", fake.url("/api/delete"), json={"model": "qwen2.5-coder:1.5b-base"})
    assert [m["name"] for m in fake.ps()] == ["qwen2.5-coder:1.5b-base"]
    r = post(fake, "/api/generate", {"model": "qwen2.5-coder:1.5b-base", "keep_alive": 0})
    assert r.status_code == 404


def test_request_log(fake: FakeOllama) -> None:
    """Every request is logged with method, path, parsed body and status."""
    post(fake, "/api/show", {"model": "llama3.2"})
    # The fake writes the record after the response's last byte, so the client can be first.
    rec = fake.wait_for(lambda: fake.requests("/api/show"), what="the /api/show record")[-1]
    assert rec["method"] == "POST"
    assert rec["body"] == {"model": "llama3.2"}
    assert rec["status"] == 200
    start = fake.events("serve_start")[0]
    assert start["env"]["OLLAMA_HOST"] == fake.host
    assert "POST" in fake.stdout_text()
    assert "Listening on 127.0.0.1:" in fake.stderr_text()


def test_client_disconnect_aborts_load(make_fake: MakeFake) -> None:
    """A client that goes away during a load aborts it (§7.6)."""
    catalog = {"slow": {"size": 10**9, "load_seconds": 5}}
    fake = make_fake(catalog=catalog, present=["slow"])
    with socket.create_connection(("127.0.0.1", fake.port)) as s:
        body = b'{"model":"slow"}'
        s.sendall(
            b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        fake.wait_for(lambda: "starting llama-server" in fake.stderr_text(), what="load started")
    fake.wait_for(lambda: fake.events("load_aborted"), what="load_aborted event")
    assert fake.ps() == []
    assert fake.state()["load_counts"] == {}
