"""What a re-pin sends: the entry's options, or the context the runner there runs with."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from ollama_preloader.config.modelspec import parse_model_list
from ollama_preloader.config.settings import Settings
from ollama_preloader.ollama.api import LoadedModel, OllamaAPI
from ollama_preloader.reconcile.loading import Loader
from ollama_preloader.reconcile.plan import Action, ActionKind, plan
from ollama_preloader.state.board import Board, ModelStatus, State
from ollama_preloader.state.runner_facts import RunnerExit, RunnerInfo

FOREVER = datetime.now(UTC) + timedelta(days=365 * 200)


def status_for(entry: str, **fields: object) -> ModelStatus:
    status = Board.for_specs(parse_model_list(entry).specs).models[0]
    for name, value in fields.items():
        setattr(status, name, value)
    return status


async def no_ps() -> list[LoadedModel]:
    return []


def options(status: ModelStatus, kind: ActionKind, reason: str) -> dict[str, object]:
    """What Loader would send (no request is made: the API points nowhere)."""
    api = OllamaAPI("http://127.0.0.1:9")
    loader = Loader(Settings(), api, Board([status]), read_ps=no_ps, store_changed=lambda: None)
    return loader._options(status, Action(kind, status.key, reason))


@pytest.mark.parametrize(
    ("fields", "kind", "reason", "expected"),
    [
        # A client left 2048: the re-pin keeps it.
        (
            {"context_length": 2048, "default_context": 4096},
            ActionKind.REPIN,
            "unpinned",
            {"num_ctx": 2048},
        ),
        # What no num_ctx gave (capped at the model's own 512): send nothing, or it reloads.
        ({"context_length": 512, "default_context": 512}, ActionKind.REPIN, "unpinned", {}),
        ({"context_length": 512, "trained_context": 512}, ActionKind.REFRESH, "refresh", {}),
        # A dead runner is started again as it ran.
        (
            {"context_length": 2048, "default_context": 4096},
            ActionKind.LOAD,
            "runner exited",
            {"num_ctx": 2048},
        ),
        # After an eviction nothing is there to keep: the server's default.
        ({"context_length": None, "default_context": 4096}, ActionKind.LOAD, "evicted", {}),
    ],
)
def test_entry_without_options_keeps_the_runner_as_it_is(
    fields: dict[str, object], kind: ActionKind, reason: str, expected: dict[str, object]
) -> None:
    """Re-pin, refresh and dead-runner reload never change the context of what is there."""
    assert options(status_for("llama3.2", **fields), kind, reason) == expected


def test_entry_options_always_win() -> None:
    status = status_for("llama3.2?num_ctx=8192", context_length=2048)
    assert options(status, ActionKind.REPIN, "unpinned") == {"num_ctx": 8192}


def test_a_dead_runner_is_loaded_again_though_it_is_listed() -> None:
    """Ollama still lists a model whose runner died: the plan sends its load request anyway."""
    status = status_for("llama3.2", state=State.LOADING, present=True, ever_loaded=True)
    status.dead_runner = RunnerExit(RunnerInfo(41, "sha256-x", 4096), None, time.monotonic())
    listed = LoadedModel("llama3.2:latest", "d", 1, 0, FOREVER, 4096)
    actions = plan(
        [status],
        [listed],
        pull_policy="if-missing",
        now=datetime.now(UTC),
        monotonic_now=time.monotonic(),
    )
    assert [(a.kind, a.reason) for a in actions] == [(ActionKind.LOAD, "runner exited")]
    status.dead_runner = None
    assert (
        plan(
            [status],
            [listed],
            pull_policy="if-missing",
            now=datetime.now(UTC),
            monotonic_now=time.monotonic(),
        )
        == []
    )
