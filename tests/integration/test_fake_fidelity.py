"""The official `ollama` Python client against the fake: every answer parses, errors map right."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import ollama
import pytest
from fake_ollama.harness import FakeOllama, start_fake

GB = 1_000_000_000
CATALOG = {
    "llama3.2": {
        "size": 2 * GB,
        "context_length": 131072,
        "capabilities": ["completion", "tools"],
        "pull_seconds": 0.1,
        "load_seconds": 0.02,
    },
    "all-minilm": {
        "kind": "embedding",
        "size": 45960996,
        "context_length": 512,
        "embedding_length": 384,
        "pull_seconds": 0.1,
        "load_seconds": 0.02,
    },
}


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeOllama]:
    """A fake server with an empty store and a two-model catalog."""
    with start_fake(tmp_path, catalog=CATALOG) as f:
        yield f


@pytest.fixture
def client(fake: FakeOllama) -> ollama.Client:
    """The official client pointed at the fake."""
    return ollama.Client(host=fake.base_url, timeout=30)


@pytest.fixture(scope="module")
def seeded_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ollama.Client]:
    """One shared server with both catalog models already present (for error cases)."""
    workdir = tmp_path_factory.mktemp("fidelity-errors")
    with start_fake(workdir, catalog=CATALOG, present=["llama3.2", "all-minilm"]) as f:
        yield ollama.Client(host=f.base_url, timeout=30)


def test_pull_stream_and_not(client: ollama.Client) -> None:
    """pull (streaming and not) parses into ProgressResponse."""
    parts = list(client.pull("llama3.2", stream=True))
    assert all(isinstance(p, ollama.ProgressResponse) for p in parts)
    assert parts[0].status == "pulling manifest"
    assert parts[-1].status == "success"
    assert any(p.digest and p.total for p in parts)
    done = client.pull("all-minilm", stream=False)
    assert isinstance(done, ollama.ProgressResponse)
    assert done.status == "success"


def test_list_show_ps(client: ollama.Client) -> None:
    """list, show and ps parse; ps reports a pinned model ~292 years ahead."""
    client.pull("llama3.2")
    client.pull("all-minilm")
    listing = client.list()
    assert {m.model for m in listing.models} == {"llama3.2:latest", "all-minilm:latest"}
    for m in listing.models:
        assert isinstance(m.modified_at, dt.datetime)
        assert m.size is not None
        assert m.details is not None
    show = client.show("all-minilm")
    assert show.capabilities == ["embedding"]
    assert show.modelinfo is not None
    assert "bert.pooling_type" in show.modelinfo
    assert show.modelfile is not None
    assert "FROM " in show.modelfile
    loaded = client.generate(model="llama3.2", keep_alive=-1)
    assert loaded.done_reason == "load"
    ps = client.ps()
    assert [m.model for m in ps.models] == ["llama3.2:latest"]
    expires = ps.models[0].expires_at
    assert expires is not None
    assert expires > dt.datetime.now(dt.UTC) + dt.timedelta(days=365 * 100)
    assert ps.models[0].context_length == 4096


def test_generate_chat_embed(client: ollama.Client) -> None:
    """generate (load, stream, unload), chat, embed and embeddings parse into their types."""
    client.pull("llama3.2")
    client.pull("all-minilm")
    assert client.generate(model="llama3.2").done_reason == "load"
    chunks = list(client.generate(model="llama3.2", prompt="hi", stream=True))
    assert chunks[-1].done
    assert "".join(c.response or "" for c in chunks)
    whole = client.generate(model="llama3.2", prompt="hi", options={"num_predict": 2})
    assert whole.eval_count == 2
    chat = client.chat(model="llama3.2", messages=[])
    assert chat.done_reason == "load"
    assert chat.message.role == "assistant"
    said = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert said.message.content
    unloaded = client.generate(model="llama3.2", keep_alive=0)
    assert unloaded.done_reason == "unload"
    empty = client.embed(model="all-minilm", input=[], keep_alive=-1)
    assert list(empty.embeddings) == []
    vecs = client.embed(model="all-minilm", input=["a", "b"])
    assert [len(v) for v in vecs.embeddings] == [384, 384]
    legacy = client.embeddings(model="all-minilm", prompt="a")
    assert len(legacy.embedding) == 384


def test_copy_delete_version(client: ollama.Client, fake: FakeOllama) -> None:
    """copy and delete return StatusResponse; /api/version answers through httpx."""
    client.pull("all-minilm")
    assert client.copy("all-minilm", "mini:copy").status == "success"
    assert client.delete("mini:copy").status == "success"
    assert httpx.get(fake.url("/api/version")).json()["version"]


@pytest.mark.parametrize(
    ("call", "status"),
    [
        (lambda c: c.show("nomodel"), 404),
        (lambda c: c.generate(model="nomodel"), 404),
        (lambda c: c.generate(model="all-minilm"), 400),
        (lambda c: c.chat(model="all-minilm", messages=[]), 400),
        (lambda c: c.generate(model="llama3.2", keep_alive="1d"), 400),
        (lambda c: c.generate(model="llama3.2", keep_alive="-1"), 400),
        (lambda c: c.embed(model="llama3.2", input="x"), 501),
        (lambda c: c.embed(model="nomodel", input="x"), 404),
        (lambda c: c.embeddings(model="llama3.2", prompt="x"), 500),
        (lambda c: c.delete("nomodel"), 404),
        (lambda c: c.copy("nomodel", "x"), 404),
        (lambda c: c.pull("bad name", stream=False), 400),
        (lambda c: c.pull("nosuchmodel", stream=False), 500),
    ],
)
def test_errors_raise_response_error(
    seeded_client: ollama.Client, call: Callable[[ollama.Client], object], status: int
) -> None:
    """Error answers raise ollama.ResponseError with the HTTP status."""
    with pytest.raises(ollama.ResponseError) as e:
        call(seeded_client)
    assert e.value.status_code == status


def test_pull_error_line_raises(client: ollama.Client) -> None:
    """An error line in a 200 pull stream raises ResponseError with its text."""
    with pytest.raises(ollama.ResponseError) as e:
        list(client.pull("nosuchmodel", stream=True))
    assert e.value.error == "pull model manifest: file does not exist"
