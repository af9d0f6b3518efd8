"""Shared test setup: `tests/` is on sys.path (pyproject), so `fake_ollama` imports directly."""
