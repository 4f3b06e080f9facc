"""Counters from Prometheus text and the metrics report computed from their snapshots.

Both engines use this: the local engine scrapes its gateway and replicas, the Kubernetes
engine scrapes pods when no Prometheus keeps history for it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from ..core.metrics import (
    CLIENT_ERRORS_PER_SECOND,
    COUNTED_TOTALS,
    CPU,
    DEPLOYMENT_SERIES,
    LATENCY_P50,
    LATENCY_P90,
    LATENCY_P99,
    MEMORY,
    PREDICT_REQUESTS_PER_SECOND,
    REQUESTS_PER_SECOND,
    REWARD,
    SERVER_ERRORS_PER_SECOND,
    SUCCESS_RATE,
    TOTAL_CLIENT_ERRORS,
    TOTAL_FEEDBACK,
    TOTAL_PREDICT_REQUESTS,
    TOTAL_REQUESTS,
    TOTAL_REWARD,
    TOTAL_SERVER_ERRORS,
    DeploymentSeries,
    MetricsReport,
    MetricsTotals,
    ReplicaSeries,
    Values,
    empty_replica_series,
)

Counters = dict[str, float]

# Model-server metric names (Seldon-compatible, see docs/internals.md "Metrics").
SERVER_REQUESTS = "seldon_api_executor_server_requests_seconds"
FEEDBACK_TOTAL = "seldon_api_model_feedback_total"
FEEDBACK_REWARD = "seldon_api_model_feedback_reward_total"


@dataclass
class ReplicaSample:
    """Cumulative values of one replica at one scrape."""

    counters: Counters = field(default_factory=dict)  # requests, bucket:<le>, feedback, reward
    cpu_seconds: float | None = None
    memory: float | None = None


@dataclass
class Snapshot:
    """Cumulative values of one deployment at one scrape (wall-clock seconds)."""

    time: float
    gateway: Counters = field(default_factory=dict)  # "<code>|<kind>" and "bucket:<le>"
    replicas: dict[str, ReplicaSample] = field(default_factory=dict)


def parse_replica(text: str) -> Counters:
    """A replica's request count, latency buckets and feedback, summed over label sets."""
    counters: Counters = {}

    def add(key: str, value: float) -> None:
        counters[key] = counters.get(key, 0.0) + value

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SERVER_REQUESTS + "_count":
                add("requests", sample.value)
            elif sample.name == SERVER_REQUESTS + "_bucket":
                add("bucket:" + sample.labels["le"], sample.value)
            elif sample.name == FEEDBACK_TOTAL:
                add("feedback", sample.value)
            elif sample.name == FEEDBACK_REWARD:
                add("reward", sample.value)
    return counters


def _delta(current: float | None, previous: float | None) -> float | None:
    """Increase of a counter between two scrapes; a restart (a smaller value) starts from 0."""
    if current is None or previous is None:
        return None
    return current - previous if current >= previous else current


def counter_deltas(current: Counters, previous: Counters) -> Counters:
    deltas = {}
    for key, value in current.items():
        d = _delta(value, previous.get(key, 0.0))
        if d is not None:
            deltas[key] = d
    return deltas


def quantile(q: float, deltas: Counters) -> float | None:
    """The q-quantile of a histogram from its bucket increases (linear within a bucket)."""
    buckets = sorted(
        ((float(key[7:]), value) for key, value in deltas.items() if key.startswith("bucket:")),
        key=lambda item: item[0],
    )
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            span = count - lower_count
            fraction = (rank - lower_count) / span if span > 0 else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return lower_bound


class MetricsStore:
    """A bounded window of snapshots per deployment, and the series computed from it."""

    def __init__(self, retention: float, interval: float) -> None:
        self.interval = interval
        self._history: dict[str, deque[Snapshot]] = {}
        self._maxlen = int(retention / interval) + 2

    def add(self, deployment_id: str, snapshot: Snapshot) -> None:
        history = self._history.get(deployment_id)
        if history is None:
            history = self._history[deployment_id] = deque(maxlen=self._maxlen)
        history.append(snapshot)

    def forget(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        for deployment_id in [d for d in self._history if d not in keep]:
            del self._history[deployment_id]

    def _at(self, history: deque[Snapshot], moment: float) -> Snapshot | None:
        """The last snapshot taken at or before `moment` (with half an interval of slack)."""
        found = None
        for snapshot in history:
            if snapshot.time <= moment + self.interval / 2:
                found = snapshot
            else:
                break
        return found

    def series(
        self, deployment_id: str, window: float, step: float, now: float | None = None
    ) -> MetricsReport:
        """The metrics report of one deployment (docs/internals.md "Metrics")."""
        step = max(step, self.interval)
        points = max(1, int(window // step))
        now = time.time() if now is None else now
        # Buckets [t, t + step) aligned to the step; the last one holds `now` and is partial,
        # so traffic of the last seconds is counted (and stays in its bucket as time passes).
        last = math.floor(now / step) * step
        times = [last - (points - 1 - i) * step for i in range(points)]
        history = self._history.get(deployment_id, deque())
        series: dict[str, Values] = {name: [] for name in DEPLOYMENT_SERIES}
        replicas: dict[str, dict[str, Values]] = {}
        totals = dict.fromkeys(COUNTED_TOTALS, 0.0)
        reward_sum = 0.0
        for index, start in enumerate(times):
            current = self._at(history, min(start + step, now))
            previous = self._at(history, start)
            if previous is None and current is not None and history[0].time > start:
                # The deployment's history begins inside this step: count from its start.
                previous = history[0]
            if current is None or previous is None or current is previous:
                for values in series.values():
                    values.append(None)
                for columns in replicas.values():
                    for values in columns.values():
                        values.append(None)
                continue
            seconds = max(current.time - previous.time, 1e-9)
            gateway = counter_deltas(current.gateway, previous.gateway)
            requests = predict = client = server = ok = 0.0
            for key, value in gateway.items():
                if key.startswith("bucket:"):
                    continue
                code, _, kind = key.partition("|")
                requests += value
                if kind == "predict":
                    predict += value
                if code.startswith("2"):
                    ok += value
                elif code.startswith("4"):
                    client += value
                elif code.startswith("5"):
                    server += value
            feedback = reward = 0.0
            for name, sample in current.replicas.items():
                before = previous.replicas.get(name, ReplicaSample())
                deltas = counter_deltas(sample.counters, before.counters)
                feedback += deltas.get("feedback", 0.0)
                reward += deltas.get("reward", 0.0)
                column = replicas.setdefault(name, empty_replica_series(index))
                column[REQUESTS_PER_SECOND].append(
                    deltas["requests"] / seconds if "requests" in deltas else None
                )
                column[LATENCY_P99].append(quantile(0.99, deltas))
                cpu = _delta(sample.cpu_seconds, before.cpu_seconds)
                column[CPU].append(None if cpu is None else cpu / seconds)
                column[MEMORY].append(sample.memory)
            for name, column in replicas.items():
                if name not in current.replicas:
                    for values in column.values():
                        values.append(None)
            series[REQUESTS_PER_SECOND].append(requests / seconds)
            series[PREDICT_REQUESTS_PER_SECOND].append(predict / seconds)
            series[SUCCESS_RATE].append(ok / requests if requests else None)
            series[CLIENT_ERRORS_PER_SECOND].append(client / seconds)
            series[SERVER_ERRORS_PER_SECOND].append(server / seconds)
            for q, name in ((0.5, LATENCY_P50), (0.9, LATENCY_P90), (0.99, LATENCY_P99)):
                series[name].append(quantile(q, gateway))
            series[REWARD].append(reward / feedback if feedback else None)
            totals[TOTAL_REQUESTS] += requests
            totals[TOTAL_PREDICT_REQUESTS] += predict
            totals[TOTAL_CLIENT_ERRORS] += client
            totals[TOTAL_SERVER_ERRORS] += server
            totals[TOTAL_FEEDBACK] += feedback
            reward_sum += reward
        feedback_total = totals[TOTAL_FEEDBACK]
        return MetricsReport(
            deployment_id=deployment_id,
            window=points * step,
            step=step,
            timestamps=times,
            series=DeploymentSeries.model_validate(series),
            replicas={n: ReplicaSeries.model_validate(c) for n, c in replicas.items()},
            totals=MetricsTotals.model_validate(
                {
                    **{k: int(v) for k, v in totals.items()},
                    TOTAL_REWARD: reward_sum / feedback_total if feedback_total else None,
                }
            ),
        )
