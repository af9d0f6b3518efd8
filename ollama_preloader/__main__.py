"""Entry point for `python -m ollama_preloader`."""

from ollama_preloader.entry import main

main()
