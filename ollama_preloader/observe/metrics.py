"""Prometheus metrics, read from the Board at scrape time (no second copy of the state)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ollama_preloader import __version__
from ollama_preloader.ollama.api import LoadedModel
from ollama_preloader.state.board import Board, State

PREFIX = "ollama_preloader"


class BoardCollector(Collector):
    """Turns the Board (and the undeclared runners) into metric families on every scrape."""

    def __init__(self, board: Board, undeclared: Callable[[], Sequence[LoadedModel]]) -> None:
        self.board = board
        self.undeclared = undeclared

    def collect(self) -> Iterable[Metric]:
        board = self.board
        models = board.models

        info = InfoMetricFamily(f"{PREFIX}", "The supervisor's version.")
        info.add_metric([], {"version": __version__})
        yield info

        up = GaugeMetricFamily(
            f"{PREFIX}_server_up", "1 while `ollama serve` answers requests, 0 otherwise."
        )
        up.add_metric([], 1.0 if board.server_up else 0.0)
        yield up
        restarts = CounterMetricFamily(
            f"{PREFIX}_server_restarts",
            "Times `ollama serve` was restarted after it died.",
        )
        restarts.add_metric([], board.server_restarts)
        yield restarts
        leftovers = GaugeMetricFamily(
            f"{PREFIX}_leftover_runners",
            "`watch` on this host: llama-server processes of the store that no live "
            "`ollama serve` owns (left by an earlier serve; reported, never stopped).",
        )
        leftovers.add_metric([], len(board.leftover_runners))
        yield leftovers

        ready = GaugeMetricFamily(
            f"{PREFIX}_ready", "1 when every declared model is pinned (what /readyz says)."
        )
        ready.add_metric([], 1.0 if board.ready else 0.0)
        yield ready
        declared = GaugeMetricFamily(f"{PREFIX}_declared_models", "Models in the preload list.")
        declared.add_metric([], len(models))
        yield declared
        if board.all_pinned_after is not None:
            after = GaugeMetricFamily(
                f"{PREFIX}_all_pinned_seconds",
                "Seconds from the supervisor's start to the first time every model was pinned.",
                unit="seconds",
            )
            after.add_metric([], board.all_pinned_after)
            yield after
        extra = GaugeMetricFamily(
            f"{PREFIX}_undeclared_models",
            "Models loaded in Ollama that are not in the preload list.",
        )
        extra.add_metric([], len(self.undeclared()))
        yield extra

        state = GaugeMetricFamily(
            f"{PREFIX}_model_state",
            "1 for the state each declared model is in, 0 for the others.",
            labels=["model", "state"],
        )
        pinned = GaugeMetricFamily(
            f"{PREFIX}_model_pinned",
            "1 while the model is loaded with keep_alive forever.",
            labels=["model"],
        )
        memory = GaugeMetricFamily(
            f"{PREFIX}_model_memory_bytes",
            "Memory of the loaded model (`size` in /api/ps); absent when not loaded.",
            labels=["model"],
        )
        vram = GaugeMetricFamily(
            f"{PREFIX}_model_vram_bytes",
            "GPU memory of the loaded model (`size_vram` in /api/ps); absent when not loaded.",
            labels=["model"],
        )
        context = GaugeMetricFamily(
            f"{PREFIX}_model_context_length",
            "Context length of the loaded model; absent when not loaded.",
            labels=["model"],
        )
        counters = {
            "loads": CounterMetricFamily(
                f"{PREFIX}_model_loads",
                "Loads (and re-pins) of the model by the supervisor.",
                labels=["model"],
            ),
            "reloads": CounterMetricFamily(
                f"{PREFIX}_model_reloads",
                "Loads after the model was evicted or stopped.",
                labels=["model"],
            ),
            "repins": CounterMetricFamily(
                f"{PREFIX}_model_repins",
                "Re-pins after a client changed the model's keep_alive or reloaded it.",
                labels=["model"],
            ),
            "refreshes": CounterMetricFamily(
                f"{PREFIX}_model_refreshes",
                "Periodic re-requests of a pinned model (PRELOADER_REFRESH_INTERVAL).",
                labels=["model"],
            ),
            "pull_bytes": CounterMetricFamily(
                f"{PREFIX}_model_pull_bytes",
                "Bytes downloaded by pulls of the model.",
                labels=["model"],
            ),
            "pull_failures": CounterMetricFamily(
                f"{PREFIX}_model_pull_failures",
                "Failed pull attempts, retried ones included.",
                labels=["model"],
            ),
            "context_drifts": CounterMetricFamily(
                f"{PREFIX}_model_context_drifts",
                "Times a client reloaded the model with another context length (num_ctx).",
                labels=["model"],
            ),
        }
        durations = HistogramMetricFamily(
            f"{PREFIX}_model_load_seconds",
            "How long the supervisor's loads of the model took.",
            labels=["model"],
            unit="seconds",
        )
        probes = HistogramMetricFamily(
            f"{PREFIX}_model_probe_seconds",
            "How long each probe of the model (one real request) waited for its answer.",
            labels=["model"],
            unit="seconds",
        )
        wedges = CounterMetricFamily(
            f"{PREFIX}_model_wedges",
            "Times the model was listed pinned but did not answer a request (wedged).",
            labels=["model"],
        )
        repairs = CounterMetricFamily(
            f"{PREFIX}_model_wedge_repairs",
            "Repairs of a wedged model, by kind (kill-runner, restart-serve, unload-repin, none).",
            labels=["model", "repair"],
        )
        for m in models:
            name = m.spec.display
            wedges.add_metric([name], m.wedges)
            for repair, count in sorted(m.wedge_repairs.items()):
                repairs.add_metric([name, repair], count)
            probe = m.probe_durations
            probe_buckets = [(_le(bound), float(n)) for bound, n in probe.cumulative()]
            probe_buckets.append(("+Inf", float(probe.count)))
            probes.add_metric([name], probe_buckets, sum_value=probe.total)
            for value in State:
                state.add_metric([name, value.value], 1.0 if m.state == value else 0.0)
            pinned.add_metric([name], 1.0 if m.state == State.PINNED else 0.0)
            if m.size is not None:
                memory.add_metric([name], m.size)
                vram.add_metric([name], m.size_vram or 0)
                if m.context_length is not None:
                    context.add_metric([name], m.context_length)
            for attr, family in counters.items():
                family.add_metric([name], getattr(m, attr))
            hist = m.load_durations
            buckets = [(_le(bound), float(n)) for bound, n in hist.cumulative()]
            buckets.append(("+Inf", float(hist.count)))
            durations.add_metric([name], buckets, sum_value=hist.total)
        yield from (state, pinned, memory, vram, context, *counters.values(), durations)
        yield from (probes, wedges, repairs)
        yield from _update_metrics(board)


def _update_metrics(board: Board) -> Iterable[Metric]:
    """Updates (PRELOADER_UPDATE, `update`): what is available, checks and swaps by result,
    and the memory an old runner left by a pull done by hand still holds."""
    available = GaugeMetricFamily(
        f"{PREFIX}_model_update_available",
        "1 when the registry serves another version of the model than the one on disk.",
        labels=["model"],
    )
    stale = GaugeMetricFamily(
        f"{PREFIX}_model_stale_runner_bytes",
        "Memory of an older download of the model still loaded beside the new copy.",
        labels=["model"],
    )
    for m in board.models:
        available.add_metric([m.spec.display], 1.0 if m.update.state == "available" else 0.0)
        stale.add_metric([m.spec.display], m.stale_runner.size if m.stale_runner else 0)
    checks = CounterMetricFamily(
        f"{PREFIX}_update_checks", "Update checks of a model, by result.", labels=["result"]
    )
    for result in ("current", "available", "local", "failed"):
        checks.add_metric([result], board.update_checks.get(result, 0))
    updates = CounterMetricFamily(
        f"{PREFIX}_updates", "Updates applied (swaps), by result.", labels=["result"]
    )
    for result in ("applied", "failed"):
        updates.add_metric([result], board.update_results.get(result, 0))
    yield from (available, stale, checks, updates)


def _le(bound: float) -> str:
    return repr(float(bound))


def build_registry(
    board: Board, undeclared: Callable[[], Sequence[LoadedModel]]
) -> CollectorRegistry:
    """A registry of its own: the supervisor's metrics plus its process (CPU, memory, fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BoardCollector(board, undeclared))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The exposition body and its content type; OpenMetrics when the scraper asks for it."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
