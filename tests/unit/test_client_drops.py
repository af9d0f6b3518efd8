"""ClientDrops (state/traffic.py): how the guard tells the probe which models a client dropped."""

from __future__ import annotations

from ollama_preloader.state.board import Board
from ollama_preloader.state.traffic import ClientDrops


async def test_a_noted_drop_wakes_the_waiter_and_is_taken_once() -> None:
    drops = ClientDrops()
    assert not await drops.wait(0.01)
    drops.note("tiny-chat:latest")
    drops.note("tiny-chat:latest")
    drops.note("embed:latest")
    assert await drops.wait(60)
    assert drops.take() == {"tiny-chat:latest", "embed:latest"}
    assert drops.take() == set()
    assert not await drops.wait(0.01)


def test_every_board_has_its_own_drops() -> None:
    one, two = Board(), Board()
    one.drops.note("tiny-chat:latest")
    assert two.drops.take() == set()
    assert one.drops.take() == {"tiny-chat:latest"}
