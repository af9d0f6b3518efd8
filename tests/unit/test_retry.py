"""The pull retry policy: backoff from PRELOADER_RETRY_INITIAL, capped, with no deprecated
tenacity argument (a DeprecationWarning here would fill every user's log at each retry)."""

from __future__ import annotations

import warnings
from unittest import mock

from tenacity import RetryCallState

from ollama_preloader.config.settings import Settings
from ollama_preloader.reconcile.retry import pull_retrying


def test_pull_backoff_starts_at_retry_initial_and_is_capped() -> None:
    settings = Settings(retry_initial=2.0, retry_max=5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        retrying = pull_retrying(settings, lambda _state: None)
    waits = []
    for attempt in (1, 2, 3, 4):
        state = RetryCallState(retrying, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        with mock.patch("random.uniform", return_value=0.0):
            waits.append(retrying.wait(state))
    assert waits == [2.0, 4.0, 5.0, 5.0]
