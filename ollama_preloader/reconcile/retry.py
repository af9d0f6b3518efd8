"""Retry policies (tenacity), built from Settings; the only module that imports tenacity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ollama_preloader.config.settings import Settings
from ollama_preloader.errors import OllamaAPIError


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OllamaAPIError) and exc.transient


def pull_retrying(settings: Settings, on_retry: Callable[[RetryCallState], Any]) -> AsyncRetrying:
    """Exponential backoff with jitter for pulls; Ollama resumes partial downloads."""
    return AsyncRetrying(
        stop=stop_after_attempt(settings.pull_attempts),
        wait=wait_exponential_jitter(
            initial=settings.retry_initial, max=settings.retry_max, jitter=settings.retry_initial
        ),
        retry=retry_if_exception(is_transient),
        before_sleep=on_retry,
        reraise=True,
    )


def backoff_seconds(settings: Settings, failures: int, *, floor: float = 0.0) -> float:
    """Delay before retrying a model that failed `failures` times in a row (capped)."""
    delay = settings.retry_initial * 2.0 ** max(0, failures - 1)
    return max(floor, min(settings.retry_max * 5, delay))
