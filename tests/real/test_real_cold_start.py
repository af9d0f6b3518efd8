"""Scenario 1 on the real Ollama: a cold start pins a store's model and two pulled ones."""

from __future__ import annotations

from real_harness import RealLauncher


def test_cold_start_pins_stored_and_pulled_models(real: RealLauncher) -> None:
    """One model on disk, two pulled from the registry (one embedding): all three Forever."""
    chat, chat2, embed = real.name("tiny-chat"), real.name("tiny-chat2"), real.name("tiny-embed")
    real.seed_store("tiny-chat")
    run = real.start(OLLAMA_PRELOAD_MODELS=f"{chat},{chat2},{embed}")
    run.wait_all_pinned()

    pulled = {e["model"] for e in run.events("model.pull.complete")}
    assert pulled == {f"{chat2}:latest", f"{embed}:latest"}
    # The real server streams no line for a blob fetched within its first 60 ms tick, so the
    # figures are the stored sizes: tiny-chat2 is 4.4 MB, tiny-embed 753 KB (the kit's README).
    sizes = {e["model"]: e["bytes"] for e in run.events("model.pull.complete")}
    assert 4_000_000 < sizes[f"{chat2}:latest"] < 5_000_000, sizes
    assert 700_000 < sizes[f"{embed}:latest"] < 800_000, sizes
    kinds = {e["model"]: e["kind"] for e in run.events("model.kind")}
    assert sorted(kinds.values()) == ["completion", "completion", "embedding"]

    ps = run.ollama("ps")
    assert ps.returncode == 0, ps.stderr
    rows = [line for line in ps.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 3, ps.stdout
    assert all(row.rstrip().endswith("Forever") for row in rows), ps.stdout
    # Ollama's own access log (relayed by the supervisor) shows how each model was loaded.
    access = [line for line in run.lines if "[GIN]" in line]
    assert any('"/api/embed"' in line for line in access), "\n".join(access)
    assert run.stop() == 0
