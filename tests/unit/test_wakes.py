"""Which of Ollama's relayed lines wake the reconcile loop (reconcile/wakes.py): a client's
request does, a request of our own does not, and none is lost whatever the order."""

from __future__ import annotations

import asyncio

from ollama_preloader.ollama.api import OwnRequests
from ollama_preloader.reconcile.wakes import COALESCE, ServerWakes


def woken(steps: list[str]) -> list[bool]:
    """Run the steps ('line', 'start', 'ours+' a request of ours sent, 'ours-' one refused)
    and say after each judged burst whether the loop was woken."""

    async def run() -> list[bool]:
        wake, own = asyncio.Event(), OwnRequests()
        wakes = ServerWakes(wake, own)
        seen: list[bool] = []
        for step in steps:
            if step == "ours+":
                own.expected += 1
            elif step == "ours-":
                own.expected -= 1
            elif step == "ready":
                wakes.server_ready()
            else:
                wakes.changed(request=step == "line")
                await asyncio.sleep(COALESCE * 3)
                seen.append(wake.is_set())
                wake.clear()
        return seen

    return asyncio.run(run())


def test_a_clients_access_line_wakes_the_loop() -> None:
    assert woken(["line", "line"]) == [True, True]


def test_the_access_line_of_our_own_request_does_not() -> None:
    assert woken(["ours+", "line", "ours+", "line"]) == [False, False]


def test_start_lines_and_store_writes_always_do() -> None:
    assert woken(["ours+", "start"]) == [True]


def test_a_clients_line_hidden_by_a_request_of_ours_wakes_when_ours_ends() -> None:
    """Our load is in flight when the client's line comes: taken for ours at first, then our
    own line shows there were two, and the loop is woken."""
    assert woken(["ours+", "line", "line", "line"]) == [False, True, True]


def test_a_request_of_ours_lost_with_the_serve_hides_no_later_client() -> None:
    assert woken(["ours+", "ready", "line"]) == [True]
    assert woken(["ours+", "ours-", "line"]) == [True]
