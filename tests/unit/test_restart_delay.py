"""How long `run` waits before it restarts an `ollama serve` that died (server/owned.py)."""

from __future__ import annotations

from ollama_preloader.server.owned import HEALTHY_RUN, RESTART_BACKOFF_MAX, restart_delay


def test_a_serve_that_ran_a_while_is_restarted_at_once() -> None:
    """Every model is down until it is back, and one death after serving is no crash loop."""
    assert restart_delay(HEALTHY_RUN + 1, 0) == (0, 0.0)
    assert restart_delay(HEALTHY_RUN + 1, 5) == (0, 0.0)  # a crash loop that recovered


def test_quick_deaths_in_a_row_back_off() -> None:
    failures, delays = 0, []
    for _ in range(9):
        failures, delay = restart_delay(0.5, failures)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert max(delays) == RESTART_BACKOFF_MAX
