"""Repeated repairs on the real Ollama: a client's unloads are no capacity conflict."""

from __future__ import annotations

import json
import time

from preloader_harness import Run
from real_harness import RealLauncher, ps_rows

STOPS = 6  # one more than the reload-storm guard's count
GAP = 2.0  # seconds between stops: as the report did (fault spacing, not an assertion)


def forever(run: Run) -> dict[str, str]:
    """`ollama ps` rows as {name: UNTIL}."""
    return {row[0]: row[-1] for row in ps_rows(run)}


def test_six_stops_of_the_only_model_leave_it_pinned_and_ready(real: RealLauncher) -> None:
    """Six `ollama stop`s of the only declared model, 2 s apart: each is repaired, the model
    ends pinned (Forever), `status` says `pinned`, /readyz answers 200; it is never `failed`."""
    chat = real.name("tiny-chat")
    listed = f"{chat}:latest"
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=chat)
    run.wait_all_pinned()
    for _ in range(STOPS):
        stopped = run.ollama("stop", chat)
        assert stopped.returncode == 0, stopped.stderr
        time.sleep(GAP)
    run.wait_for(
        lambda: (
            forever(run) == {listed: "Forever"}
            and run.count_events("model.pinned", model=listed) > STOPS // 2
        ),
        "pinned again after the stops",
    )

    def status_model() -> dict[str, str]:
        doc = json.loads(run.cli("status", "--json").stdout)
        (model,) = doc["models"]
        return {"name": model["name"], "state": model["state"]}

    run.wait_for(lambda: status_model()["state"] == "pinned", "status pinned")
    assert status_model() == {"name": listed, "state": "pinned"}
    assert run.events("model.failed") == []
    code, _, _ = run.health_get("/readyz")
    assert code == 200
    assert forever(run) == {listed: "Forever"}
    assert run.stop() == 0
