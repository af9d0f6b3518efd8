"""A fake `ollama` executable (server + CLI) that follows the real server's documented behaviour.

Stdlib only. See README.md in this directory for the knobs and `harness.py` for the test API.
"""

VERSION = "0.12.0-fake"

__all__ = ["VERSION"]
