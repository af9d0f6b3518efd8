"""Asking a model's registry for its current manifest, without pulling anything.

The name resolves as Ollama resolves it for a pull (`llama3.2` is
registry.ollama.ai/library/llama3.2:latest, `hf.co/<user>/<repo>:<quant>` is host hf.co), the
URL is the one Ollama's puller asks for (`/v2/<namespace>/<model>/manifests/<tag>`), https
unless the entry says `?insecure=true` (plain HTTP, as Ollama's flag does). The manifest digest
is what `/api/tags` calls the local digest: the sha256 of the manifest bytes
(ollama-behaviour.md §9.4), so comparing the two tells whether a tag moved upstream.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from ollama_preloader.errors import PreloaderError
from ollama_preloader.ollama.names import ModelName

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
# Public registries that a short check interval would hammer (one warning, see settings).
PUBLIC_REGISTRIES = ("registry.ollama.ai", "ollama.com", "hf.co", "huggingface.co")

_CHALLENGE_PART = re.compile(r'(\w+)="([^"]*)"')


class RegistryCheckError(PreloaderError):
    """The registry could not say what its manifest is; the message is the reason."""


@dataclass(frozen=True)
class Layer:
    digest: str  # sha256:<64 hex>
    size: int


@dataclass(frozen=True)
class RemoteManifest:
    """What the registry serves for a tag now."""

    digest: str  # 64 hex, no prefix: the form /api/tags uses
    layers: tuple[Layer, ...]  # the config blob included: a pull downloads it too
    requests: int  # HTTP requests it took (the token flow adds two)

    def download_bytes(self, have: Callable[[str], bool]) -> int:
        """Bytes a pull would download: the layers `have` (digest -> in the store) lacks."""
        seen: set[str] = set()
        total = 0
        for layer in self.layers:
            if layer.digest in seen or have(layer.digest):
                continue
            seen.add(layer.digest)
            total += layer.size
        return total


def manifest_url(name: ModelName, *, insecure: bool) -> str:
    scheme = "http" if insecure else "https"
    return f"{scheme}://{name.host}/v2/{name.namespace}/{name.model}/manifests/{name.tag}"


def short(digest: str | None) -> str:
    """The 12-character form `ollama ls` prints."""
    if not digest:
        return "-"
    return digest.removeprefix("sha256:")[:12]


def parse_challenge(header: str) -> dict[str, str] | None:
    """`Bearer realm="...",service="...",scope="..."` -> its parts; None for other schemes."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return {key.lower(): value for key, value in _CHALLENGE_PART.findall(rest)}


def parse_manifest(body: bytes, header_digest: str | None, requests: int) -> RemoteManifest:
    """The manifest's digest (the registry's header when it sends one, else the sha256 of the
    bytes, which is the same thing for a registry that keeps the bytes it was pushed) and
    its layers; RegistryCheckError when the body is not a manifest."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RegistryCheckError("the registry's manifest is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("layers"), list):
        raise RegistryCheckError("the registry's answer is not an image manifest (no layers)")
    layers: list[Layer] = []
    parts = [*document["layers"], document.get("config")]
    for part in parts:
        if isinstance(part, dict) and isinstance(part.get("digest"), str):
            size = part.get("size")
            layers.append(Layer(part["digest"], size if isinstance(size, int) else 0))
    digest = (header_digest or "").strip()
    if not digest.startswith("sha256:"):
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
    return RemoteManifest(digest.removeprefix("sha256:"), tuple(layers), requests)


class RegistryClient:
    """Manifest lookups for many models; one connection pool. Close with `aclose()`.

    TLS as `ollama serve` does it for pulls: the system's roots, plus SSL_CERT_FILE when set
    (httpx reads it), so a private CA that works for pulls works here too.
    """

    def __init__(
        self,
        *,
        timeout: float = 15.0,
        user_agent: str = "ollama-preloader",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=True,
            headers={"User-Agent": user_agent},
        )
        self._tokens: dict[tuple[str, str], str] = {}  # (host, scope) -> bearer token

    async def aclose(self) -> None:
        await self._http.aclose()

    async def manifest(self, name: ModelName, *, insecure: bool = False) -> RemoteManifest | None:
        """The tag's manifest now; None when the registry has no such model or tag (a model
        made with `ollama create`); RegistryCheckError with the reason otherwise."""
        url = manifest_url(name, insecure=insecure)
        requests = 0
        token = self._tokens.get((name.host, f"{name.namespace}/{name.model}"))
        for attempt in range(2):
            headers = {"Accept": MANIFEST_TYPE}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            response = await self._get(url, headers, name)
            requests += 1
            if response.status_code == 401 and attempt == 0:
                challenge = parse_challenge(response.headers.get("www-authenticate", ""))
                if challenge is None or not challenge.get("realm"):
                    raise RegistryCheckError(
                        f"the registry {name.host} answered 401 without a token it can give "
                        "anonymously; it needs credentials the supervisor does not have"
                    )
                token = await self._token(challenge, name)
                requests += 1
                self._tokens[(name.host, f"{name.namespace}/{name.model}")] = token
                continue
            break
        status = response.status_code
        if status == 404:
            return None
        if status == 401:
            raise RegistryCheckError(f"the registry {name.host} refused the token (401)")
        if status != 200:
            text = response.text.strip().replace("\n", " ")[:200]
            raise RegistryCheckError(f"the registry {name.host} answered {status}: {text}")
        return parse_manifest(
            response.content, response.headers.get("docker-content-digest"), requests
        )

    async def _get(self, url: str, headers: dict[str, str], name: ModelName) -> httpx.Response:
        try:
            return await self._http.get(url, headers=headers)
        except httpx.ConnectError as exc:
            text = str(exc) or type(exc).__name__
            if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
                raise RegistryCheckError(
                    f"{name.host}: its TLS certificate is not trusted ({text}); set "
                    "SSL_CERT_FILE to its CA, or ?insecure=true for a plain-HTTP registry"
                ) from None
            raise RegistryCheckError(f"cannot reach the registry {name.host}: {text}") from None
        except httpx.TimeoutException:
            raise RegistryCheckError(f"the registry {name.host} did not answer in time") from None
        except httpx.HTTPError as exc:
            text = str(exc) or type(exc).__name__
            if "wrong version number" in text.lower():
                text += " (a plain-HTTP registry needs ?insecure=true)"
            raise RegistryCheckError(f"registry {name.host}: {text}") from None

    async def _token(self, challenge: dict[str, str], name: ModelName) -> str:
        """The anonymous token flow: GET realm?service=&scope= -> {"token": ...}."""
        params = {k: v for k, v in challenge.items() if k in ("service", "scope")}
        params.setdefault("scope", f"repository:{name.namespace}/{name.model}:pull")
        try:
            response = await self._http.get(challenge["realm"], params=params)
        except httpx.HTTPError as exc:
            realm = challenge["realm"]
            raise RegistryCheckError(f"cannot get a token from {realm}: {exc}") from None
        if response.status_code != 200:
            raise RegistryCheckError(
                f"the registry {name.host} gives no anonymous token "
                f"({response.status_code} from {challenge['realm']})"
            )
        try:
            document = response.json()
        except ValueError:
            document = None
        token = None
        if isinstance(document, dict):
            token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryCheckError(f"the token answer of {challenge['realm']} has no token")
        return token


def store_dir(environ: Mapping[str, str]) -> Path | None:
    """The models directory of an Ollama on this machine (OLLAMA_MODELS, else
    ~/.ollama/models), when it exists: which blobs are there says what a pull would fetch."""
    configured = environ.get("OLLAMA_MODELS", "").strip()
    home = environ.get("HOME", "").strip()
    path = Path(configured) if configured else Path(home or "~", ".ollama", "models").expanduser()
    return path if (path / "blobs").is_dir() else None


def blob_checker(directory: Path | None) -> Callable[[str], bool]:
    """digest -> whether the store has that blob; nothing known counts as nothing there."""
    if directory is None:
        return lambda digest: False
    blobs = directory / "blobs"
    return lambda digest: (blobs / digest.replace(":", "-", 1)).is_file()
