"""OLLAMA_PRELOAD_MODELS parsing: entries, parameters, duplicates, and the errors users see."""

import pytest

from ollama_preloader.config.modelspec import SpecError, parse_model_list
from ollama_preloader.ollama.kinds import ModelKind


def test_seed_configuration() -> None:
    """The list from the product card parses in order with the default keep_alive -1."""
    parsed = parse_model_list("qwen3-coder:30b,devstral,qwen2.5-coder:1.5b-base,nomic-embed-text")
    assert [s.display for s in parsed.specs] == [
        "qwen3-coder:30b",
        "devstral:latest",
        "qwen2.5-coder:1.5b-base",
        "nomic-embed-text:latest",
    ]
    assert [s.priority for s in parsed.specs] == [0, 1, 2, 3]
    assert all(s.keep_alive_value == -1 and s.pinned for s in parsed.specs)
    assert parsed.warnings == ()


def test_whitespace_quotes_and_empty() -> None:
    """Whitespace and quotes are trimmed like Ollama's envconfig; empty means no models."""
    parsed = parse_model_list(" \" llama3.2 , 'devstral' \" ")
    assert [s.name for s in parsed.specs] == ["llama3.2", "devstral"]
    assert parse_model_list("").specs == ()
    assert parse_model_list(None).specs == ()
    assert parse_model_list("  ").specs == ()


def test_parameters() -> None:
    """Runner options, keep_alive (both spellings) and kind are read from the query part."""
    parsed = parse_model_list(
        "qwen3-coder:30b?num_ctx=32768&num_batch=512,e?kind=embedding,c?keepalive=30m,d?keep_alive=60"
    )
    coder, emb, c, d = parsed.specs
    assert coder.options_dict() == {"num_ctx": 32768, "num_batch": 512}
    assert emb.kind is ModelKind.EMBEDDING
    assert c.keep_alive == 1800
    assert not c.pinned
    assert d.keep_alive_value == 60


def test_duplicates_collapse_with_warning() -> None:
    """A model listed twice (any spelling) keeps its first, higher-priority entry."""
    parsed = parse_model_list("devstral,llama3.2,library/devstral:latest?num_ctx=8192")
    assert [s.display for s in parsed.specs] == ["devstral:latest", "llama3.2:latest"]
    assert len(parsed.warnings) == 1
    assert "devstral" in parsed.warnings[0]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("llama3.2?foo=1", "unknown parameter 'foo'"),
        ("llama3.2?num_ctx=big", "num_ctx='big' is not a whole number"),
        ("llama3.2?num_ctx=0", "num_ctx must be at least 1"),
        ("llama3.2?keep_alive=1d", "keep_alive='1d' is not a duration"),
        ("llama3.2?keep_alive=0", "keep_alive=0 would unload"),
        ("llama3.2?kind=chat", "kind='chat' must be completion or embedding"),
        ("llama3.2?temperature=0.2", "sampling option"),
        ("llama3.2?num_ctx", "needs a value"),
        ("llama3.2?num_ctx=1&num_ctx=2", "given twice"),
        ("?num_ctx=1", "the model name is missing"),
        ("bad name", "invalid model"),
        ("llama3.2:?num_ctx=1", "'llama3.2:?num_ctx=1': the tag in 'llama3.2:' is empty"),
        ("library//llama3.2", "the namespace in 'library//llama3.2' is empty"),
        ("gpt-oss:120b-cloud", "cloud models"),
        ("llama3.2?use_mmap=maybe", "use_mmap must be true or false"),
    ],
)
def test_bad_entries_name_the_entry(raw: str, fragment: str) -> None:
    """Each bad entry raises one message naming the variable, the entry and the problem."""
    with pytest.raises(SpecError) as info:
        parse_model_list(f"devstral,{raw}")
    message = str(info.value)
    assert message.startswith("OLLAMA_PRELOAD_MODELS")
    assert fragment in message
    assert "\n" not in message
