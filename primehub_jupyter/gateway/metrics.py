"""Per-deployment and per-predictor request counters and latency histograms (Prometheus text)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .routes import Route

# Fine buckets at the low end: a local scikit-learn prediction answers in about a millisecond.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def request_kind(path: str) -> str:
    """'predict', 'feedback' or 'other', from the path inside the deployment."""
    if path.endswith(("/predictions", "/infer")):
        return "predict"
    if path.endswith("/feedback"):
        return "feedback"
    return "other"


class PredictorCollector:
    """Gauges and counters read from the routes' per-predictor load at each scrape."""

    def __init__(self, routes: Callable[[], Mapping[str, Route]]) -> None:
        self.routes = routes

    def collect(self) -> Iterator[Metric]:
        labels = ["deployment", "predictor"]
        in_flight = GaugeMetricFamily(
            "primehub_gateway_in_flight",
            "Requests sent to a predictor and not answered.",
            labels=labels,
        )
        shadow = CounterMetricFamily(
            "primehub_gateway_shadow",
            "Copies of predictions for a shadow predictor: compared with the primary's answer, "
            "differed from it, or dropped because the shadow queue was full.",
            labels=[*labels, "outcome"],
        )
        feedback = CounterMetricFamily(
            "primehub_gateway_feedback",
            "Feedback messages joined by request id to the predictor that answered.",
            labels=labels,
        )
        reward = CounterMetricFamily(
            "primehub_gateway_feedback_reward",
            "Sum of the rewards of joined feedback.",
            labels=labels,
        )
        for dep_id, route in self.routes().items():
            for predictor in route.predictors:
                load = predictor.load
                names = [dep_id, predictor.name]
                in_flight.add_metric(names, load.in_flight)
                counters = load.counters
                if predictor.shadow:
                    shadow.add_metric([*names, "compared"], counters.compared)
                    shadow.add_metric([*names, "differed"], counters.differed)
                    shadow.add_metric([*names, "dropped"], load.shadow_dropped)
                else:
                    feedback.add_metric(names, counters.feedback)
                    reward.add_metric(names, counters.reward_sum)
        yield from (in_flight, shadow, feedback, reward)


class GatewayMetrics:
    """What the gateway saw per deployment and predictor, including answers no replica gave
    (401, 503: predictor "")."""

    def __init__(self, routes: Callable[[], Mapping[str, Route]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "primehub_gateway_requests",
            "Requests answered by the gateway, by deployment, predictor, status code and kind.",
            ["deployment", "predictor", "code", "kind"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "primehub_gateway_request_duration_seconds",
            "Time from a request's arrival at the gateway to its answer.",
            ["deployment", "predictor"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        if routes is not None:
            self.registry.register(PredictorCollector(routes))  # type: ignore[arg-type]
        # Children are looked up once per label set, not on every request.
        self._counters: dict[tuple[str, str, int, str], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def observe(
        self, deployment: str, status: int, kind: str, seconds: float, predictor: str = ""
    ) -> None:
        key = (deployment, predictor, status, kind)
        counter = self._counters.get(key)
        if counter is None:
            counter = self.requests.labels(deployment, predictor, str(status), kind)
            self._counters[key] = counter
        counter.inc()
        series = (deployment, predictor)
        histogram = self._histograms.get(series)
        if histogram is None:
            histogram = self.duration.labels(deployment, predictor)
            self._histograms[series] = histogram
        histogram.observe(seconds)

    def forget(self, known: Mapping[str, Route]) -> None:
        """Drop the series of deployments no longer routed (deleted) and of their predictors
        no longer in the table (promoted away)."""

        def routed(deployment: str, predictor: str) -> bool:
            route = known.get(deployment)
            return route is not None and (not predictor or route.predictor(predictor) is not None)

        for key in [k for k in self._counters if not routed(k[0], k[1])]:
            self.requests.remove(key[0], key[1], str(key[2]), key[3])
            del self._counters[key]
        for series in [s for s in self._histograms if not routed(*s)]:
            self.duration.remove(*series)
            del self._histograms[series]

    def render(self) -> bytes:
        return generate_latest(self.registry)
