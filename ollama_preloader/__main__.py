"""Entry point for `python -m ollama_preloader`."""

from ollama_preloader.cli import main

main()
