"""Per-predictor counters an engine reports for comparing predictors (canary, A/B, shadow)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Upper bounds (seconds) of the latency histogram buckets; the last one catches the rest.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    math.inf,
)


class PredictorCounters(BaseModel):
    """Counts since the predictor started serving this deployment (engines add them up)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str
    shadow: bool = False
    requests: int = 0
    errors: int = Field(0, description="Answers with a 5xx status or no answer at all.")
    latency_buckets: list[int] = Field(
        default_factory=lambda: [0] * len(LATENCY_BUCKETS),
        description="Requests per latency bucket (not cumulative); bounds in LATENCY_BUCKETS.",
    )
    feedback: int = Field(0, description="Feedback messages joined to this predictor's answers.")
    reward_sum: float = 0.0
    successes: int = Field(0, description="Feedback messages with a reward above 0.")
    compared: int = Field(0, description="Shadow only: answers compared with the primary's.")
    differed: int = Field(0, description="Shadow only: compared answers unlike the primary's.")

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict with the wire names."""
        return self.model_dump(by_alias=True, mode="json")

    def observe(self, seconds: float, *, error: bool = False) -> None:
        """Count one answered (or failed) request that took `seconds`."""
        self.requests += 1
        self.errors += int(error)
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[index] += 1
                break
