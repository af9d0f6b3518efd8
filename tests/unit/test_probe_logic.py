"""Pure parts of the probe: the plan's re-pin of a wedged model, the CPU time it reads, and the
fake's `wedge` fault that the integration tests rely on."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fake_ollama.faults import Faults

from ollama_preloader.config.modelspec import parse_model_list
from ollama_preloader.ollama.api import LoadedModel
from ollama_preloader.reconcile.plan import ActionKind, plan
from ollama_preloader.server.runners import cpu_seconds
from ollama_preloader.state.board import Board, State

NOW = datetime(2026, 12, 7, tzinfo=UTC)
PINNED = LoadedModel(
    name="llama3.2:latest",
    digest="d",
    size=1,
    size_vram=0,
    expires_at=NOW + timedelta(days=365 * 200),
    context_length=4096,
)


def wedged_board(*, repin: bool) -> Board:
    board = Board.for_specs(parse_model_list("llama3.2").specs)
    (status,) = board.models
    status.present, status.state, status.wedge_repin = True, State.WEDGED, repin
    return board


def actions(board: Board) -> list[tuple[ActionKind, str]]:
    found = plan(
        board.models, [PINNED], pull_policy="if-missing", now=NOW, monotonic_now=time.monotonic()
    )
    return [(a.kind, a.reason) for a in found]


def test_a_wedged_model_whose_runner_was_killed_is_loaded_though_listed_pinned() -> None:
    assert actions(wedged_board(repin=True)) == [(ActionKind.LOAD, "wedged")]


def test_a_reported_wedge_is_left_to_the_probe() -> None:
    assert actions(wedged_board(repin=False)) == []


def test_wedged_is_not_ready_and_the_reason_says_why() -> None:
    board = wedged_board(repin=False)
    board.server_up, board.observed_restarts = True, board.server_restarts
    board.models[0].reason = "a request waited 1.0s unanswered"
    assert board.ready is False
    assert board.not_ready_reason() == "llama3.2:latest wedged: a request waited 1.0s unanswered"


def test_cpu_seconds_grows_with_work_and_is_none_for_no_process() -> None:
    before = cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = cpu_seconds(os.getpid())
    assert after is not None
    assert after > before
    assert cpu_seconds(2**22 + 12345) is None


def test_fake_wedge_ends_with_the_runner_it_was_tied_to(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"wedge": {"llama3.2": {}}}))
    faults = Faults(str(path))
    assert faults.wedged("llama3.2:latest", runner_pid=10, serve_pid=1)
    assert faults.wedged("llama3.2", runner_pid=10, serve_pid=1)
    assert not faults.wedged("llama3.2", runner_pid=11, serve_pid=1)  # a new runner: cured
    assert json.loads(path.read_text()) == {"wedge": {}}
    assert not faults.wedged("llama3.2", runner_pid=10, serve_pid=1)


def test_fake_wedge_until_serve_survives_a_new_runner(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"wedge": {"llama3.2": {"until": "serve"}}}))
    faults = Faults(str(path))
    assert faults.wedged("llama3.2", runner_pid=10, serve_pid=1)
    assert faults.wedged("llama3.2", runner_pid=11, serve_pid=1)
    assert not faults.wedged("llama3.2", runner_pid=12, serve_pid=2)
