"""The official `ollama` package, imported without letting it read OLLAMA_HOST.

At import the package builds a default client from the raw OLLAMA_HOST and raises a ValueError
on a value Ollama itself accepts (quotes kept by `docker run --env-file`, a trailing space or
colon). Every client here is given the host that ollama/host.py parsed, so the library never
needs the variable: hide it for the import and put it back untouched (`ollama serve` reads it).
"""

from __future__ import annotations

import os

_raw = os.environ.pop("OLLAMA_HOST", None)
try:
    import ollama
finally:
    if _raw is not None:
        os.environ["OLLAMA_HOST"] = _raw

__all__ = ["ollama"]
