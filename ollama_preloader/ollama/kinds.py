"""Model kinds: how a model is loaded and probed (generate or embed). Lives in the bottom layer
because the API client needs it to choose the call, and config only names it in entries."""

from __future__ import annotations

from enum import StrEnum


class ModelKind(StrEnum):
    COMPLETION = "completion"
    EMBEDDING = "embedding"
