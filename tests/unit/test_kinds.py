"""A kind= entry checked against what /api/show says (reconcile/kinds.py)."""

from __future__ import annotations

from typing import cast

import pytest

from ollama_preloader.config.modelspec import parse_entry
from ollama_preloader.ollama.api import ModelDetails, OllamaAPI
from ollama_preloader.reconcile.kinds import refuted_kind
from ollama_preloader.state.board import ModelStatus


class Shows:
    """An /api/show answer, as much of the client as refuted_kind uses."""

    def __init__(self, capabilities: tuple[str, ...] | None, *, pooling: bool = False) -> None:
        self.details = ModelDetails(capabilities, pooling, None)

    async def show(self, name: str) -> ModelDetails:
        return self.details


async def refuted(entry: str, capabilities: tuple[str, ...] | None) -> str | None:
    status = ModelStatus(spec=parse_entry(entry, 0))
    return await refuted_kind(cast(OllamaAPI, Shows(capabilities)), status)


@pytest.mark.parametrize(
    ("entry", "capabilities"),
    [
        ("m?kind=completion", ("completion", "tools")),
        ("m?kind=embedding", ("embedding",)),
        # A model with both serves either kind.
        ("m?kind=completion", ("embedding", "completion")),
        ("m?kind=embedding", ("embedding", "completion")),
        # A server without capabilities cannot tell: the entry is trusted.
        ("m?kind=embedding", None),
        ("m", ("embedding",)),
    ],
)
async def test_a_kind_the_model_has_is_not_refuted(
    entry: str, capabilities: tuple[str, ...] | None
) -> None:
    assert await refuted(entry, capabilities) is None


async def test_a_missing_capability_is_refuted_with_the_entry_and_the_fix() -> None:
    reason = await refuted("m?kind=embedding", ("completion",))
    assert reason == (
        "the entry 'm?kind=embedding' in OLLAMA_PRELOAD_MODELS sets kind=embedding, but "
        "m:latest is a completion model; drop kind= from the entry or use kind=completion"
    )
