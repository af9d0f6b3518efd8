"""The console script: `health` goes straight to its stdlib-only code, the rest to the typer app.

Docker and Kubernetes run `ollama-preloader health` every few seconds; importing typer,
pydantic and the Ollama client first would cost more than the check itself.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["health"]:
        from ollama_preloader.observe.healthcheck import run_health

        sys.exit(run_health(args[1:]))
    from ollama_preloader.cli import main as cli_main

    cli_main()
