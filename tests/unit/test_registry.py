"""The registry client: names resolved as Ollama resolves them, the digest /api/tags uses,
the anonymous token flow, and each fault turned into a reason (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from ollama_preloader.ollama.names import ModelName
from ollama_preloader.ollama.registry import (
    MANIFEST_TYPE,
    Layer,
    RegistryCheckError,
    RegistryClient,
    RemoteManifest,
    blob_checker,
    manifest_url,
    parse_challenge,
    parse_manifest,
)

BODY = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"digest": "sha256:" + "c" * 64, "size": 10},
        "layers": [
            {"digest": "sha256:" + "a" * 64, "size": 1000},
            {"digest": "sha256:" + "b" * 64, "size": 200},
        ],
    }
).encode()


@pytest.mark.parametrize(
    ("name", "insecure", "url"),
    [
        ("llama3.2", False, "https://registry.ollama.ai/v2/library/llama3.2/manifests/latest"),
        ("qwen3:8b", False, "https://registry.ollama.ai/v2/library/qwen3/manifests/8b"),
        ("me/model:q4", False, "https://registry.ollama.ai/v2/me/model/manifests/q4"),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            False,
            "https://hf.co/v2/bartowski/Llama-3.2-1B-Instruct-GGUF/manifests/Q4_K_M",
        ),
        (
            "127.0.0.1:5000/library/tiny-chat",
            True,
            "http://127.0.0.1:5000/v2/library/tiny-chat/manifests/latest",
        ),
        (
            "https://reg.example.com:8443/team/m:v2",
            False,
            "https://reg.example.com:8443/v2/team/m/manifests/v2",
        ),
    ],
)
def test_manifest_url_resolves_names_as_ollama_does(name: str, insecure: bool, url: str) -> None:
    """Short names get Ollama's defaults; a private host keeps its port; insecure is http."""
    assert manifest_url(ModelName.parse(name), insecure=insecure) == url


def test_digest_is_the_sha256_of_the_body_without_prefix() -> None:
    """With no Docker-Content-Digest the digest is the body's sha256, in /api/tags' form."""
    manifest = parse_manifest(BODY, None, 1)
    assert manifest.digest == hashlib.sha256(BODY).hexdigest()
    assert len(manifest.digest) == 64
    assert ":" not in manifest.digest
    assert [layer.size for layer in manifest.layers] == [1000, 200, 10]


def test_header_digest_wins_and_loses_its_prefix() -> None:
    manifest = parse_manifest(BODY, "sha256:" + "d" * 64, 1)
    assert manifest.digest == "d" * 64


@pytest.mark.parametrize("body", [b"<html>", b"[]", b'{"errors": []}'])
def test_a_body_that_is_no_manifest_is_an_error(body: bytes) -> None:
    with pytest.raises(RegistryCheckError, match="not"):
        parse_manifest(body, None, 1)


def test_download_bytes_counts_only_blobs_not_in_the_store(tmp_path: Path) -> None:
    """A re-pull downloads the changed layers; the ones on disk cost nothing."""
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / ("sha256-" + "b" * 64)).write_bytes(b"x")
    manifest = parse_manifest(BODY, None, 1)
    assert manifest.download_bytes(blob_checker(tmp_path)) == 1010
    assert manifest.download_bytes(blob_checker(None)) == 1210
    twice = RemoteManifest("e" * 64, (Layer("sha256:1", 5), Layer("sha256:1", 5)), 1)
    assert twice.download_bytes(lambda d: False) == 5


def test_parse_challenge() -> None:
    parts = parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="x"')
    assert parts == {"realm": "https://auth.example/token", "service": "reg", "scope": "x"}
    assert parse_challenge('Basic realm="x"') is None


def _fetch(handler: httpx.MockTransport, name: str = "me/model:v1") -> RemoteManifest | None:
    async def go() -> RemoteManifest | None:
        client = RegistryClient(transport=handler)
        try:
            return await client.manifest(ModelName.parse(name))
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_manifest_asks_for_the_docker_type_and_reads_the_header() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, content=BODY, headers={"Docker-Content-Digest": "sha256:" + "f" * 64}
        )

    manifest = _fetch(httpx.MockTransport(handle))
    assert manifest is not None
    assert manifest.digest == "f" * 64
    assert seen[0].headers["accept"] == MANIFEST_TYPE
    assert str(seen[0].url) == "https://registry.ollama.ai/v2/me/model/manifests/v1"


def test_401_with_a_bearer_challenge_gets_an_anonymous_token() -> None:
    """As distribution and Docker Hub do: 401, token from the realm, then the manifest."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "auth.example":
            assert request.url.params["scope"] == "repository:me/model:pull"
            return httpx.Response(200, json={"token": "T"})
        if request.headers.get("authorization") != "Bearer T":
            challenge = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:me/model:pull"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, content=BODY)

    manifest = _fetch(httpx.MockTransport(handle))
    assert manifest is not None
    assert manifest.requests == 3
    assert len(seen) == 3


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(401), "without a token"),
        (httpx.Response(500, text="boom"), "answered 500: boom"),
        (httpx.Response(200, text="not json"), "not JSON"),
    ],
)
def test_faults_give_a_reason(response: httpx.Response, reason: str) -> None:
    with pytest.raises(RegistryCheckError, match=reason):
        _fetch(httpx.MockTransport(lambda request: response))


def test_a_model_the_registry_lacks_is_none() -> None:
    """404: made locally (`ollama create`): the caller calls it `local`."""
    assert _fetch(httpx.MockTransport(lambda request: httpx.Response(404))) is None


def test_unreachable_registry_is_an_error_naming_the_host() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(RegistryCheckError, match=r"cannot reach the registry registry\.ollama\.ai"):
        _fetch(httpx.MockTransport(handle))
