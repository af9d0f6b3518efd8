"""The reconcile plan: what to do for each declared model given what Ollama reports."""

from datetime import UTC, datetime, timedelta

from ollama_preloader.config.modelspec import parse_model_list
from ollama_preloader.ollama.api import LoadedModel
from ollama_preloader.reconcile.plan import ActionKind, plan
from ollama_preloader.state.board import Board, State

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FOREVER = NOW + timedelta(days=106751)


def board(raw: str) -> Board:
    b = Board.for_specs(parse_model_list(raw).specs)
    for m in b.models:
        m.present = True
    return b


def loaded(name: str, expires: datetime | None = FOREVER) -> LoadedModel:
    return LoadedModel(name, "d" * 64, 1, 1, expires, 4096)


def kinds(
    b: Board, ps: list[LoadedModel], policy: str = "if-missing", mono: float = 0.0
) -> list[tuple[ActionKind, str, str]]:
    actions = plan(b.models, ps, pull_policy=policy, now=NOW, monotonic_now=mono)
    return [(a.kind, a.key.split("/")[-1], a.reason) for a in actions]


def test_cold_start_pulls_missing_and_loads_present_in_priority_order() -> None:
    """Missing models are pulled, present ones loaded, highest priority first."""
    b = board("a,b,c")
    b.models[0].present = False
    assert kinds(b, []) == [
        (ActionKind.PULL, "a:latest", "not on disk"),
        (ActionKind.LOAD, "b:latest", "preload"),
        (ActionKind.LOAD, "c:latest", "preload"),
    ]


def test_pinned_models_are_left_alone() -> None:
    """A model listed with a far-future expiry needs nothing."""
    b = board("a,b")
    assert kinds(b, [loaded("a:latest"), loaded("b:latest")]) == []


def test_unpinned_model_is_repinned() -> None:
    """A client's keep_alive of 5m un-pins the model: send the load request again."""
    b = board("a")
    assert kinds(b, [loaded("a:latest", NOW + timedelta(minutes=5))]) == [
        (ActionKind.REPIN, "a:latest", "unpinned")
    ]


def test_evicted_model_is_loaded_again() -> None:
    """A model that was loaded before and is now absent from /api/ps is reloaded."""
    b = board("a")
    b.models[0].ever_loaded = True
    b.models[0].state = State.EVICTED
    assert kinds(b, []) == [(ActionKind.LOAD, "a:latest", "evicted")]


def test_policy_never_reports_missing() -> None:
    """Air-gapped hosts: a missing model is reported, never pulled."""
    b = board("a")
    b.models[0].present = False
    assert kinds(b, [], policy="never") == [(ActionKind.MISSING, "a:latest", "not on disk")]


def test_policy_always_pulls_present_models_once() -> None:
    """`always` pulls even when present, but only once per run."""
    b = board("a")
    assert kinds(b, [], policy="always") == [(ActionKind.PULL, "a:latest", "pull policy always")]
    b.models[0].pulled = True
    assert kinds(b, [], policy="always") == [(ActionKind.LOAD, "a:latest", "preload")]


def test_backoff_and_in_progress_models_are_skipped() -> None:
    """Failed models wait for their retry time; pulls and loads in progress are not repeated."""
    b = board("a,b,c")
    b.models[0].state, b.models[0].retry_at = State.FAILED, 100.0
    b.models[1].state = State.PULLING
    b.models[2].state = State.LOADING
    assert kinds(b, [], mono=50.0) == []
    assert kinds(b, [], mono=150.0) == [(ActionKind.LOAD, "a:latest", "preload")]


def test_unknown_disk_state_waits_for_tags() -> None:
    """Until /api/tags has been read, nothing is pulled or loaded."""
    b = board("a")
    b.models[0].present = None
    assert kinds(b, []) == []


def test_finite_keep_alive_is_loaded_once() -> None:
    """keep_alive=30m means preload once and let it expire, not pin."""
    b = board("a?keep_alive=30m")
    assert kinds(b, []) == [(ActionKind.LOAD, "a:latest", "preload")]
    b.models[0].ever_loaded = True
    assert kinds(b, []) == []
    assert kinds(b, [loaded("a:latest", NOW + timedelta(minutes=3))]) == []


def test_names_match_across_spellings() -> None:
    """/api/ps prints `model:tag`; the declared `library/a` is the same model."""
    b = board("library/a")
    assert kinds(b, [loaded("a:latest")]) == []


def test_same_name_twice_prefers_the_pinned_runner() -> None:
    """After a re-pull the name can be listed twice; the pinned runner counts."""
    b = board("a")
    ps = [loaded("a:latest", NOW + timedelta(minutes=5)), loaded("a:latest")]
    assert kinds(b, ps) == []


def test_changed_entry_is_loaded_again_though_it_is_pinned() -> None:
    """A live reload changed its options (respec): the pinned runner has the old ones."""
    b = board("a,b")
    for m in b.models:
        m.state, m.ever_loaded = State.PINNED, True
    b.redeclare(parse_model_list("a?num_ctx=8192,b").specs)
    assert b.models[0].respec
    assert kinds(b, [loaded("a:latest"), loaded("b:latest")]) == [
        (ActionKind.LOAD, "a:latest", "changed")
    ]


def test_changed_to_a_finite_keep_alive_is_loaded_once_even_if_gone() -> None:
    """Pinned, evicted, then changed to keep_alive=1h: one load with the new request; once it
    is loaded the mark is cleared and a finite keep_alive may expire."""
    b = board("a")
    b.models[0].state, b.models[0].ever_loaded = State.EVICTED, True
    b.redeclare(parse_model_list("a?keep_alive=1h").specs)
    assert kinds(b, []) == [(ActionKind.LOAD, "a:latest", "changed")]
    b.models[0].respec = False
    assert kinds(b, []) == []


def test_changed_entry_backing_off_waits() -> None:
    """A changed entry still respects a retry time set after the change."""
    b = board("a")
    b.redeclare(parse_model_list("a?num_ctx=8192").specs)
    b.models[0].retry_at = 10.0
    assert kinds(b, [loaded("a:latest")], mono=1.0) == []


def test_a_copy_is_served_by_the_runner_listed_under_its_original() -> None:
    """Issue 26 item 5: `ollama cp a b`, b declared: same manifest digest, so the runner
    listed as `a` serves it and nothing is loaded (its model file is not known yet)."""
    b = board("b")
    b.models[0].digest = "d" * 64
    assert kinds(b, [loaded("a:latest")]) == []
    b.models[0].digest = "e" * 64  # another model: loaded on its own
    assert kinds(b, [loaded("a:latest")]) == [(ActionKind.LOAD, "b:latest", "preload")]


def test_a_model_waiting_for_room_is_still_pulled() -> None:
    """Issue 26 item 7: given way for capacity and not on disk: pulled now, loaded later; a
    model backing off after another failure is left alone."""
    b = board("a,b")
    for m, reason in zip(b.models, ["capacity: no room", "pull failed"], strict=True):
        m.present, m.state, m.reason, m.retry_at = False, State.FAILED, reason, 100.0
    assert kinds(b, [], mono=1.0) == [(ActionKind.PULL, "a:latest", "not on disk")]
    assert kinds(b, [], policy="never", mono=1.0) == []
    b.models[0].present = True  # pulled: its load still waits for its retry
    assert kinds(b, [], mono=1.0) == []
