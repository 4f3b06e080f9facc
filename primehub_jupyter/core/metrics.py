"""The metrics report every engine returns: named time series, per-replica series and totals."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Series names on the wire (docs/internals.md "Metrics"); every other module uses these.
REQUESTS_PER_SECOND = "requestsPerSecond"
PREDICT_REQUESTS_PER_SECOND = "predictRequestsPerSecond"
SUCCESS_RATE = "successRate"
CLIENT_ERRORS_PER_SECOND = "clientErrorsPerSecond"
SERVER_ERRORS_PER_SECOND = "serverErrorsPerSecond"
LATENCY_P50 = "latencyP50"
LATENCY_P90 = "latencyP90"
LATENCY_P99 = "latencyP99"
REWARD = "reward"
CPU = "cpu"
MEMORY = "memory"

# Totals over the window.
TOTAL_REQUESTS = "requests"
TOTAL_PREDICT_REQUESTS = "predictRequests"
TOTAL_CLIENT_ERRORS = "clientErrors"
TOTAL_SERVER_ERRORS = "serverErrors"
TOTAL_FEEDBACK = "feedback"
TOTAL_REWARD = "reward"

# In the order of the JSON document.
DEPLOYMENT_SERIES = (
    REQUESTS_PER_SECOND,
    PREDICT_REQUESTS_PER_SECOND,
    SUCCESS_RATE,
    CLIENT_ERRORS_PER_SECOND,
    SERVER_ERRORS_PER_SECOND,
    LATENCY_P50,
    LATENCY_P90,
    LATENCY_P99,
    REWARD,
)
REPLICA_SERIES = (REQUESTS_PER_SECOND, LATENCY_P99, CPU, MEMORY)
# The counted totals (integers); TOTAL_REWARD is a share, or None without feedback.
COUNTED_TOTALS = (
    TOTAL_REQUESTS,
    TOTAL_PREDICT_REQUESTS,
    TOTAL_CLIENT_ERRORS,
    TOTAL_SERVER_ERRORS,
    TOTAL_FEEDBACK,
)

Values = list[float | None]


class _Report(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict with the wire names."""
        return self.model_dump(by_alias=True, mode="json")


class DeploymentSeries(_Report):
    """A deployment's series, one value (or None: nothing to measure) per timestamp."""

    requests_per_second: Values = Field(alias=REQUESTS_PER_SECOND)
    predict_requests_per_second: Values = Field(alias=PREDICT_REQUESTS_PER_SECOND)
    success_rate: Values = Field(alias=SUCCESS_RATE)
    client_errors_per_second: Values = Field(alias=CLIENT_ERRORS_PER_SECOND)
    server_errors_per_second: Values = Field(alias=SERVER_ERRORS_PER_SECOND)
    latency_p50: Values = Field(alias=LATENCY_P50)
    latency_p90: Values = Field(alias=LATENCY_P90)
    latency_p99: Values = Field(alias=LATENCY_P99)
    reward: Values = Field(alias=REWARD)


class ReplicaSeries(_Report):
    """One replica's series: traffic, tail latency, cores in use and resident bytes."""

    requests_per_second: Values = Field(alias=REQUESTS_PER_SECOND)
    latency_p99: Values = Field(alias=LATENCY_P99)
    cpu: Values = Field(alias=CPU)
    memory: Values = Field(alias=MEMORY)


class MetricsTotals(_Report):
    """Counts over the whole window, and the reward share of its feedback."""

    requests: int = Field(alias=TOTAL_REQUESTS)
    predict_requests: int = Field(alias=TOTAL_PREDICT_REQUESTS)
    client_errors: int = Field(alias=TOTAL_CLIENT_ERRORS)
    server_errors: int = Field(alias=TOTAL_SERVER_ERRORS)
    feedback: int = Field(alias=TOTAL_FEEDBACK)
    reward: float | None = Field(alias=TOTAL_REWARD)


class MetricsReport(_Report):
    """`Engine.metrics()`: the same document for every engine (docs/internals.md "Metrics")."""

    deployment_id: str = Field(alias="deploymentId")
    window: float
    step: float
    timestamps: list[float]
    series: DeploymentSeries
    replicas: dict[str, ReplicaSeries]
    totals: MetricsTotals


def empty_replica_series(points: int) -> dict[str, Values]:
    """A replica's series with `points` gaps each, keyed by wire name."""
    return {name: [None] * points for name in REPLICA_SERIES}
