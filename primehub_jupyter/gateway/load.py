"""Per-predictor load of the gateway: in-flight requests, counters, and who answered which id."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..core.traffic import LATENCY_BUCKETS, PredictorCounters

# Request ids remembered (deployment, id -> predictor) to join feedback; the oldest go first.
ANSWERED_IDS = 50_000


@dataclass(slots=True)
class PredictorLoad:
    """What one predictor of a deployment is doing now and has done since the gateway started.

    `in_flight` counts requests sent to the predictor and not yet answered (the autoscaler reads
    it). The counts are plain numbers on the request path; `counters()` gives them as the
    contract's PredictorCounters: predictions, errors, latency, joined feedback and, for a
    shadow, the comparisons with the primary's answers.
    """

    in_flight: int = 0
    last_request: float | None = None  # time.monotonic() of the last request sent
    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    feedback: int = 0
    reward_sum: float = 0.0
    successes: int = 0
    compared: int = 0
    differed: int = 0
    shadow_dropped: int = 0  # copies not sent: the shadow queue was full, or it was at zero

    def begin(self) -> float:
        """A request goes to this predictor: count it in flight; returns its start time."""
        self.in_flight += 1
        now = time.monotonic()
        self.last_request = now
        return now

    def end(self) -> None:
        """The request `begin` counted has an answer (or none is coming)."""
        self.in_flight -= 1

    def observe(self, seconds: float, *, error: bool = False) -> None:
        """Count one answered (or failed) prediction that took `seconds`."""
        self.requests += 1
        if error:
            self.errors += 1
        self.latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def joined(self, reward: float | None) -> None:
        """Count one feedback message joined to this predictor's answer."""
        self.feedback += 1
        if reward is not None:
            self.reward_sum += reward
            self.successes += reward > 0

    def counters(self, name: str, shadow: bool) -> PredictorCounters:
        """The counts as the engines report them."""
        return PredictorCounters(
            name=name,
            shadow=shadow,
            requests=self.requests,
            errors=self.errors,
            latency_buckets=list(self.latency),
            feedback=self.feedback,
            reward_sum=self.reward_sum,
            successes=self.successes,
            compared=self.compared,
            differed=self.differed,
        )

    def to_json(self, name: str, shadow: bool, now: float) -> dict[str, Any]:
        """The `/_primehub/load` entry: in flight, seconds since the last request, counters."""
        return {
            "inFlight": self.in_flight,
            # An age, not a time: monotonic clocks of two processes do not compare.
            "lastRequestAt": None if self.last_request is None else now - self.last_request,
            "shadowDropped": self.shadow_dropped,
            "counters": self.counters(name, shadow).to_json(),
        }


class AnsweredIds:
    """Which predictor answered a request id, per deployment, for the most recent ids."""

    def __init__(self, size: int = ANSWERED_IDS) -> None:
        self.size = size
        self._ids: OrderedDict[tuple[str, str], str] = OrderedDict()

    def remember(self, dep_id: str, request_id: str, predictor: str) -> None:
        # Ids are unique per prediction, so insertion order is age order (no move_to_end).
        self._ids[(dep_id, request_id)] = predictor
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)

    def lookup(self, dep_id: str, request_id: str) -> str | None:
        return self._ids.get((dep_id, request_id))


def feedback_reference(body: bytes) -> tuple[str | None, float | None]:
    """The request id a Seldon feedback body refers to (response, else request meta.puid) and
    its reward; (None, None) when the body is no JSON object."""
    if not body or body[:1] != b"{":
        return None, None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    raw = document.get("reward")
    reward = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
    for key in ("response", "request"):
        message = document.get(key)
        meta = message.get("meta") if isinstance(message, dict) else None
        puid = meta.get("puid") if isinstance(meta, dict) else None
        if isinstance(puid, str) and puid:
            return puid, reward
    return None, reward
