"""PRELOADER_MODELS_FILE at start, through the real CLI: `run`, `watch` and `pull` all read the
list from it, and refuse it with exit 2 when it conflicts with the variable or is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_catalogs import SMALL, write_catalog
from fake_ollama.harness import FakeOllama, read_jsonl, start_fake
from preloader_harness import FAKE_BIN, Launcher

COMMANDS = [("run",), ("watch",), ("pull",)]
LIST = "# the chat model first\nllama3.2?num_ctx=8192\n\nnomic-embed-text   # embeddings\n"


def file_env(launcher: Launcher, text: str | None = LIST, **env: str) -> dict[str, str]:
    """A models file in the temp dir (None: no file at that path) named by the variable."""
    path = launcher.tmp / "models.txt"
    if text is not None:
        path.write_text(text)
    return launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json", SMALL),
        PRELOADER_MODELS_FILE=str(path),
        **env,
    )


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ollama-preloader: error: ")
    return lines[0]


@pytest.mark.parametrize("args", COMMANDS)
def test_file_and_variable_together_exit_2(launcher: Launcher, args: tuple[str, ...]) -> None:
    """Both set: exit 2, one line naming both; no `ollama serve` started."""
    env = file_env(launcher, OLLAMA_PRELOAD_MODELS="devstral")
    result = launcher.run_once(args, env=env)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "PRELOADER_MODELS_FILE (from the environment)" in line
    assert "OLLAMA_PRELOAD_MODELS (from the environment)" in line
    assert not Path(env["FAKE_OLLAMA_LOG"]).exists()


@pytest.mark.parametrize("args", COMMANDS)
def test_missing_file_exits_2_naming_it(launcher: Launcher, args: tuple[str, ...]) -> None:
    """No file at the path: exit 2 naming the variable and the path."""
    env = file_env(launcher, text=None)
    result = launcher.run_once(args, env=env)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert f"PRELOADER_MODELS_FILE={launcher.tmp / 'models.txt'}: no such file" in line
    assert not Path(env["FAKE_OLLAMA_LOG"]).exists()


def test_bad_line_exits_2_naming_the_line(launcher: Launcher) -> None:
    """A bad entry: exit 2 with the file's path and line number."""
    env = file_env(launcher, text="llama3.2\n# ok so far\nllama3.2?temperature=0.1\n")
    result = launcher.run_once(("run",), env=env)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "models.txt, line 3: entry 'llama3.2?temperature=0.1': temperature is a sampling" in line


def test_run_pins_the_files_models(launcher: Launcher) -> None:
    """`run` preloads exactly the file's entries, in its order, with their options."""
    run = launcher.start(env=file_env(launcher))
    run.wait_all_pinned()
    plan = run.wait_event("preload.plan")
    assert plan["models"] == 2
    assert [r["body"]["model"] for r in run.requests("/api/pull")] == [
        "llama3.2",
        "nomic-embed-text",
    ]
    assert run.requests("/api/generate")[0]["body"]["options"] == {"num_ctx": 8192}
    assert sorted(m["name"] for m in run.ps()) == ["llama3.2:latest", "nomic-embed-text:latest"]
    assert run.stop() == 0


def test_pull_bakes_the_files_models(launcher: Launcher) -> None:
    """`pull` pulls the file's entries and exits 0."""
    env = file_env(launcher)
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 0, result.stderr
    pulled = [
        r["body"]["model"]
        for r in read_jsonl(env["FAKE_OLLAMA_LOG"])
        if r.get("path") == "/api/pull"
    ]
    assert sorted(pulled) == ["llama3.2", "nomic-embed-text"]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeOllama]:
    with start_fake(tmp_path / "fake", catalog=SMALL, present=["llama3.2"]) as server:
        yield server


def test_watch_pins_the_files_models(launcher: Launcher, fake: FakeOllama) -> None:
    """`watch` takes the list from the file too (and its check for an empty list passes)."""
    env = file_env(launcher, OLLAMA_HOST=fake.host)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != FAKE_BIN)
    run = launcher.start(("watch",), env=env)
    run.wait_all_pinned()
    assert sorted(m["name"] for m in fake.ps()) == ["llama3.2:latest", "nomic-embed-text:latest"]
    assert [r["body"]["model"] for r in fake.requests("/api/pull")] == ["nomic-embed-text"]
    assert run.stop() == 0


def baked_env(launcher: Launcher, **env: str) -> dict[str, str]:
    """A baked image's models file (as the Dockerfile writes it), and no user list."""
    path = launcher.tmp / "baked-models.txt"
    path.write_text("llama3.2\nnomic-embed-text\n")
    return launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json", SMALL),
        PRELOADER_BAKED_MODELS_FILE=str(path),
        **env,
    )


def pulled(env: dict[str, str]) -> list[str]:
    log = read_jsonl(env["FAKE_OLLAMA_LOG"])
    return sorted(r["body"]["model"] for r in log if r.get("path") == "/api/pull")


def test_baked_list_is_pulled_when_the_user_sets_none(launcher: Launcher) -> None:
    """No user list: `pull` takes the baked file's models."""
    env = baked_env(launcher)
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 0, result.stderr
    assert pulled(env) == ["llama3.2", "nomic-embed-text"]


def test_user_variable_overrides_the_baked_list(launcher: Launcher) -> None:
    """OLLAMA_PRELOAD_MODELS on a baked image: only the user's list, and no conflict error."""
    env = baked_env(launcher, OLLAMA_PRELOAD_MODELS="nomic-embed-text")
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 0, result.stderr
    assert pulled(env) == ["nomic-embed-text"]


def test_user_models_file_overrides_the_baked_list(launcher: Launcher) -> None:
    """PRELOADER_MODELS_FILE on a baked image (the Kubernetes manifests' setting) wins."""
    mine = launcher.tmp / "mine.txt"
    mine.write_text("llama3.2\n")
    env = baked_env(launcher, PRELOADER_MODELS_FILE=str(mine))
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 0, result.stderr
    assert pulled(env) == ["llama3.2"]


def test_both_user_settings_on_a_baked_image_exit_2(launcher: Launcher) -> None:
    """Both user settings are still refused, whatever the image baked."""
    mine = launcher.tmp / "mine.txt"
    mine.write_text("llama3.2\n")
    env = baked_env(launcher, PRELOADER_MODELS_FILE=str(mine), OLLAMA_PRELOAD_MODELS="devstral")
    result = launcher.run_once(("pull",), env=env)
    assert result.returncode == 2, result.stderr
    assert "are both set" in one_error_line(result.stderr)
