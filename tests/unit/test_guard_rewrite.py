"""The guard's rewrite rules: what Ollama would read, and what the guard sends instead."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ollama_preloader.config.modelspec import ModelSpec, parse_entry
from ollama_preloader.guard.rewrite import (
    FOREVER,
    Policy,
    keep_alive_seconds,
    model_of,
    rewrite,
)
from ollama_preloader.ollama.names import name_key

DECLARED = {
    name_key(s.name): s
    for s in (parse_entry("tiny-chat", 0), parse_entry("big?num_ctx=8192&keep_alive=1h", 1))
}


def lookup(model: str) -> ModelSpec | None:
    return DECLARED.get(name_key(model))


def sent(path: str, body: Any, policy: Policy | None = None) -> dict[str, Any]:
    """The body Ollama receives through the guard, as a dict."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    outcome = rewrite(path, raw, policy or Policy(), lookup)
    assert outcome.reject is None
    result: dict[str, Any] = json.loads(outcome.body if outcome.body is not None else raw)
    return result


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        ("0s", 0.0),
        ("0", 0.0),
        ("5m", 300.0),
        (300, 300.0),
        (1e-10, 0.0),  # rounds to 0 ns: unloads
        (1e10, 0.0),  # overflows int64 ns: wraps negative, unloads
        (-1, FOREVER),
        ("-1m", FOREVER),
        ("-1", None),  # Ollama answers 400: left alone
        ("1d", None),
        (True, None),
        (None, None),
    ],
)
def test_keep_alive_is_read_as_ollama_reads_it(value: Any, seconds: float | None) -> None:
    """Every form of keep_alive maps to the duration Ollama would apply."""
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", [0, "0s", "5m", 300, 1e-10, 1e10, "1h"])
@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/embed", "/api/embeddings"])
def test_a_shorter_keep_alive_on_a_pinned_model_becomes_forever(path: str, value: Any) -> None:
    """On every endpoint that reads keep_alive, a value that would un-pin is replaced by -1."""
    assert (
        sent(path, {"model": "tiny-chat", "prompt": "hi", "keep_alive": value})["keep_alive"] == -1
    )


def test_unload_fast_paths_are_rewritten_too() -> None:
    """`ollama stop` (generate, empty prompt) and chat with no messages keep the pin."""
    assert sent("/api/generate", {"model": "tiny-chat", "keep_alive": 0})["keep_alive"] == -1
    body = {"model": "tiny-chat:latest", "messages": [], "keep_alive": 0}
    assert sent("/api/chat", body)["keep_alive"] == -1


def test_keys_match_case_insensitively_and_the_last_duplicate_wins() -> None:
    """`Keep_Alive` sets the field in Go; after the rewrite only one spelling remains."""
    raw = b'{"model":"tiny-chat","keep_alive":-1,"Keep_Alive":0}'
    assert sent("/api/generate", raw) == {"model": "tiny-chat", "keep_alive": -1}
    raw = b'{"MODEL":"tiny-chat","KEEP_ALIVE":"0s"}'
    assert sent("/api/generate", raw)["keep_alive"] == -1
    # The Kelvin sign folds to k in Go's matcher.
    raw = '{"model":"tiny-chat","\u212aeep_alive":0}'.encode()
    assert sent("/api/generate", raw) == {"model": "tiny-chat", "keep_alive": -1}


def test_a_forever_or_longer_keep_alive_is_left_alone() -> None:
    """Nothing changes when the client's value keeps the pin (the body is not re-encoded)."""
    for value in (-1, "-5m"):
        raw = json.dumps({"model": "tiny-chat", "keep_alive": value}).encode()
        assert rewrite("/api/generate", raw, Policy(), lookup).body is None
    raw = json.dumps({"model": "big", "keep_alive": "2h"}).encode()
    assert rewrite("/api/generate", raw, Policy(), lookup).body is None


def test_a_model_with_a_finite_keep_alive_keeps_at_least_that() -> None:
    """A declared `keep_alive=1h` is the floor: a client's 5m becomes 3600."""
    assert sent("/api/generate", {"model": "big", "keep_alive": "5m"})["keep_alive"] == 3600


def test_undeclared_models_pass_untouched_unless_capped() -> None:
    """No rewrite for a model not in the set; with a cap, a longer keep_alive is cut to it."""
    raw = json.dumps({"model": "other", "keep_alive": 0}).encode()
    assert rewrite("/api/generate", raw, Policy(), lookup).body is None
    capped = Policy(undeclared_cap=600.0)
    assert sent("/api/generate", {"model": "other", "keep_alive": -1}, capped)["keep_alive"] == 600
    assert sent("/api/generate", {"model": "other", "keep_alive": 60}, capped)["keep_alive"] == 60


def test_pass_leaves_keep_alive() -> None:
    """PRELOADER_GUARD_KEEP_ALIVE=pass reproduces Ollama without the guard."""
    raw = json.dumps({"model": "tiny-chat", "keep_alive": 0}).encode()
    assert rewrite("/api/generate", raw, Policy(keep_alive="pass"), lookup).body is None


def test_runner_options_are_set_to_the_entry() -> None:
    """`entry`: num_ctx becomes the pinned value; a runner option the entry lacks is dropped;
    sampling options pass."""
    body = {"model": "big", "options": {"num_ctx": 2048, "num_batch": 64, "temperature": 0.5}}
    assert sent("/api/chat", body)["options"] == {"num_ctx": 8192, "temperature": 0.5}
    body = {"model": "tiny-chat", "options": {"num_ctx": 4096, "use_mmap": False, "seed": 1}}
    assert sent("/api/generate", body)["options"] == {"seed": 1}


def test_equal_options_and_sampling_only_are_not_rewritten() -> None:
    """The pin's own value (also as 8192.0, Go reads numbers as floats) changes nothing."""
    for options in ({"num_ctx": 8192}, {"num_ctx": 8192.0}, {"temperature": 0}):
        raw = json.dumps({"model": "big", "options": options}).encode()
        assert rewrite("/api/generate", raw, Policy(), lookup).changes == []


def test_shift_false_is_dropped() -> None:
    """The top-level `shift: false` is another runner; the pin loads with the default."""
    assert "shift" not in sent("/api/generate", {"model": "tiny-chat", "shift": False})


def test_reject_names_model_option_and_pinned_value() -> None:
    """`reject`: one message with the model, the option and the pin's value."""
    raw = json.dumps({"model": "big", "options": {"num_ctx": 2048}}).encode()
    outcome = rewrite("/api/generate", raw, Policy(options="reject"), lookup)
    assert outcome.reject is not None
    assert "'big:latest'" in outcome.reject
    assert "num_ctx=2048" in outcome.reject
    assert "num_ctx=8192" in outcome.reject


def test_options_pass_leaves_them() -> None:
    """PRELOADER_GUARD_OPTIONS=pass: the reload happens as without the guard."""
    raw = json.dumps({"model": "big", "options": {"num_ctx": 2048}}).encode()
    assert rewrite("/api/generate", raw, Policy(options="pass"), lookup).body is None


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1,2]", b'{"model": 3, "keep_alive": 0}', b'{"keep_alive":0}', b""]
)
def test_what_it_does_not_understand_passes(raw: bytes) -> None:
    """Malformed JSON or no model name: forwarded as is, for Ollama to answer."""
    assert rewrite("/api/generate", raw, Policy(), lookup).body is None


def test_wrongly_typed_options_pass_for_ollama_to_refuse() -> None:
    """Ollama answers a string num_ctx with its own error; the guard does not hide it."""
    raw = json.dumps({"model": "big", "options": {"num_ctx": "2048"}}).encode()
    assert rewrite("/api/generate", raw, Policy(), lookup).body is None


def test_v1_paths_name_the_model_and_rewrite_nothing() -> None:
    """The OpenAI layer drops keep_alive itself: the guard only reads the model."""
    raw = json.dumps({"model": "tiny-chat", "keep_alive": 0}).encode()
    outcome = rewrite("/v1/chat/completions", raw, Policy(), lookup)
    assert (outcome.model, outcome.declared, outcome.body) == ("tiny-chat", True, None)
    assert model_of(b'{"Model":"x"}') == "x"


def test_other_fields_survive_the_rewrite() -> None:
    """Images, messages and unknown fields are kept as sent, with an empty options object."""
    body = {
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": "hi", "images": ["QUJD" * 1000]}],
        "options": {},
        "format": {"type": "object"},
        "keep_alive": 0,
    }
    result = sent("/api/chat", body)
    assert result == {**body, "keep_alive": -1}
