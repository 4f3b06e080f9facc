"""Per-deployment request counters and latency histograms of the gateway (Prometheus text)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Fine buckets at the low end: a local scikit-learn prediction answers in about a millisecond.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def request_kind(path: str) -> str:
    """'predict', 'feedback' or 'other', from the path inside the deployment."""
    if path.endswith(("/predictions", "/infer")):
        return "predict"
    if path.endswith("/feedback"):
        return "feedback"
    return "other"


class GatewayMetrics:
    """What the gateway saw per deployment, including answers no replica gave (401, 503)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "primehub_gateway_requests",
            "Requests answered by the gateway, by deployment, status code and kind.",
            ["deployment", "code", "kind"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "primehub_gateway_request_duration_seconds",
            "Time from a request's arrival at the gateway to its answer.",
            ["deployment"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Children are looked up once per label set, not on every request.
        self._counters: dict[tuple[str, int, str], Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def observe(self, deployment: str, status: int, kind: str, seconds: float) -> None:
        key = (deployment, status, kind)
        counter = self._counters.get(key)
        if counter is None:
            counter = self.requests.labels(deployment, str(status), kind)
            self._counters[key] = counter
        counter.inc()
        histogram = self._histograms.get(deployment)
        if histogram is None:
            histogram = self.duration.labels(deployment)
            self._histograms[deployment] = histogram
        histogram.observe(seconds)

    def forget(self, known: set[str]) -> None:
        """Drop the series of deployments that are no longer routed (deleted)."""
        for key in [k for k in self._counters if k[0] not in known]:
            self.requests.remove(*(key[0], str(key[1]), key[2]))
            del self._counters[key]
        for deployment in [d for d in self._histograms if d not in known]:
            self.duration.remove(deployment)
            del self._histograms[deployment]

    def render(self) -> bytes:
        return generate_latest(self.registry)
