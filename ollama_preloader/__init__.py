"""ollama-preloader: keep a declared set of Ollama models pulled, loaded and pinned."""

__version__ = "0.1.0"
