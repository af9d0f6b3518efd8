"""Pure parts of the probe: the plan's re-pin of a wedged model, the CPU time it reads, and the
fake's `wedge` fault that the integration tests rely on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fake_ollama.faults import Faults

from ollama_preloader.config.modelspec import parse_model_list
from ollama_preloader.ollama.api import LoadedModel
from ollama_preloader.reconcile.plan import ActionKind, plan
from ollama_preloader.reconcile.probing import PROGRESS_CPU, Probe
from ollama_preloader.server.runners import cpu_seconds, cpu_wait_seconds
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


def test_a_starved_runner_waits_for_a_cpu_and_a_stopped_one_does_not() -> None:
    """More busy processes than cores: each one's threads wait for a CPU (schedstat), which a
    stopped (or blocked) process never does."""
    cores = os.cpu_count() or 1
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * cores + 1)
    ]
    stopped = busy[0]
    try:
        os.kill(stopped.pid, signal.SIGSTOP)
        # The stop takes effect when the process next runs: until then it may still wait.
        while Path(f"/proc/{stopped.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
            time.sleep(0.01)
        before = {p.pid: cpu_wait_seconds(p.pid) for p in busy}
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
        waits = {p.pid: cpu_wait_seconds(p.pid) for p in busy}
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert waits[stopped.pid] == before[stopped.pid]
    assert all(waits[p.pid] > before[p.pid] for p in busy[1:])  # type: ignore[operator]
    assert cpu_wait_seconds(2**22 + 12345) is None


def test_waiting_for_a_cpu_counts_as_progress() -> None:
    starved = Probe(answered=False, waited=2.0, pid=1, cpu=0.01, cpu_wait=0.4)
    assert starved.progress is not None
    assert starved.progress >= PROGRESS_CPU
    assert starved.progress_text() == "0.01s CPU, 0.40s waiting for one"
    idle = Probe(answered=False, waited=2.0, pid=1, cpu=0.0, cpu_wait=0.0)
    assert idle.progress is not None
    assert idle.progress < PROGRESS_CPU
    unreadable = Probe(answered=False, waited=2.0, pid=1, cpu=0.01, cpu_wait=None)
    assert unreadable.progress == 0.01
    assert unreadable.progress_text() == "0.01s CPU"
    assert Probe(answered=False, waited=2.0, pid=None, cpu=None).progress is None


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
