"""The metrics report every engine returns: named time series, per-replica series and totals."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

Values = list[float | None]


class _Report(BaseModel):
    # The wire names are the fields' names in camelCase: defined once, here.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict with the wire names."""
        return self.model_dump(by_alias=True, mode="json")


class DeploymentSeries(_Report):
    """A deployment's series, one value (or None: nothing to measure) per timestamp."""

    requests_per_second: Values
    predict_requests_per_second: Values
    success_rate: Values
    client_errors_per_second: Values
    server_errors_per_second: Values
    latency_p50: Values
    latency_p90: Values
    latency_p99: Values
    reward: Values


class ReplicaSeries(_Report):
    """One replica's series: traffic, tail latency, cores in use and resident bytes."""

    requests_per_second: Values
    latency_p99: Values
    cpu: Values
    memory: Values


class MetricsTotals(_Report):
    """Counts over the whole window, and the reward share of its feedback."""

    requests: int
    predict_requests: int
    client_errors: int
    server_errors: int
    feedback: int
    reward: float | None


class MetricsReport(_Report):
    """`Engine.metrics()`: the same document for every engine (docs/internals.md "Metrics")."""

    deployment_id: str
    window: float
    step: float
    timestamps: list[float]
    series: DeploymentSeries
    replicas: dict[str, ReplicaSeries]
    totals: MetricsTotals


class Chart(_Report):
    """One Vega-Lite v5 spec; `id` names the chart (requests, errors, latency, ...)."""

    id: str
    spec: dict[str, Any]


class MetricsCharts(_Report):
    """`GET deployments/<id>/metrics/charts`: the report drawn as charts, with a summary line."""

    deployment_id: str
    window: float
    step: float
    summary: str
    totals: MetricsTotals
    charts: list[Chart]


def _wire(model: type[BaseModel], field: str) -> str:
    alias = model.model_fields[field].alias
    assert alias is not None
    return alias


# Series names on the wire (docs/internals.md "Metrics"); every other module uses these.
REQUESTS_PER_SECOND = _wire(DeploymentSeries, "requests_per_second")
PREDICT_REQUESTS_PER_SECOND = _wire(DeploymentSeries, "predict_requests_per_second")
SUCCESS_RATE = _wire(DeploymentSeries, "success_rate")
CLIENT_ERRORS_PER_SECOND = _wire(DeploymentSeries, "client_errors_per_second")
SERVER_ERRORS_PER_SECOND = _wire(DeploymentSeries, "server_errors_per_second")
LATENCY_P50 = _wire(DeploymentSeries, "latency_p50")
LATENCY_P90 = _wire(DeploymentSeries, "latency_p90")
LATENCY_P99 = _wire(DeploymentSeries, "latency_p99")
REWARD = _wire(DeploymentSeries, "reward")
CPU = _wire(ReplicaSeries, "cpu")
MEMORY = _wire(ReplicaSeries, "memory")

# Totals over the window.
TOTAL_REQUESTS = _wire(MetricsTotals, "requests")
TOTAL_PREDICT_REQUESTS = _wire(MetricsTotals, "predict_requests")
TOTAL_CLIENT_ERRORS = _wire(MetricsTotals, "client_errors")
TOTAL_SERVER_ERRORS = _wire(MetricsTotals, "server_errors")
TOTAL_FEEDBACK = _wire(MetricsTotals, "feedback")
TOTAL_REWARD = _wire(MetricsTotals, "reward")

# In the order of the JSON document.
DEPLOYMENT_SERIES = tuple(_wire(DeploymentSeries, f) for f in DeploymentSeries.model_fields)
REPLICA_SERIES = tuple(_wire(ReplicaSeries, f) for f in ReplicaSeries.model_fields)
# The counted totals (integers); TOTAL_REWARD is a share, or None without feedback.
COUNTED_TOTALS = tuple(
    _wire(MetricsTotals, f)
    for f, info in MetricsTotals.model_fields.items()
    if info.annotation is int
)


def empty_replica_series(points: int) -> dict[str, Values]:
    """A replica's series with `points` gaps each, keyed by wire name."""
    return {name: [None] * points for name in REPLICA_SERIES}
