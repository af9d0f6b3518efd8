"""The live-reload source: the models file's content is polled, SIGHUP re-reads it and `.env`.

Results are what the supervisor will act on (and log): a new list and what it changes, or one
error per distinct problem while the set in force stays. Polls are driven one by one, so no
test depends on timing; the `run` tests only bound their wait.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ollama_preloader.config.environ import server_environment
from ollama_preloader.config.reload import (
    ENVIRONMENT_WINS,
    ModelSource,
    Reloaded,
    ReloadFailed,
    ReloadResult,
)
from ollama_preloader.config.settings import load_settings

SAFETY = 20.0  # seconds a `run` test waits for a result before it fails (never a timing check)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("OLLAMA_", "PRELOADER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def names(result: ReloadResult | None) -> list[str]:
    assert isinstance(result, Reloaded), result
    return [s.display for s in result.specs]


def reloaded(result: ReloadResult | None) -> Reloaded:
    assert isinstance(result, Reloaded), result
    return result


def failed(result: ReloadResult | None) -> ReloadFailed:
    assert isinstance(result, ReloadFailed), result
    return result


class FileSetup:
    """A models file named in `.env`, the settings loaded from it, and its source."""

    def __init__(self, tmp_path: Path, text: str) -> None:
        self.path = tmp_path / "models.txt"
        self.path.write_text(text)
        self.env_file = tmp_path / ".env"
        self.env_file.write_text(f"PRELOADER_MODELS_FILE={self.path}\n")
        self.settings = load_settings(self.env_file)
        self.source = ModelSource(self.settings, env_file=self.env_file)

    def write(self, text: str) -> None:
        self.path.write_text(text)

    async def settle(self) -> ReloadResult | None:
        """Two polls: a new content is taken once two reads in a row agree."""
        first = await self.source.poll()
        assert first is None, "a content seen once is never applied"
        return await self.source.poll()


@pytest.fixture
def setup(tmp_path: Path) -> FileSetup:
    return FileSetup(tmp_path, "devstral\nllama3.2\n")


async def test_the_content_at_start_is_no_change(setup: FileSetup) -> None:
    """The first looks learn the file as it was parsed at start and report nothing."""
    for _ in range(4):
        assert await setup.source.poll() is None


async def test_an_added_line_is_reported_once(setup: FileSetup) -> None:
    """Add a model: one result naming it, in priority order; then quiet again."""
    assert await setup.settle() is None
    setup.write("devstral\nqwen3:8b\nllama3.2\n")
    result = reloaded(await setup.settle())
    assert result.trigger == "file"
    assert names(result) == ["devstral:latest", "qwen3:8b", "llama3.2:latest"]
    assert [s.display for s in result.changes.added] == ["qwen3:8b"]
    assert not result.changes.reordered
    assert [s.display for s in setup.source.settings.models] == names(result)
    for _ in range(3):
        assert await setup.source.poll() is None


async def test_a_change_before_the_first_look_is_reported(setup: FileSetup) -> None:
    """Edited between the start's read and the watcher's first look: not lost."""
    setup.write("llama3.2\n")
    result = reloaded(await setup.settle())
    assert [s.display for s in result.changes.removed] == ["devstral:latest"]


async def test_a_half_written_file_is_never_applied(setup: FileSetup) -> None:
    """Caught empty (truncated, not yet written): nothing until the content holds still."""
    assert await setup.settle() is None
    setup.write("")  # `>` has truncated it...
    assert await setup.source.poll() is None
    setup.write("devstral\nllama3.2\nqwen3:8b\n")  # ...and the shell then writes it
    assert await setup.source.poll() is None
    result = reloaded(await setup.source.poll())
    assert not result.changes.removed
    assert [s.display for s in result.changes.added] == ["qwen3:8b"]


async def test_an_edit_undone_before_it_settles_is_nothing(setup: FileSetup) -> None:
    """A content seen once that goes back to the one in force never becomes a result."""
    assert await setup.settle() is None
    setup.write("devstral\n")
    assert await setup.source.poll() is None
    setup.write("devstral\nllama3.2\n")
    for _ in range(3):
        assert await setup.source.poll() is None


async def test_comment_only_edit_is_reported_as_no_change(setup: FileSetup) -> None:
    """A later edit that changes no model still answers (it may clear a shown error)."""
    assert await setup.settle() is None
    setup.write("# chat first\ndevstral  # big\nllama3.2\n")
    result = reloaded(await setup.settle())
    assert result.changes.empty
    assert result.changes.summary() == "no change to the model set (2 models)"


async def test_a_bad_edit_fails_once_keeps_the_set_and_a_fix_applies(setup: FileSetup) -> None:
    """A line that does not parse: one failure naming file and line; the set stays; the fixed
    version is compared with the set in force, not with the broken one."""
    assert await setup.settle() is None
    setup.write("devstral\nllama3.2\nqwen3:8b?num_ctx=lots\n")
    result = failed(await setup.settle())
    assert result.message.startswith(f"PRELOADER_MODELS_FILE={setup.path}, line 3: ")
    assert "num_ctx='lots' is not a whole number" in result.message
    assert result.trigger == "file"
    for _ in range(3):
        assert await setup.source.poll() is None  # reported once, not every poll
    assert [s.display for s in setup.source.settings.models] == [
        "devstral:latest",
        "llama3.2:latest",
    ]
    setup.write("devstral\nllama3.2\nqwen3:8b?num_ctx=8192\n")
    fixed = reloaded(await setup.settle())
    assert [s.display for s in fixed.changes.added] == ["qwen3:8b"]
    assert not fixed.changes.removed


async def test_another_bad_edit_is_another_failure(setup: FileSetup) -> None:
    """A different problem is reported too: the message changes, so does /status."""
    assert await setup.settle() is None
    setup.write("devstral?bogus=1\n")
    assert "line 1" in failed(await setup.settle()).message
    setup.write("devstral\nbad name\n")
    assert "line 2" in failed(await setup.settle()).message


async def test_a_deleted_file_fails_once_and_its_return_clears_it(setup: FileSetup) -> None:
    """Gone: one failure, set kept. Back with the same list: a no-change result."""
    assert await setup.settle() is None
    setup.path.unlink()
    result = failed(await setup.settle())
    assert "no such file" in result.message
    assert str(setup.path) in result.message
    assert await setup.source.poll() is None
    setup.write("devstral\nllama3.2\n")
    back = reloaded(await setup.settle())
    assert back.changes.empty
    assert names(back) == ["devstral:latest", "llama3.2:latest"]


async def test_duplicates_in_a_new_version_are_warnings(setup: FileSetup) -> None:
    """As at start: the first entry wins, and the result carries the warning."""
    assert await setup.settle() is None
    setup.write("devstral\nllama3.2\nlibrary/devstral\n")
    result = reloaded(await setup.settle())
    assert result.changes.empty
    (warning,) = result.warnings
    assert "line 3" in warning


def _configmap(directory: Path, version: str, text: str) -> None:
    """What the kubelet's atomic writer does: a new timestamped directory, then `..data`
    swapped to it with one rename; models.txt is a fixed symlink into `..data`."""
    target = directory / version
    target.mkdir()
    (target / "models.txt").write_text(text)
    link = directory / "..data_tmp"
    link.symlink_to(version)
    link.rename(directory / "..data")
    if not (directory / "models.txt").is_symlink():
        (directory / "models.txt").symlink_to("..data/models.txt")


async def test_a_configmap_symlink_swap_is_noticed(tmp_path: Path) -> None:
    """Kubernetes updates a mounted ConfigMap by swapping `..data`; the content poll sees it
    although models.txt itself (a symlink) never changes."""
    mount = tmp_path / "config"
    mount.mkdir()
    _configmap(mount, "..2026_01_01_00_00_00.1", "llama3.2\n")
    env_file = tmp_path / ".env"
    env_file.write_text(f"PRELOADER_MODELS_FILE={mount / 'models.txt'}\n")
    source = ModelSource(load_settings(env_file), env_file=env_file)
    assert await source.poll() is None
    assert await source.poll() is None
    before = os.lstat(mount / "models.txt")
    _configmap(mount, "..2026_01_01_00_01_00.2", "llama3.2\nnomic-embed-text?kind=embedding\n")
    assert os.lstat(mount / "models.txt").st_ino == before.st_ino  # the link is untouched
    assert await source.poll() is None
    result = reloaded(await source.poll())
    assert [s.display for s in result.changes.added] == ["nomic-embed-text:latest"]


# ----- SIGHUP ------------------------------------------------------------------------------


async def test_sighup_reads_the_file_at_once(setup: FileSetup) -> None:
    """No second look needed: a signal is a deliberate request."""
    setup.write("llama3.2\n")
    result = reloaded(await setup.source.reload())
    assert result.trigger == "signal"
    assert [s.display for s in result.changes.removed] == ["devstral:latest"]
    for _ in range(3):
        assert await setup.source.poll() is None  # the poll does not report it again


async def test_sighup_always_answers(setup: FileSetup) -> None:
    """Nothing changed: still a result (the log says so); a broken file: the error again."""
    assert reloaded(await setup.source.reload()).changes.empty
    setup.write("x?temperature=1\n")
    assert failed(await setup.settle()).trigger == "file"
    again = failed(await setup.source.reload())
    assert (again.trigger, "sampling option" in again.message) == ("signal", True)


def var_source(tmp_path: Path, dotenv: str, **kwargs: object) -> tuple[ModelSource, Path]:
    env_file = tmp_path / ".env"
    env_file.write_text(dotenv)
    settings = load_settings(env_file)
    return ModelSource(settings, env_file=env_file, **kwargs), env_file  # type: ignore[arg-type]


async def test_sighup_rereads_the_list_in_dotenv(tmp_path: Path) -> None:
    """Without a models file, SIGHUP re-reads OLLAMA_PRELOAD_MODELS from `.env`; polls don't."""
    source, env_file = var_source(tmp_path, "OLLAMA_PRELOAD_MODELS=devstral,llama3.2\n")
    env_file.write_text("OLLAMA_PRELOAD_MODELS=llama3.2?num_ctx=8192,devstral\n")
    assert await source.poll() is None
    result = reloaded(await source.reload())
    assert names(result) == ["llama3.2:latest", "devstral:latest"]
    assert result.changes.reordered
    assert [c.new.display for c in result.changes.changed] == ["llama3.2:latest"]
    assert result.warnings == ()


async def test_sighup_with_a_bad_list_in_dotenv_keeps_the_set(tmp_path: Path) -> None:
    """A bad entry in the new `.env`: the variable's own one-line error; nothing applied."""
    source, env_file = var_source(tmp_path, "OLLAMA_PRELOAD_MODELS=devstral\n")
    env_file.write_text("OLLAMA_PRELOAD_MODELS=devstral?bogus=1\n")
    result = failed(await source.reload())
    assert result.message.startswith("OLLAMA_PRELOAD_MODELS entry 'devstral?bogus=1'")
    assert [s.display for s in source.settings.models] == ["devstral:latest"]


async def test_sighup_when_the_environment_holds_the_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real environment wins, as at start, and cannot change: the set stays, and the
    result says why and what to do instead."""
    monkeypatch.setenv("OLLAMA_PRELOAD_MODELS", "devstral")
    source, env_file = var_source(tmp_path, "")
    env_file.write_text("OLLAMA_PRELOAD_MODELS=llama3.2\n")
    result = reloaded(await source.reload())
    assert result.changes.empty
    assert names(result) == ["devstral:latest"]
    assert result.warnings == (ENVIRONMENT_WINS,)
    assert "PRELOADER_MODELS_FILE" in ENVIRONMENT_WINS


async def test_sighup_names_what_needs_a_restart_and_applies_the_log_level(
    tmp_path: Path,
) -> None:
    """Log level: live. A knob, or an OLLAMA_* variable ollama serve gets from `.env`: named
    for a restart, and still named on the next SIGHUP since it is still not in force."""
    source, env_file = var_source(
        tmp_path,
        "OLLAMA_PRELOAD_MODELS=devstral\n",
        server_env=server_environment(env_file=tmp_path / ".env"),
    )
    env_file.write_text(
        "OLLAMA_PRELOAD_MODELS=devstral\nPRELOADER_LOG_LEVEL=debug\n"
        "PRELOADER_WATCH_INTERVAL=5s\nOLLAMA_NUM_PARALLEL=4\n"
    )
    result = reloaded(await source.reload())
    assert result.log_level == "debug"
    assert result.restart_needed == ("PRELOADER_WATCH_INTERVAL", "OLLAMA_NUM_PARALLEL")
    message = result.restart_message()
    assert message is not None
    assert "PRELOADER_WATCH_INTERVAL, OLLAMA_NUM_PARALLEL" in message
    assert result.changes.empty
    assert source.settings.log_level == "debug"
    assert source.settings.watch_interval == 1.0  # the running value stays
    again = reloaded(await source.reload())
    assert again.log_level is None  # already applied
    assert again.restart_needed == ("PRELOADER_WATCH_INTERVAL", "OLLAMA_NUM_PARALLEL")


async def test_watch_mode_ignores_server_variables(tmp_path: Path) -> None:
    """`watch` starts no server: an OLLAMA_* variable in `.env` is nobody's restart."""
    source, env_file = var_source(tmp_path, "OLLAMA_PRELOAD_MODELS=devstral\n")
    env_file.write_text("OLLAMA_PRELOAD_MODELS=devstral\nOLLAMA_NUM_PARALLEL=4\n")
    result = reloaded(await source.reload())
    assert (result.restart_needed, result.restart_message()) == ((), None)


async def test_sighup_with_a_broken_dotenv_keeps_everything(setup: FileSetup) -> None:
    """A `.env` that would not start (exit 2) fails the reload with that line, file or not."""
    setup.env_file.write_text(
        f"PRELOADER_MODELS_FILE={setup.path}\nPRELOADER_WATCH_INTERVAL=soon\n"
    )
    setup.write("llama3.2\n")
    result = failed(await setup.source.reload())
    assert "PRELOADER_WATCH_INTERVAL='soon'" in result.message
    assert len(setup.source.settings.models) == 2


async def test_sighup_with_both_sources_in_dotenv_fails(setup: FileSetup) -> None:
    """The start's rule holds: the file and a non-empty variable together are refused."""
    setup.env_file.write_text(
        f"PRELOADER_MODELS_FILE={setup.path}\nOLLAMA_PRELOAD_MODELS=qwen3:8b\n"
    )
    result = failed(await setup.source.reload())
    assert "both set" in result.message


async def test_the_source_of_the_list_changes_only_on_restart(tmp_path: Path) -> None:
    """`.env` now names a models file: restart needed; the list in force stays meanwhile."""
    source, env_file = var_source(tmp_path, "OLLAMA_PRELOAD_MODELS=devstral\n")
    (tmp_path / "models.txt").write_text("llama3.2\n")
    env_file.write_text(f"PRELOADER_MODELS_FILE={tmp_path / 'models.txt'}\n")
    result = reloaded(await source.reload())
    assert names(result) == ["devstral:latest"]
    assert result.restart_needed == ("PRELOADER_MODELS_FILE",)
    assert await source.poll() is None  # the new file is not watched before a restart


async def test_a_file_named_at_start_keeps_being_the_one_read(setup: FileSetup) -> None:
    """`.env` pointing elsewhere: restart needed; the file in force is still the one read."""
    other = setup.path.with_name("other.txt")
    other.write_text("qwen3:8b\n")
    setup.env_file.write_text(f"PRELOADER_MODELS_FILE={other}\n")
    result = reloaded(await setup.source.reload())
    assert result.restart_needed == ("PRELOADER_MODELS_FILE",)
    assert names(result) == ["devstral:latest", "llama3.2:latest"]


# ----- the task ------------------------------------------------------------------------------


@pytest.fixture
async def running(setup: FileSetup) -> AsyncIterator[asyncio.Queue[ReloadResult]]:
    """`run` as the supervisor's task, with a short poll interval, feeding a queue."""
    setup.source.poll_interval = 0.02
    results: asyncio.Queue[ReloadResult] = asyncio.Queue()

    async def collect(result: ReloadResult) -> None:
        await results.put(result)

    task = asyncio.create_task(setup.source.run(collect))
    yield results
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_run_reports_an_edit(setup: FileSetup, running: asyncio.Queue[ReloadResult]) -> None:
    """The task notices an edit on its own and hands over exactly one result."""
    setup.write("devstral\nllama3.2\nqwen3:8b\n")
    result = reloaded(await asyncio.wait_for(running.get(), SAFETY))
    assert [s.display for s in result.changes.added] == ["qwen3:8b"]
    setup.write("devstral\n")
    second = reloaded(await asyncio.wait_for(running.get(), SAFETY))
    assert [s.display for s in second.changes.removed] == ["llama3.2:latest", "qwen3:8b"]
    assert running.empty()


async def test_run_answers_a_reload_request(
    setup: FileSetup, running: asyncio.Queue[ReloadResult]
) -> None:
    """request_reload() (what the SIGHUP handler calls) gives a `signal` result."""
    setup.source.request_reload()
    result = reloaded(await asyncio.wait_for(running.get(), SAFETY))
    assert (result.trigger, result.changes.empty) == ("signal", True)


async def test_run_without_a_file_waits_for_requests(tmp_path: Path) -> None:
    """With the list in `.env` there is nothing to poll: only requests produce results."""
    source, env_file = var_source(tmp_path, "OLLAMA_PRELOAD_MODELS=devstral\n")
    results: asyncio.Queue[ReloadResult] = asyncio.Queue()

    async def collect(result: ReloadResult) -> None:
        await results.put(result)

    task = asyncio.create_task(source.run(collect))
    env_file.write_text("OLLAMA_PRELOAD_MODELS=llama3.2\n")
    source.request_reload()
    result = reloaded(await asyncio.wait_for(results.get(), SAFETY))
    assert names(result) == ["llama3.2:latest"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert results.empty()
