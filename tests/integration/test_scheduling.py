"""How pulls and loads are scheduled on a cold start: what the benchmark's ideal assumes."""

from __future__ import annotations

from fake_catalogs import model, write_catalog
from preloader_harness import Launcher

# The first model is on disk and loads slowly; the second must be pulled, quickly.
CATALOG = {
    "slow-load:latest": model(size=2.0, load_seconds=1.5),
    "quick-pull:latest": model(size=0.5, pull_seconds=0.3, load_seconds=0.1),
}


def test_pull_overlaps_a_load_and_its_model_loads_next(launcher: Launcher) -> None:
    """A missing model is pulled while a present one loads, then loaded without waiting a
    watch interval (120 s here: the wait below gives up at 60 s)."""
    env = launcher.env(
        FAKE_OLLAMA_CATALOG=write_catalog(launcher.tmp / "catalog.json", CATALOG),
        OLLAMA_PRELOAD_MODELS="slow-load,quick-pull",
        FAKE_OLLAMA_PRESENT="slow-load",
        PRELOADER_WATCH_INTERVAL="120",
    )
    run = launcher.start(env=env)
    run.wait_all_pinned()  # gives up after 60 s: only a wake-up, not the interval, gets here
    run.wait_for(lambda: run.fake_events("load")[1:], "both loads in the fake's log")

    pull = next(r for r in run.requests("/api/pull") if r["body"]["model"] == "quick-pull")
    first_load = run.fake_events("load")[0]
    assert first_load["model"] == "slow-load:latest"
    # The pull started before the first load was done (the log stamps requests at their end).
    assert pull["t"] - pull["duration"] < first_load["t"]
    assert [e["model"] for e in run.fake_events("load")] == [
        "slow-load:latest",
        "quick-pull:latest",
    ]
    assert run.stop() == 0
