"""Retries: tenacity policies from Settings (the only module importing tenacity), the backoff
of a failed model, and `fail`, the one way a model becomes `failed`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ollama_preloader.config.durations import format_seconds
from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import OllamaAPIError
from ollama_preloader.observe.logs import get_logger

if TYPE_CHECKING:
    from ollama_preloader.state.board import ModelStatus

log = get_logger()


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OllamaAPIError) and exc.transient


def pull_retrying(settings: Settings, on_retry: Callable[[RetryCallState], Any]) -> AsyncRetrying:
    """Exponential backoff with jitter for pulls; Ollama resumes partial downloads."""
    return AsyncRetrying(
        stop=stop_after_attempt(settings.pull_attempts),
        wait=wait_exponential_jitter(
            multiplier=settings.retry_initial, max=settings.retry_max, jitter=settings.retry_initial
        ),
        retry=retry_if_exception(is_transient),
        before_sleep=on_retry,
        reraise=True,
    )


def fail(status: ModelStatus, reason: str, retry_in: float, *, summary: str | None = None) -> None:
    """The one way a model becomes `failed`: its state, its reason, one log event."""
    status.fail(reason, retry_in=retry_in)
    never = math.isinf(retry_in)
    later = "not retried" if never else f"retrying in {format_seconds(retry_in)}"
    log.error(
        "model.failed",
        msg=f"{summary or status.spec.display}: {reason}; {later}",
        model=status.spec.display,
        reason=reason,
        retry_in=None if never else round(retry_in, 1),
    )
