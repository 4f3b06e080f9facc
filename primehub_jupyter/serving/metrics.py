"""Prometheus metrics of the model server: Seldon-compatible names, summed over worker processes."""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

#: Latency buckets in seconds: Prometheus' defaults with finer steps below 5 ms, where a fast
#: model server spends most requests (the p50/p99 read from them would be coarse otherwise).
LATENCY_BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
#: Custom TIMER metrics (milliseconds from the model, exported in seconds, like Seldon).
TIMER_BUCKETS = (*LATENCY_BUCKETS, 30.0, 60.0)
#: Rows per model call when adaptive batching is on.
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)

SERVER_REQUESTS = "seldon_api_executor_server_requests_seconds"
CLIENT_REQUESTS = "seldon_api_executor_client_requests_seconds"
FEEDBACK = "seldon_api_model_feedback"
FEEDBACK_REWARD = "seldon_api_model_feedback_reward"
BATCH_ROWS = "primehub_model_server_batch_rows"
LOG_LINES_DROPPED = "primehub_log_lines_dropped"
REQUEST_LOG_DROPPED = "primehub_request_log_records_dropped"

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

_HELP = {
    SERVER_REQUESTS: "Latency of requests the model server answered (Seldon executor server).",
    CLIENT_REQUESTS: "Latency of the model call behind each request (Seldon executor client).",
    FEEDBACK: "Feedback requests received.",
    FEEDBACK_REWARD: "Sum of the rewards sent as feedback.",
    BATCH_ROWS: "Rows per model call (adaptive batching).",
    LOG_LINES_DROPPED: "Lines of the server's output lost because its log file could not be "
    "written (disk full, read-only, I/O error).",
    REQUEST_LOG_DROPPED: "Request log records lost: the disk failed or did not keep up.",
}

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_CUSTOM_TYPES = {"COUNTER": "counter", "GAUGE": "gauge", "TIMER": "histogram"}
#: Snapshots of other workers are written this often (seconds) when something changed.
FLUSH_INTERVAL = 1.0


@dataclass(frozen=True)
class Identity:
    """Who the metrics describe; these become the Seldon labels of every series."""

    deployment_name: str = ""
    predictor_name: str = ""
    predictor_version: str = ""
    model_name: str = ""
    model_image: str = ""
    model_version: str = ""


class _Histogram:
    """Bucket counts (not cumulative; the last one is +Inf) and the sum of observations."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, i.e. the bucket "le=bound" that counts it.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


_Key = tuple[str, str, tuple[tuple[str, str], ...]]  # (type, name, sorted labels)


class ServerMetrics:
    """The model server's metrics, cheap to update on the hot path (no locks, no I/O).

    Each worker process counts in plain Python objects. With several workers, each one writes a
    snapshot of its numbers to `snapshot_dir` at most once per FLUSH_INTERVAL, and whichever
    worker answers `GET /metrics` adds the other workers' latest snapshots to its own live
    numbers. Snapshots of workers that died stay, so counters never go backwards.
    """

    def __init__(
        self,
        identity: Identity,
        snapshot_dir: Path | None = None,
        dropped_log_lines: Callable[[], int] | None = None,
    ) -> None:
        self.identity = identity
        self.snapshot_dir = snapshot_dir
        # The log capture's count (shared by every worker, so read, never summed).
        self.dropped_log_lines = dropped_log_lines
        base = identity
        self._base_labels = (
            ("deployment_name", base.deployment_name),
            ("predictor_name", base.predictor_name),
            ("predictor_version", base.predictor_version),
            ("model_name", base.model_name),
        )
        self._model_labels = (
            *self._base_labels,
            ("model_image", base.model_image),
            ("model_version", base.model_version),
        )
        self._series: dict[_Key, Any] = {}
        # Hot-path caches: (service, code) -> histogram object, no label tuples built per call.
        self._server: dict[tuple[str, int, str], _Histogram] = {}
        self._client: dict[tuple[str, int], _Histogram] = {}
        self._batch: _Histogram | None = None
        self._gauge_times: dict[_Key, float] = {}
        self._custom_types: dict[str, str] = {}
        self._warned: set[str] = set()
        self._dirty = False
        self._flushed_at = 0.0

    # ---- hot path ---------------------------------------------------------------------------

    def observe_server(self, service: str, code: int, seconds: float, method: str = "POST") -> None:
        """One answered request: `service` is predictions, infer, feedback or metadata."""
        hist = self._server.get((service, code, method))
        if hist is None:
            labels = (("code", str(code)), *self._base_labels, ("service", service))
            hist = self._histogram(SERVER_REQUESTS, (*labels, ("method", method.lower())))
            self._server[(service, code, method)] = hist
        hist.observe(seconds)
        self._dirty = True

    def observe_client(self, service: str, code: int, seconds: float) -> None:
        """One model call as the request saw it (queueing for a batch included)."""
        hist = self._client.get((service, code))
        if hist is None:
            labels = (("code", str(code)), *self._model_labels, ("service", service))
            hist = self._histogram(CLIENT_REQUESTS, (*labels, ("method", "post")))
            self._client[(service, code)] = hist
        hist.observe(seconds)
        self._dirty = True

    def observe_batch(self, rows: int) -> None:
        """Rows of one batched model call."""
        if self._batch is None:
            self._batch = self._histogram(BATCH_ROWS, self._base_labels, BATCH_BUCKETS)
        self._batch.observe(float(rows))
        self._dirty = True

    def request_log_dropped(self, count: int) -> None:
        """This process's count of request log records lost so far (a counter's new total)."""
        key: _Key = ("counter", REQUEST_LOG_DROPPED, self._base_labels)
        if self._series.get(key) != float(count):
            self._series[key] = float(count)
            self._dirty = True

    def feedback(self, reward: float | None) -> None:
        """Count one feedback request and add its reward (Seldon's feedback counters).

        Unlike Seldon's Python wrapper, a reward of 0 is counted too, so reward_total /
        feedback_total is the share of rewarded feedback.
        """
        labels = (*self._model_labels, ("method", "feedback"))
        self._add(("counter", FEEDBACK, labels), 1.0)
        if reward is not None:
            self._add(("counter", FEEDBACK_REWARD, labels), float(reward))

    def custom(self, metrics: Any, method: str) -> list[dict[str, Any]]:
        """Record a model's custom metrics ([{type, key, value, tags?}]); returns the valid ones.

        COUNTER adds, GAUGE sets, TIMER observes milliseconds into a histogram in seconds. The
        tags become labels beside the deployment labels. Invalid entries are skipped with one
        warning per metric key on stderr: a model's bookkeeping must not fail its predictions.
        """
        if not isinstance(metrics, list):
            self._warn("metrics()", f"metrics() must return a list of dicts, got {metrics!r}")
            return []
        valid = []
        for metric in metrics:
            problem = _check_custom(metric)
            key = str(metric.get("key")) if isinstance(metric, dict) else "?"
            if problem is None:
                kind = _CUSTOM_TYPES[metric.get("type", "COUNTER")]
                known = self._custom_types.setdefault(key, kind)
                if key in _HELP or known != kind:
                    problem = f"the name is already used by a {known or 'built-in'} metric"
            if problem is not None:
                self._warn(str(key), f"custom metric {metric!r} skipped: {problem}")
                continue
            tags = {str(k): str(v) for k, v in (metric.get("tags") or {}).items()}
            merged = sorted({**tags, **dict(self._model_labels)}.items())
            labels = (*merged, ("method", method))
            value = float(metric["value"])
            if kind == "counter":
                self._add(("counter", key, labels), value)
            elif kind == "gauge":
                series_key: _Key = ("gauge", key, labels)
                self._series[series_key] = value
                self._gauge_times[series_key] = time.time()
                self._dirty = True
            else:
                self._histogram(key, labels, TIMER_BUCKETS).observe(value / 1000.0)
                self._dirty = True
            valid.append(metric)
        return valid

    # ---- storage ----------------------------------------------------------------------------

    def _histogram(
        self,
        name: str,
        labels: tuple[tuple[str, str], ...],
        bounds: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> _Histogram:
        key: _Key = ("histogram", name, labels)
        hist = self._series.get(key)
        if hist is None:
            hist = self._series[key] = _Histogram(bounds)
        return hist  # type: ignore[no-any-return]

    def _add(self, key: _Key, value: float) -> None:
        self._series[key] = self._series.get(key, 0.0) + value
        self._dirty = True

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(f"warning: {message}", file=sys.stderr, flush=True)

    # ---- several workers --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This process's numbers as JSON-safe data."""
        series = []
        for (kind, name, labels), value in self._series.items():
            if kind == "histogram":
                value = {"bounds": value.bounds, "counts": value.counts, "sum": value.total}
            when = self._gauge_times.get((kind, name, labels), 0.0)
            series.append([kind, name, [list(pair) for pair in labels], value, when])
        return {"pid": os.getpid(), "series": series}

    def flush(self, *, force: bool = False) -> None:
        """Write this worker's snapshot for the others (only with a snapshot dir and changes)."""
        if self.snapshot_dir is None or not (self._dirty or force):
            return
        now = time.monotonic()
        if not force and now - self._flushed_at < FLUSH_INTERVAL:
            return
        self._dirty = False
        self._flushed_at = now
        target = self.snapshot_dir / f"metrics-{os.getpid()}.json"
        temporary = target.with_suffix(".tmp")
        try:
            temporary.write_bytes(orjson.dumps(self.snapshot()))
            os.replace(temporary, target)
        except OSError as exc:
            self._warn("flush", f"cannot write metrics snapshot {target}: {exc}")

    def _other_snapshots(self) -> Iterator[dict[str, Any]]:
        if self.snapshot_dir is None:
            return
        own = f"metrics-{os.getpid()}.json"
        with contextlib.suppress(OSError):
            for path in self.snapshot_dir.glob("metrics-*.json"):
                if path.name == own:
                    continue
                with contextlib.suppress(OSError, orjson.JSONDecodeError):
                    yield orjson.loads(path.read_bytes())

    # ---- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        """Prometheus text format of every worker's numbers, summed (gauges: latest set)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.exposition import generate_latest

        merged: dict[_Key, Any] = {}
        times: dict[_Key, float] = {}
        snapshots = [self.snapshot(), *self._other_snapshots()]
        for snap in snapshots:
            for kind, name, labels, value, when in snap.get("series", []):
                key: _Key = (kind, name, tuple((str(k), str(v)) for k, v in labels))
                if kind == "histogram":
                    bounds = tuple(value["bounds"])
                    have = merged.get(key)
                    if have is None:
                        have = merged[key] = [bounds, [0] * (len(bounds) + 1), 0.0]
                    if have[0] != bounds or len(value["counts"]) != len(have[1]):
                        continue  # written by a different version; never mixed
                    have[1] = [a + b for a, b in zip(have[1], value["counts"], strict=True)]
                    have[2] += value["sum"]
                elif kind == "gauge":
                    if key not in merged or when >= times[key]:
                        merged[key], times[key] = value, when
                else:
                    merged[key] = merged.get(key, 0.0) + value

        if self.dropped_log_lines is not None:
            key = ("counter", LOG_LINES_DROPPED, self._base_labels)
            merged[key] = float(self.dropped_log_lines())

        families: dict[tuple[str, str], list[tuple[dict[str, str], Any]]] = {}
        for (kind, name, labels), value in merged.items():
            families.setdefault((kind, name), []).append((dict(labels), value))

        class _Collector:
            def collect(self) -> Iterable[Any]:
                for (kind, name), items in sorted(families.items(), key=lambda item: item[0][1]):
                    # One family per name: label sets that differ (custom tags) are padded with
                    # empty values, which Prometheus treats as absent.
                    names = sorted({k for labels, _ in items for k in labels})
                    doc = _HELP.get(name, f"Custom {kind} metric reported by the model.")
                    family: Any
                    if kind == "histogram":
                        family = HistogramMetricFamily(name, doc, labels=names)
                        for labels, (bounds, counts, total) in items:
                            cumulative, running = [], 0
                            for bound, count in zip((*bounds, math.inf), counts, strict=True):
                                running += count
                                cumulative.append((_bound_text(bound), running))
                            values = [labels.get(n, "") for n in names]
                            family.add_metric(values, cumulative, total)
                    elif kind == "gauge":
                        family = GaugeMetricFamily(name, doc, labels=names)
                        for labels, value in items:
                            family.add_metric([labels.get(n, "") for n in names], value)
                    else:
                        family = CounterMetricFamily(name, doc, labels=names)
                        for labels, value in items:
                            family.add_metric([labels.get(n, "") for n in names], value)
                    yield family

        return bytes(generate_latest(_Collector()))  # type: ignore[arg-type]


def _bound_text(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf"
    return repr(float(bound))


def _check_custom(metric: Any) -> str | None:
    """Why a custom metric entry is invalid, or None."""
    if not isinstance(metric, dict):
        return "each metric must be a dict with type, key and value"
    kind = metric.get("type", "COUNTER")
    if kind not in _CUSTOM_TYPES:
        return f"type must be COUNTER, GAUGE or TIMER, not {kind!r}"
    key = metric.get("key")
    if not isinstance(key, str) or not _METRIC_NAME.fullmatch(key):
        return "key must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
    value = metric.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return "value must be a number"
    tags = metric.get("tags") or {}
    if not isinstance(tags, dict):
        return "tags must be a dict of label names to values"
    for name in tags:
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            return f"tag {name!r} is not a valid Prometheus label name"
        if name in ("le", "quantile", "method"):
            return f"tag {name!r} is reserved"
    return None
