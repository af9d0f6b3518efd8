"""What `status`, /status, /metrics and the summary line make of the state: pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ollama_preloader.config.modelspec import parse_entry
from ollama_preloader.observe.metrics import build_registry
from ollama_preloader.observe.statustable import render, rows
from ollama_preloader.observe.summary import Line, describe
from ollama_preloader.ollama.api import LoadedModel
from ollama_preloader.ollama.kinds import ModelKind
from ollama_preloader.ollama.psformat import human_bytes, processor, until
from ollama_preloader.state.board import Board, State

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 KB"),
        (4_700_000_000, "4.7 GB"),
        (2_000_000_000, "2 GB"),
        (14_300_000_000, "14 GB"),
        (274_302_450, "274 MB"),
        (1_500_000_000_000, "1.5 TB"),
    ],
)
def test_human_bytes_is_ollamas(size: int, text: str) -> None:
    """Decimal units, one decimal below 10 unless whole, as format.HumanBytes."""
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    ("size", "vram", "text"),
    [
        (100, 0, "100% CPU"),
        (100, 100, "100% GPU"),
        (100, 52, "48%/52% CPU/GPU"),
        (100, 101, "Unknown"),
        (0, 5, "Unknown"),
    ],
)
def test_processor_is_ollamas(size: int, vram: int, text: str) -> None:
    """The CPU/GPU column of `ollama ps` (CPU share first)."""
    assert processor(size, vram) == text


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=365 * 292), "Forever"),
        (timedelta(minutes=4, seconds=59), "4 minutes from now"),
        (timedelta(seconds=30), "30 seconds from now"),
        (timedelta(hours=1, minutes=10), "About an hour from now"),
        (timedelta(hours=30), "30 hours from now"),
        (timedelta(days=5), "5 days from now"),
        (timedelta(seconds=-1), "Stopping..."),
    ],
)
def test_until_is_ollamas(delta: timedelta, text: str) -> None:
    """UNTIL: Forever beyond 20 years, Stopping... once past, else a human duration."""
    assert until(NOW + delta, NOW) == text
    assert until(None, NOW) == "Never"


def board() -> Board:
    b = Board.for_specs(
        (
            parse_entry("llama3.2", 0),
            parse_entry("devstral", 1),
            parse_entry("no-such:7b", 2),
        )
    )
    llama, devstral, missing = b.models
    llama.state, llama.kind = State.PINNED, ModelKind.COMPLETION
    llama.size, llama.size_vram, llama.context_length = 3_100_000_000, 3_100_000_000, 4096
    llama.expires_at = datetime.now(UTC) + timedelta(days=365 * 200)
    llama.loads = 2
    llama.reloads = 1
    llama.load_durations.observe(0.3)
    llama.load_durations.observe(7.0)
    devstral.state, devstral.pull_completed, devstral.pull_total = State.PULLING, 42, 100
    missing.fail("not found in the registry", retry_in=600)
    b.server_up = True
    b.observed_restarts = b.server_restarts
    return b


def undeclared() -> list[LoadedModel]:
    """A model a client loaded with the default keep_alive, half a minute ago."""
    return [
        LoadedModel(
            name="qwen2.5-coder:1.5b-base",
            digest="abc",
            size=1_200_000_000,
            size_vram=600_000_000,
            expires_at=datetime.now(UTC) + timedelta(minutes=4, seconds=30),
            context_length=4096,
        )
    ]


def test_status_document_and_table() -> None:
    """One row per declared model in order, then undeclared ones; the last line says why."""
    doc = board().document(undeclared())
    assert doc["ready"] is False
    assert doc["reason"] == (
        "devstral:latest pulling 42%; no-such:7b failed: not found in the registry"
    )
    assert [r[:4] for r in rows(doc)] == [
        ["llama3.2:latest", "completion", "pinned", "Forever"],
        ["devstral:latest", "-", "pulling 42%", "-"],
        ["no-such:7b", "-", "failed", "-"],
        ["qwen2.5-coder:1.5b-base", "-", "not declared", "4 minutes from now"],
    ]
    assert rows(doc)[0][4:7] == ["3.1 GB", "100% GPU", "4096"]
    assert rows(doc)[3][4:7] == ["1.2 GB", "50%/50% CPU/GPU", "4096"]
    assert rows(doc)[2][7] == "not found in the registry"
    text = render(doc)
    header = text.splitlines()[0]
    assert header.split() == [
        "NAME",
        "KIND",
        "STATE",
        "UNTIL",
        "SIZE",
        "PROCESSOR",
        "CONTEXT",
        "REASON",
        "UPDATE",
    ]
    assert text.endswith("\n\nnot ready: " + doc["reason"] + "\n")


def test_ready_only_after_a_look_since_the_last_restart() -> None:
    """After `ollama serve` restarts, pinned states are stale until /api/ps is read again."""
    b = board()
    b.models = b.models[:1]
    assert b.ready
    b.server_restarts += 1
    assert not b.ready
    assert "checking which models are loaded" in str(b.not_ready_reason())
    b.observed_restarts = b.server_restarts
    assert b.ready
    assert render(b.document([])).endswith(
        "\n\nready: all 1 declared models are loaded and pinned\n"
    )


def test_metrics_read_the_board_at_scrape_time() -> None:
    """Gauges, counters and the histogram come from the Board as it is when scraped."""
    b = board()
    registry = build_registry(b, undeclared)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    llama = (("model", "llama3.2:latest"),)
    assert samples[("ollama_preloader_model_loads_total", llama)] == 2
    assert samples[("ollama_preloader_model_reloads_total", llama)] == 1
    assert samples[("ollama_preloader_model_load_seconds_count", llama)] == 2
    assert samples[("ollama_preloader_model_load_seconds_sum", llama)] == pytest.approx(7.3)
    le = (("le", "0.5"), ("model", "llama3.2:latest"))
    assert samples[("ollama_preloader_model_load_seconds_bucket", le)] == 1
    le = (("le", "10.0"), ("model", "llama3.2:latest"))
    assert samples[("ollama_preloader_model_load_seconds_bucket", le)] == 2
    assert samples[("ollama_preloader_model_vram_bytes", llama)] == 3_100_000_000
    state = (("model", "devstral:latest"), ("state", "pulling"))
    assert samples[("ollama_preloader_model_state", state)] == 1
    assert ("ollama_preloader_model_memory_bytes", (("model", "devstral:latest"),)) not in samples
    assert samples[("ollama_preloader_undeclared_models", ())] == 1
    assert samples[("ollama_preloader_ready", ())] == 0
    # Scraped again after a change: the new value, no second copy of the state to update.
    b.models[0].reloads = 5
    again = generate_latest(registry).decode()
    assert 'ollama_preloader_model_reloads_total{model="llama3.2:latest"} 5.0' in again


def test_summary_counts_kinds_pulls_and_bytes() -> None:
    """Known sizes are added up; models still to pull are counted as unknown, not guessed."""
    lines = [
        Line("llama3.2:latest", "completion", 2_000_000_000, "load"),
        Line("nomic-embed-text:latest", None, None, "pull"),
        Line("all-minilm:latest", "embedding", None, "pull"),
    ]
    message, fields = describe(lines, "if-missing")
    assert fields == {
        "models": 3,
        "completion": 1,
        "embedding": 1,
        "unknown_kind": 1,
        "pull": 2,
        "known_bytes": 2_000_000_000,
        "unknown_sizes": 2,
        "to_pull": "nomic-embed-text:latest,all-minilm:latest",
    }
    assert message.startswith("Plan: 3 models (1 completion, 1 unknown kind, 1 embedding)")
    assert "total 2 GB on disk + 2 models of unknown size" in message
    message, fields = describe([Line("x:latest", "completion", 5, "missing")], "never")
    assert "missing and not pulled (PRELOADER_PULL_POLICY=never): x:latest" in message
    assert fields["total_bytes"] == 5
