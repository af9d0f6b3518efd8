"""Private registries: the `insecure` entry key, and registry HTTP/TLS errors told from others."""

import json
import os
from pathlib import Path

import certifi
import httpx
import pytest

from ollama_preloader.config.cafile import check_ca_file, start_ca_check
from ollama_preloader.config.models_file import parse_models_file
from ollama_preloader.config.modelspec import SpecError, parse_entry, parse_model_list
from ollama_preloader.config.settings import load_settings
from ollama_preloader.errors import (
    ConfigError,
    OllamaAPIError,
    PullStreamError,
    RegistryProblem,
    RegistryTLSError,
)
from ollama_preloader.ollama.api import OllamaAPI, registry_problem
from ollama_preloader.reconcile.pulling import (
    PERMANENT_BACKOFF,
    failure_reason,
    permanent_backoff,
    pull_model,
)
from ollama_preloader.state.board import ModelStatus

# Texts of Ollama v0.33.0-rc2 against the distribution registry (../shared/realollama), and
# (WRONG_NAME) the form Go gives a certificate issued for another name.
MANIFEST = 'pull model manifest: Get "https://127.0.0.1:5000/v2/library/tiny-chat/manifests/latest"'
PLAIN_HTTP = f"{MANIFEST}: http: server gave HTTP response to HTTPS client"
UNKNOWN_CA = (
    f"{MANIFEST}: tls: failed to verify certificate: x509: certificate signed by unknown authority"
)
HTTPS_ONLY = "pull model manifest: 400: Client sent an HTTP request to an HTTPS server.\n"
WRONG_NAME = (
    f"{MANIFEST}: tls: failed to verify certificate: x509: certificate is valid for "
    "registry.internal, not 127.0.0.1"
)
REGISTRY_DOWN = f"{MANIFEST}: dial tcp 127.0.0.1:5000: connect: connection refused"


def test_insecure_is_a_pull_flag_of_its_entry_only() -> None:
    """`?insecure=true` marks that entry; it is not a load option and other entries stay secure."""
    parsed = parse_model_list(
        "127.0.0.1:5000/library/tiny-chat?insecure=true&num_ctx=2048,"
        "reg.example/team/m?insecure=false,llama3.2?insecure=1"
    )
    plain, explicit, short = parsed.specs
    assert plain.insecure
    assert plain.options_dict() == {"num_ctx": 2048}
    assert plain.display == "127.0.0.1:5000/library/tiny-chat:latest"
    assert not explicit.insecure
    assert short.insecure
    assert not parse_model_list("llama3.2").specs[0].insecure


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("m?insecure=yes", "insecure must be true or false"),
        ("m?insecure", "'insecure' needs a value"),
        ("m?insecure=true&insecure=false", "insecure is given twice"),
        ("m?secure=false", "allowed: keep_alive, kind, insecure,"),
    ],
)
def test_bad_insecure_names_the_entry(raw: str, fragment: str) -> None:
    """A bad `insecure` value is one line naming the variable, the entry and what is allowed."""
    with pytest.raises(SpecError) as info:
        parse_model_list(raw)
    message = str(info.value)
    assert message.startswith(f"OLLAMA_PRELOAD_MODELS entry {raw!r}: ")
    assert fragment in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (PLAIN_HTTP, RegistryProblem.PLAIN_HTTP),
        (UNKNOWN_CA, RegistryProblem.UNKNOWN_CA),
        (HTTPS_ONLY, RegistryProblem.HTTPS_ONLY),
        (WRONG_NAME, RegistryProblem.BAD_CERT),
        (REGISTRY_DOWN, None),
        ("pull model manifest: file does not exist", None),
        ("max retries exceeded: unexpected EOF", None),
    ],
)
def test_registry_problems_are_told_from_other_errors(
    text: str, problem: RegistryProblem | None
) -> None:
    """Plain HTTP, an untrusted CA, HTTPS with insecure and a bad certificate; nothing else."""
    assert registry_problem(text) is problem


def api_answering(lines: list[dict[str, str]], seen: list[dict[str, object]]) -> OllamaAPI:
    """An OllamaAPI whose server streams `lines` for every pull and records each request body."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        text = "\n".join(json.dumps(line) for line in lines) + "\n"
        return httpx.Response(200, text=text)

    api = OllamaAPI("http://127.0.0.1:11434")
    api._pull._client = httpx.AsyncClient(
        base_url=api.base_url, transport=httpx.MockTransport(handler)
    )
    return api


async def drain(api: OllamaAPI, name: str, *, insecure: bool = False) -> None:
    async for _ in api.pull(name, insecure=insecure):
        pass


async def test_pull_sends_insecure_and_raises_a_registry_error() -> None:
    """The flag reaches the pull body; the error line becomes a non-transient RegistryTLSError."""
    seen: list[dict[str, object]] = []
    api = api_answering([{"status": "pulling manifest"}, {"error": PLAIN_HTTP}], seen)
    with pytest.raises(RegistryTLSError) as info:
        await drain(api, "127.0.0.1:5000/library/tiny-chat", insecure=True)
    assert seen[0]["insecure"] is True
    assert seen[0]["model"] == "127.0.0.1:5000/library/tiny-chat"
    assert info.value.problem is RegistryProblem.PLAIN_HTTP
    assert not info.value.transient
    await api.aclose()


async def test_registry_down_stays_a_transient_stream_error() -> None:
    """A registry that refuses connections may come back: that error is still retried."""
    api = api_answering([{"status": "pulling manifest"}, {"error": REGISTRY_DOWN}], [])
    with pytest.raises(PullStreamError) as info:
        await drain(api, "m")
    assert not isinstance(info.value, RegistryTLSError)
    assert info.value.transient
    assert permanent_backoff(info.value) is None
    await api.aclose()


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        (
            PLAIN_HTTP,
            "the registry 127.0.0.1:5000 speaks plain HTTP and Ollama uses HTTPS unless told "
            "otherwise; add ?insecure=true to this entry of OLLAMA_PRELOAD_MODELS",
        ),
        (
            UNKNOWN_CA,
            "ollama serve does not trust the CA that signed the certificate of the registry "
            "127.0.0.1:5000; set SSL_CERT_FILE=/path/ca.pem",
        ),
        (HTTPS_ONLY, "speaks HTTPS but insecure=true makes Ollama use plain HTTP; remove"),
        (WRONG_NAME, "refused the certificate of the registry 127.0.0.1:5000; fix the certificate"),
    ],
)
def test_the_reason_names_the_fix_and_keeps_ollamas_text(text: str, fix: str) -> None:
    """One line: the fix first, then Ollama's own words; a long wait before the next pull."""
    problem = registry_problem(text)
    assert problem is not None
    exc = RegistryTLSError(text, problem)
    reason = failure_reason(exc, parse_entry("127.0.0.1:5000/library/tiny-chat", 0))
    assert fix in reason
    assert reason.endswith(f"(Ollama: {text.strip()})")
    assert "\n" not in reason
    assert permanent_backoff(exc) == PERMANENT_BACKOFF


def test_an_entry_from_the_models_file_is_named_by_its_file_and_line() -> None:
    """Issue 27 item 4: the hint names the place the user edits, not OLLAMA_PRELOAD_MODELS."""
    content = b"# registries\nllama3.2\n127.0.0.1:5000/library/tiny-chat\n"
    spec = parse_models_file(content, Path("/etc/ollama-preloader/models.txt")).specs[1]
    reason = failure_reason(RegistryTLSError(PLAIN_HTTP, RegistryProblem.PLAIN_HTTP), spec)
    assert (
        "add ?insecure=true to this entry of "
        "PRELOADER_MODELS_FILE=/etc/ollama-preloader/models.txt (line 3)"
    ) in reason
    assert "OLLAMA_PRELOAD_MODELS" not in reason


def test_not_found_keeps_its_long_wait() -> None:
    """The registry not knowing the name is the other failure that waits long."""
    exc = PullStreamError("pull model manifest: file does not exist")
    assert permanent_backoff(exc) == PERMANENT_BACKOFF
    assert permanent_backoff(OllamaAPIError("boom")) is None


async def test_pull_model_does_not_retry_a_registry_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five attempts allowed, one made: no configuration gets better by retrying it."""
    for name in list(os.environ):
        if name.startswith(("PRELOADER_", "OLLAMA_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PRELOADER_PULL_ATTEMPTS", "5")
    monkeypatch.setenv("PRELOADER_RETRY_INITIAL", "0.01")
    monkeypatch.setenv("PRELOADER_RETRY_MAX", "0.01")
    settings = load_settings(None)
    seen: list[dict[str, object]] = []
    api = api_answering([{"status": "pulling manifest"}, {"error": UNKNOWN_CA}], seen)
    (spec,) = parse_model_list("127.0.0.1:5000/library/tiny-chat").specs
    status = ModelStatus(spec)
    with pytest.raises(RegistryTLSError):
        await pull_model(api, settings, status)
    assert len(seen) == 1
    assert seen[0]["insecure"] is False
    await api.aclose()


def test_a_ca_file_that_does_not_load_is_one_line_naming_it(tmp_path: Path) -> None:
    """Missing, not PEM, a directory: ConfigError naming SSL_CERT_FILE; a real bundle passes."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for path, why in (
        (tmp_path / "missing.pem", "no such file or directory"),
        (junk, "no certificate or crl found"),
        (tmp_path, "is a directory"),
    ):
        with pytest.raises(ConfigError) as info:
            check_ca_file({"SSL_CERT_FILE": str(path)})
        assert str(info.value) == (
            f"SSL_CERT_FILE={str(path)!r}: cannot be read as CA certificates ({why}); name the "
            "PEM file of the CA that signed your registry's certificate, or unset it"
        )
    check_ca_file({"SSL_CERT_FILE": certifi.where()})
    check_ca_file({"SSL_CERT_FILE": ""})
    check_ca_file({})


def test_a_ca_check_started_early_gives_the_same_answer_once(tmp_path: Path) -> None:
    """`run` starts the load in a thread before its imports; the check then uses that result
    (the same one-line error for a bad file), and a later check (a re-read) loads again."""
    path = tmp_path / "ca.pem"
    path.write_text("not a certificate\n")
    environ = {"SSL_CERT_FILE": str(path)}
    start_ca_check(environ)
    with pytest.raises(ConfigError, match="no certificate or crl found"):
        check_ca_file(environ)
    path.write_text(Path(certifi.where()).read_text())
    check_ca_file(environ)  # loaded again: the file was mended since
    start_ca_check({"SSL_CERT_FILE": certifi.where()})
    check_ca_file({"SSL_CERT_FILE": certifi.where()})
