"""When the reconcile loop looks at /api/ps next if nothing wakes it (reconcile/plan.py)."""

from __future__ import annotations

from ollama_preloader.config.modelspec import parse_model_list
from ollama_preloader.reconcile.plan import next_look
from ollama_preloader.state.board import Board, State


def settled(raw: str, now: float = 100.0) -> Board:
    b = Board.for_specs(parse_model_list(raw).specs)
    for m in b.models:
        m.state, m.last_load_at = State.PINNED, now
    return b


def look(b: Board, now: float = 100.0, refresh: float = 300.0) -> float:
    return next_look(
        b.models, monotonic_now=now, interval=1.0, settled_interval=5.0, refresh_interval=refresh
    )


def test_all_pinned_waits_the_settled_interval() -> None:
    assert look(settled("a,b,c")) == 5.0


def test_anything_unsettled_keeps_the_short_interval() -> None:
    """Loading, failed and backing off, followed across a client's reload or an undeclared
    start, changed by a reload: the looks that follow judge it."""
    changes: tuple[dict[str, object], ...] = (
        {"state": State.LOADING},
        {"state": State.FAILED, "retry_at": 900.0},
        {"state": State.EVICTED},
        {"client_reload": True},
        {"undeclared_watch": (frozenset(), 105.0)},
        {"respec": True},
    )
    for change in changes:
        b = settled("a,b")
        for name, value in change.items():
            setattr(b.models[1], name, value)
        assert look(b) == 1.0, change


def test_a_refresh_or_update_retry_due_sooner_shortens_the_wait() -> None:
    b = settled("a,b")
    b.models[0].last_load_at = 100.0 - 298.0  # its refresh falls due in 2 s
    assert look(b) == 2.0
    b = settled("a")
    b.models[0].update_retry_at = 103.0
    assert look(b) == 3.0


def test_an_overdue_refresh_never_spins() -> None:
    b = settled("a")
    b.models[0].last_load_at = -1000.0
    assert look(b) == 1.0


def test_a_loaded_model_with_a_finite_keep_alive_has_no_refresh() -> None:
    b = settled("a")
    b.models[0].state, b.models[0].last_load_at = State.LOADED, -1000.0
    assert look(b) == 5.0
