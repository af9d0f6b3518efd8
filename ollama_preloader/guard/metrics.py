"""The guard's request metrics, on the supervisor's /metrics registry (Ollama has none: #3144)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ollama_preloader.guard.rewrite import MODEL_PATHS

PREFIX = "ollama_preloader_guard"
# Client input names the models: past this many undeclared names, the rest share one label so a
# client cannot grow the registry without bound.
MAX_UNDECLARED_LABELS = 50
OTHER = "(other)"
NONE = "(none)"
_ENDPOINTS = MODEL_PATHS | {
    "/",
    "/api/tags",
    "/api/ps",
    "/api/pull",
    "/api/push",
    "/api/create",
    "/api/copy",
    "/api/delete",
    "/api/version",
    "/v1/models",
}
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def endpoint_label(path: str) -> str:
    """A bounded label for a path: the API's own paths, `/api/blobs` for every digest."""
    if path in _ENDPOINTS:
        return path
    if path.startswith("/api/blobs/"):
        return "/api/blobs"
    if path.startswith("/v1/models/"):
        return "/v1/models"
    return OTHER


class GuardMetrics:
    """Counters and histograms the proxy updates per request."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self._undeclared: set[str] = set()
        # The children every request updates, looked up once per label set (the labels are
        # bounded): prometheus_client's labels() validates and locks on every call.
        self._counted: dict[tuple[str, str, str], Counter] = {}
        self._timed: dict[str, tuple[Histogram, Histogram]] = {}
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests through the guard, by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight",
            "Requests the guard is forwarding now.",
            registry=registry,
        )
        self.rewrites = Counter(
            f"{PREFIX}_rewrites",
            "Client fields the guard replaced to keep a model pinned, by model and field.",
            ["model", "field"],
            registry=registry,
        )
        self.rejected = Counter(
            f"{PREFIX}_rejected",
            "Requests refused with 400 (PRELOADER_GUARD_OPTIONS=reject), by model and option.",
            ["model", "field"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_seconds",
            "Time from a request's arrival to its last byte, by endpoint.",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.first_byte = Histogram(
            f"{PREFIX}_first_byte_seconds",
            "Time from a request's arrival to the first byte of its answer's body, by endpoint.",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            f"{PREFIX}_generated_tokens",
            "Tokens generated, from the final chunk's eval_count, by model.",
            ["model"],
            registry=registry,
        )
        self.drops = Counter(
            f"{PREFIX}_client_drops",
            "Clients that went away before their answer ended, by model and phase "
            "(before_first_byte, streaming); each cancelled the upstream request.",
            ["model", "phase"],
            registry=registry,
        )

    def count(self, model: str, endpoint: str, status: str) -> None:
        """One request answered (requests_total)."""
        key = (model, endpoint, status)
        child = self._counted.get(key)
        if child is None:
            child = self._counted[key] = self.requests.labels(model, endpoint, status)
        child.inc()

    def timers(self, endpoint: str) -> tuple[Histogram, Histogram]:
        """(latency, first_byte) histograms of one endpoint label."""
        pair = self._timed.get(endpoint)
        if pair is None:
            pair = self._timed[endpoint] = (
                self.latency.labels(endpoint),
                self.first_byte.labels(endpoint),
            )
        return pair

    def model_label(self, model: str | None, declared_name: str | None) -> str:
        if declared_name is not None:
            return declared_name
        if not model:
            return NONE
        if model in self._undeclared or len(self._undeclared) < MAX_UNDECLARED_LABELS:
            self._undeclared.add(model)
            return model
        return OTHER
