"""A supervisor whose settings come from a `.env` file: the file in the working directory the
Launcher starts it in, written before it starts, so a test can edit it and send SIGHUP."""

from __future__ import annotations

from pathlib import Path

from fake_catalogs import write_catalog
from preloader_harness import Launcher, Run


def dotenv_file(launcher: Launcher) -> Path:
    """The `.env` a supervisor started by `launcher` reads (its working directory is made)."""
    work = launcher.tmp / "work"
    work.mkdir(exist_ok=True)
    return work / ".env"


def start_from_dotenv(launcher: Launcher, text: str, *, unset: tuple[str, ...] = ()) -> Run:
    """`run` against the fake's default catalog with `.env` holding `text`, once every model is
    pinned; `unset` names variables taken out of the environment (it would win over `.env`)."""
    env = launcher.env(FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json"))
    for name in unset:
        del env[name]
    dotenv_file(launcher).write_text(text)
    run = launcher.start(env=env)
    run.wait_all_pinned()
    return run
