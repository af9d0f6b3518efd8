"""A declared model's kind, and the load request that kind calls for.

The kind comes from the entry's `kind=`, or from /api/show once per model; a model the server
refuses to `generate` after all is loaded as an embedding model.
"""

from __future__ import annotations

from typing import Any

from ollama_preloader.errors import NotSupported, OllamaAPIError
from ollama_preloader.observe.logs import get_logger
from ollama_preloader.ollama.api import OllamaAPI
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.state.board import ModelStatus

log = get_logger()


async def detect_kind(api: OllamaAPI, status: ModelStatus) -> ModelKind:
    """The kind to load `status` as: known already, or read from /api/show (and logged)."""
    if status.kind is not None:
        return status.kind
    details = await api.show(status.spec.name)
    status.kind, status.blob = details.kind, details.blob
    status.trained_context = details.context_length
    log.info(
        "model.kind",
        msg=f"{status.spec.display} is {article(status.kind.value)} {status.kind.value} model",
        model=status.spec.display,
        kind=status.kind.value,
        source="capabilities" if details.capabilities is not None else "pooling_type",
    )
    return status.kind


async def send_load(
    api: OllamaAPI, status: ModelStatus, kind: ModelKind, options: dict[str, Any]
) -> None:
    spec = status.spec
    if kind == ModelKind.EMBEDDING:
        await api.load_embedding(spec.name, spec.keep_alive_value, options)
    else:
        await api.load_completion(spec.name, spec.keep_alive_value, options)


async def send_load_detecting(
    api: OllamaAPI, status: ModelStatus, kind: ModelKind, options: dict[str, Any]
) -> ModelKind:
    """The load request; a completion load the server refuses is sent again as an embedding
    load, unless the entry said `kind=`. Returns the kind it was loaded as."""
    spec = status.spec
    try:
        await send_load(api, status, kind, options)
    except NotSupported:
        if spec.kind is not None or kind == ModelKind.EMBEDDING:
            raise
        # The server refused generate: it is an embedding model after all.
        status.kind = kind = ModelKind.EMBEDDING
        log.info(
            "model.kind",
            msg=f"{spec.display} does not support generate; loading it as an embedding model",
            model=spec.display,
            kind=kind.value,
            source="generate refused",
        )
        await send_load(api, status, kind, options)
    return kind


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


async def refuted_kind(api: OllamaAPI, status: ModelStatus) -> str | None:
    """For an entry with `kind=`, once loaded: the bad-input reason when /api/show says the
    model is of the other kind, else None (also when it cannot tell: a server without
    capabilities, or /api/show failing). Ollama loads any model for an empty /api/embed, so
    kind=embedding on a completion model loads, and only real requests would fail later."""
    spec = status.spec
    if spec.kind is None:
        return None
    try:
        details = await api.show(spec.name)
    except OllamaAPIError:
        return None
    status.blob = status.blob or details.blob
    # A model with both capabilities serves either kind: only a missing one is wrong.
    if details.capabilities is None or spec.kind.value in details.capabilities:
        return None
    return wrong_kind_reason(status, details.kind)


def wrong_kind_reason(status: ModelStatus, actual: ModelKind) -> str:
    """Bad input, worded as such: the entry, what it says, what the model is, the fix."""
    spec = status.spec
    declared = spec.kind.value if spec.kind else "?"
    return (
        f"the entry {spec.entry!r} in {spec.source} sets kind={declared}, but {spec.display} is "
        f"{article(actual.value)} {actual.value} model; drop kind= from the entry or use "
        f"kind={actual.value}"
    )
