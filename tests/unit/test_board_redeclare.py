"""Board.redeclare: a live reload replaces the declared set; /status and /metrics follow."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ollama_preloader.config.modelspec import ModelSpec, parse_model_list
from ollama_preloader.observe.metrics import build_registry
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.state.board import Board, State


def specs(raw: str) -> tuple[ModelSpec, ...]:
    return parse_model_list(raw).specs


def pinned_board(raw: str) -> Board:
    """Every model pinned and observed, as after a complete preload."""
    b = Board.for_specs(specs(raw))
    for m in b.models:
        m.state, m.kind, m.present = State.PINNED, ModelKind.COMPLETION, True
        m.ever_loaded, m.loads, m.size = True, 1, 1_000_000
    b.server_up = True
    b.observed_restarts = b.server_restarts
    return b


def model_labels(board: Board) -> set[str]:
    """The `model` label of every series /metrics has."""
    text = generate_latest(build_registry(board, list)).decode()
    return {
        sample.labels["model"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "model" in sample.labels
    }


def test_added_removed_and_kept() -> None:
    """New entries get pending statuses; removed ones leave; kept ones keep their state."""
    b = pinned_board("a,b,c")
    kept_b = b.get("registry.ollama.ai/library/b:latest")
    result = b.redeclare(specs("b,d"))
    assert [m.spec.display for m in b.models] == ["b:latest", "d:latest"]
    assert b.models[0] is kept_b  # the same object: its history and /api/ps facts stay
    assert (kept_b.state, kept_b.loads, kept_b.size) == (State.PINNED, 1, 1_000_000)
    assert [m.spec.display for m in result.added] == ["d:latest"]
    assert result.added[0].state == State.PENDING
    assert [m.spec.display for m in result.removed] == ["a:latest", "c:latest"]
    assert all(m.state == State.PINNED for m in result.removed)  # as they were: to release
    assert result.changed == ()


def test_priorities_follow_the_new_order() -> None:
    """Reordered: the Board's order and each spec's priority are the new ones."""
    b = pinned_board("a,b,c")
    b.redeclare(specs("c,a,b"))
    assert [(m.spec.display, m.spec.priority) for m in b.models] == [
        ("c:latest", 0),
        ("a:latest", 1),
        ("b:latest", 2),
    ]
    assert all(m.state == State.PINNED for m in b.models)
    assert b.ready  # nothing to load: a reorder alone does not make the pod unready


def test_changed_entry_is_marked_for_a_new_load() -> None:
    """Another num_ctx: the status stays (still loaded, with the old options) but is `respec`,
    with the new spec; an unchanged one is not."""
    b = pinned_board("a?num_ctx=4096,b")
    a, bb = b.models
    a.loaded_context, a.context_load = 4096, a.loads
    result = b.redeclare(specs("a?num_ctx=8192,b"))
    assert result.changed == (a,)
    assert a.respec
    assert not bb.respec
    assert a.spec.options_dict() == {"num_ctx": 8192}
    assert a.state == State.PINNED  # until the loop's load, it is what is loaded
    assert a.loaded_context is None  # the drift check starts over with the new load


def test_respelling_is_kept_without_a_reload() -> None:
    """`a` -> `library/a:latest`: same model, same request; the new spelling is shown."""
    b = pinned_board("a")
    result = b.redeclare(specs("library/a:latest"))
    assert (result.added, result.removed, result.changed) == ((), (), ())
    assert b.models[0].spec.name == "library/a:latest"
    assert not b.models[0].respec


def test_a_changed_failed_model_is_tried_again_at_once() -> None:
    """A model that gave way with a big context gets a fresh start with its new entry."""
    b = pinned_board("a,big?num_ctx=131072")
    big = b.models[1]
    big.fail("capacity: ran out of memory", retry_in=900)
    big.capacity_loaded = 2
    b.redeclare(specs("a,big?num_ctx=8192"))
    assert (big.state, big.reason, big.failures, big.retry_at) == (State.EVICTED, None, 0, 0.0)
    assert big.capacity_loaded is None


def test_an_unchanged_failed_model_keeps_its_backoff() -> None:
    """Nothing new about it: the reload is no reason to retry early."""
    b = pinned_board("a,big")
    big = b.models[1]
    big.fail("capacity: ran out of memory", retry_in=900)
    b.redeclare(specs("big,a"))
    assert (big.state, big.failures) == (State.FAILED, 1)
    assert big.retry_at > 0


def test_insecure_added_retries_a_refused_pull_at_once() -> None:
    """The registry refused the pull (plain HTTP): `?insecure=true` makes it pending again, with
    no reload mark; a model on disk that failed to load keeps its backoff."""
    b = Board.for_specs(specs("a,b"))
    a, bb = b.models
    a.present, bb.present = False, True
    a.fail("the registry speaks plain HTTP", retry_in=600)
    bb.fail("load failed", retry_in=600)
    b.redeclare(specs("a?insecure=true,b?insecure=true"))
    assert (a.state, a.reason, a.failures, a.retry_at) == (State.PENDING, None, 0, 0.0)
    assert not a.respec
    assert a.spec.insecure
    assert (bb.state, bb.failures) == (State.FAILED, 1)


def test_kind_follows_the_entry() -> None:
    """A kind the old entry declared is dropped with it (to be detected); a new one applies;
    a detected kind stays when neither entry declares one."""
    b = Board.for_specs(specs("e?kind=embedding,c,d"))
    e, c, d = b.models
    c.kind = ModelKind.COMPLETION  # detected
    b.redeclare(specs("e,c?num_ctx=2048,d?kind=embedding"))
    assert e.kind is None
    assert c.kind == ModelKind.COMPLETION
    assert d.kind == ModelKind.EMBEDDING


def test_status_and_metrics_follow_at_once() -> None:
    """Removed models vanish from /status and /metrics; added ones appear, pending; the
    readiness reason names what is now missing."""
    b = pinned_board("a,b")
    assert model_labels(b) == {"a:latest", "b:latest"}
    b.redeclare(specs("b,new"))
    doc = b.document([])
    assert [m["name"] for m in doc["models"]] == ["b:latest", "new:latest"]
    assert doc["declared"] == 2
    assert doc["ready"] is False
    assert doc["reason"] == "new:latest pending"
    assert model_labels(b) == {"b:latest", "new:latest"}


def test_config_error_is_shown_until_cleared() -> None:
    """A failed reload's message is in /status; it does not change readiness."""
    b = pinned_board("a")
    assert b.document([])["config_error"] is None
    b.config_error = "PRELOADER_MODELS_FILE=/m.txt, line 2: entry 'x?y=1': unknown parameter 'y'"
    doc = b.document([])
    assert doc["config_error"].startswith("PRELOADER_MODELS_FILE=/m.txt, line 2")
    assert doc["ready"] is True


def test_redeclare_to_nothing() -> None:
    """An empty list removes every model; the server alone is then ready."""
    b = pinned_board("a,b")
    result = b.redeclare(())
    assert [m.spec.display for m in result.removed] == ["a:latest", "b:latest"]
    assert b.models == []
    assert b.ready
    assert b.ready_message() == "ollama serve is up; no models are declared"
