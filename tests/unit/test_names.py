"""Model names normalise and compare the way Ollama's ParseName/DisplayShortest do."""

import pytest

from ollama_preloader.ollama.names import InvalidName, ModelName, name_key


@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:latest", "llama3.2:latest"),
        ("library/llama3.2", "llama3.2:latest"),
        ("registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest"),
        ("https://registry.ollama.ai/library/llama3.2", "llama3.2:latest"),
        ("qwen3-coder:30b", "qwen3-coder:30b"),
        ("jmorgan/mymodel", "jmorgan/mymodel:latest"),
        ("myhost.example:5000/team/model:v1", "myhost.example:5000/team/model:v1"),
        ("  devstral  ", "devstral:latest"),
        ("llama3.2:local", "llama3.2:latest"),
    ],
)
def test_display_matches_ollama(text: str, display: str) -> None:
    """Every spelling prints as the server's DisplayShortest form."""
    assert ModelName.parse(text).display() == display


def test_comparison_ignores_case_and_defaults() -> None:
    """Spellings of the same model share one key; different tags do not."""
    assert name_key("Llama3.2") == name_key("registry.ollama.ai/library/llama3.2:latest")
    assert name_key("llama3.2:1b") != name_key("llama3.2")


@pytest.mark.parametrize(
    "text", ["", "bad name", "-leading", "model@sha256:abc", "m:" + "x" * 81, "ns!/m"]
)
def test_invalid_names_are_refused(text: str) -> None:
    """Names Ollama would answer `invalid model name` for are refused up front."""
    with pytest.raises(InvalidName):
        ModelName.parse(text)


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("llama3.2:", "tag"),
        ("library/llama3.2:", "tag"),
        ("llama3.2::", "tag"),
        ("/llama3.2", "namespace"),
        ("library//llama3.2", "namespace"),
        ("myhost:5000//x", "namespace"),
        ("//x", "namespace"),
        ("/library/llama3.2", "host"),
        ("library/", "model"),
        ("host/ns/", "model"),
        (":latest", "model"),
        ("ns/:v1", "model"),
    ],
)
def test_empty_promised_parts_are_refused(text: str, part: str) -> None:
    """A separator with nothing on its side is a missing part in Ollama, not the default."""
    with pytest.raises(InvalidName, match=f"the {part} in .* is empty"):
        ModelName.parse(text)


def test_scheme_without_host_takes_the_default_host() -> None:
    """`https:///ns/m` is valid in Ollama: the empty host after the scheme is not promised."""
    assert ModelName.parse("https:///jmorgan/m").display() == "jmorgan/m:latest"


def test_cloud_tags_are_recognised() -> None:
    """`:cloud` and `-cloud` tags are proxied by Ollama and cannot be pinned."""
    assert ModelName.parse("gpt-oss:120b-cloud").is_cloud
    assert ModelName.parse("kimi:cloud").is_cloud
    assert not ModelName.parse("llama3.2").is_cloud
