"""Benchmarks of ollama-preloader against a shell-script entrypoint (see bench.py)."""
