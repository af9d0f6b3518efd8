"""Ollama's native endpoints that load, unload or use a model, and so read `keep_alive` and
`options` (api/types.go). One list for three readers: the supervisor's count of its own
requests (ollama/api.py), the access lines that wake `run` (server/runners.py) and the guard's
rewrites (guard/rewrite.py). Kept apart from api.py so that neither of the others imports the
`ollama` client for it."""

from __future__ import annotations

MODEL_PATHS = frozenset({"/api/generate", "/api/chat", "/api/embed", "/api/embeddings"})
