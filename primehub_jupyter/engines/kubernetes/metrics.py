"""Metrics of Kubernetes deployments: PromQL when Prometheus is configured, else pod scrapes."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ...core.metrics import (
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
)
from ...core.traffic import LATENCY_BUCKETS, PredictorCounters
from ..series import (
    FEEDBACK_REWARD,
    FEEDBACK_TOTAL,
    SERVER_REQUESTS,
    MetricsStore,
    ReplicaSample,
    Snapshot,
    counter_deltas,
    parse_replica,
)
from .client import PODS, Kube, KubeError
from .crd import LABEL_ID, LABEL_PREDICTOR
from .phases import pod_ready

PREDICT_SERVICES = ("predictions", "predict", "infer")
REWARD_SUM = "rewardSum"  # a query of ours, not a total in the report


def request_kind(service: str) -> str:
    """predict | feedback | other, from the Seldon `service` label."""
    if service in PREDICT_SERVICES:
        return "predict"
    return "feedback" if service == "feedback" else "other"


def parse_pod(text: str) -> tuple[dict[str, float], ReplicaSample]:
    """(requests by "code|kind" plus latency buckets, the replica sample) of one /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    traffic: dict[str, float] = {}
    cpu = memory = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SERVER_REQUESTS + "_count":
                kind = request_kind(sample.labels.get("service", ""))
                key = f"{sample.labels.get('code', '')}|{kind}"
                traffic[key] = traffic.get(key, 0.0) + sample.value
            elif sample.name == SERVER_REQUESTS + "_bucket":
                key = "bucket:" + sample.labels["le"]
                traffic[key] = traffic.get(key, 0.0) + sample.value
            elif sample.name == "process_cpu_seconds_total":
                cpu = (cpu or 0.0) + sample.value
            elif sample.name == "process_resident_memory_bytes":
                memory = (memory or 0.0) + sample.value
    return traffic, ReplicaSample(counters=parse_replica(text), cpu_seconds=cpu, memory=memory)


class PodMetrics:
    """Scrapes the ready pods of deployments someone looks at, while they look.

    Without Prometheus nothing keeps history for us, so a deployment is scraped from the
    first request for its metrics on, until nobody asked for `idle_seconds`.
    """

    def __init__(
        self,
        kube: Kube,
        pod_url: Callable[[dict[str, Any]], str],
        interval: float,
        *,
        retention: float = 3600.0,
        idle_seconds: float = 900.0,
    ) -> None:
        self.kube = kube
        self.pod_url = pod_url
        self.interval = interval
        self.idle_seconds = idle_seconds
        self.store = MetricsStore(retention, interval)
        self._watched: dict[str, float] = {}
        self._previous: dict[str, dict[str, dict[str, float]]] = {}
        self._totals: dict[str, dict[str, float]] = {}
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    async def series(self, deployment_id: str, window: float, step: float) -> MetricsReport:
        first = deployment_id not in self._watched
        self._watched[deployment_id] = time.monotonic()
        if first:
            await self.scrape(deployment_id)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="primehub-pod-metrics")
        return self.store.series(deployment_id, window, step)

    def forget(self, deployment_id: str) -> None:
        self._watched.pop(deployment_id, None)
        self._previous.pop(deployment_id, None)
        self._totals.pop(deployment_id, None)
        self.store.forget(self._watched)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        while self._watched:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            for deployment_id, asked in list(self._watched.items()):
                if now - asked > self.idle_seconds:
                    self.forget(deployment_id)
                    continue
                try:
                    await self.scrape(deployment_id)
                except Exception as error:  # metrics never break the engine
                    self.kube_log(f"metrics of {deployment_id}: {error}")

    @staticmethod
    def kube_log(message: str) -> None:
        import logging

        logging.getLogger("primehub.kubernetes").debug(message)

    async def _text(self, url: str) -> str | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self._session.get(f"{url}/metrics") as response:
                return await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None

    async def predictor_counters(
        self, deployment_id: str, predictors: list[tuple[str, bool]]
    ) -> list[PredictorCounters]:
        """Counts per predictor (name, shadow) from the /metrics of its ready pods, read now.

        What the model servers count since they started: a pod that went away (scaled down,
        replaced) takes its counts with it. Shadow comparisons are not counted on Kubernetes
        (nginx discards mirrored answers unseen), nor successes (the model server exports
        the reward's sum, not how many rewards were above 0).
        """
        try:
            pods = await self.kube.list(PODS, labels=f"{LABEL_ID}={deployment_id}")
        except KubeError:
            return []
        ready = [p for p in pods if pod_ready(p)]
        texts = await asyncio.gather(*(self._text(self.pod_url(p)) for p in ready))
        counters = {
            n: PredictorCounters.model_validate({"name": n, "shadow": shadow})
            for n, shadow in predictors
        }
        for pod, text in zip(ready, texts, strict=True):
            owner = counters.get((pod["metadata"].get("labels") or {}).get(LABEL_PREDICTOR, ""))
            if owner is not None and text is not None:
                add_pod_counts(owner, text)
        return list(counters.values())

    async def scrape(self, deployment_id: str) -> None:
        """One snapshot: per-pod samples, plus deployment counters that only ever grow."""
        try:
            pods = await self.kube.list(PODS, labels=f"{LABEL_ID}={deployment_id}")
        except KubeError:
            return
        ready = [p for p in pods if pod_ready(p)]
        texts = await asyncio.gather(*(self._text(self.pod_url(p)) for p in ready))
        previous = self._previous.setdefault(deployment_id, {})
        totals = self._totals.setdefault(deployment_id, {})
        snapshot = Snapshot(time=time.time())
        seen: dict[str, dict[str, float]] = {}
        for pod, text in zip(ready, texts, strict=True):
            if text is None:
                continue
            name = pod["metadata"]["name"]
            traffic, sample = parse_pod(text)
            # A pod that went away takes its counts with it; adding per-pod increases keeps
            # the deployment's totals monotonic across rollouts and restarts.
            for key, delta in counter_deltas(traffic, previous.get(name, {})).items():
                totals[key] = totals.get(key, 0.0) + delta
            seen[name] = traffic
            snapshot.replicas[name] = sample
        self._previous[deployment_id] = seen
        snapshot.gateway = dict(totals)
        self.store.add(deployment_id, snapshot)


def add_pod_counts(counters: PredictorCounters, text: str) -> None:
    """Add one model server's /metrics to a predictor's counters (latency in our buckets)."""
    from prometheus_client.parser import text_string_to_metric_families

    cumulative: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(SERVER_REQUESTS) and sample.labels.get("service") not in (
                None,
                "predictions",
            ):
                continue  # predictions only: metadata and catalog reads are not traffic
            if sample.name == SERVER_REQUESTS + "_count":
                counters.requests += int(sample.value)
                if sample.labels.get("code", "").startswith("5"):
                    counters.errors += int(sample.value)
            elif sample.name == SERVER_REQUESTS + "_bucket":
                bound = float(sample.labels["le"])
                cumulative[bound] = cumulative.get(bound, 0.0) + sample.value
            elif sample.name == FEEDBACK_TOTAL:
                counters.feedback += int(sample.value)
            elif sample.name == FEEDBACK_REWARD:
                counters.reward_sum += sample.value
    below = 0.0
    for index, bound in enumerate(LATENCY_BUCKETS):
        # The server's bounds include ours: the count at or below each of our bounds.
        at = max((v for b, v in cumulative.items() if b <= bound), default=0.0)
        counters.latency_buckets[index] += int(at - below)
        below = at


# ---- Prometheus ----------------------------------------------------------------------


def _value(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def promql(namespace: str, deployment_id: str, rate: str) -> dict[str, Any]:
    """The queries: deployment series, per-pod series (by `pod`), and totals templates."""
    # Series are selected by pod name, <deployment>-<template hash>-<5 chars>, not by the
    # model server's deployment_name label: any image's pods match (a modelImage may not set
    # that label), with a PodMonitor or the usual annotation-based scrape config alike. The
    # pattern is anchored, so deployment "a" never matches the pods of "a-b"; ids are DNS-1035
    # labels, so nothing needs escaping (a backslash would not survive a PromQL string).
    pod_names = f"{deployment_id}-[a-z0-9]+-[a-z0-9]{{5}}"
    sel = f'namespace="{namespace}",pod=~"{pod_names}"'
    count = f"{SERVER_REQUESTS}_count"
    bucket = f"{SERVER_REQUESTS}_bucket"
    predict = "|".join(PREDICT_SERVICES)
    pods = f'namespace="{namespace}",pod=~"{pod_names}",container="model"'

    def rate_of(extra: str = "", metric: str = count, by: str = "") -> str:
        labels = sel + (f",{extra}" if extra else "")
        group = f" by ({by})" if by else ""
        return f"sum{group}(rate({metric}{{{labels}}}[{rate}]))"

    def quantile(q: float, by: str = "le") -> str:
        return f"histogram_quantile({q}, {rate_of(metric=bucket, by=by)})"

    ok = rate_of('code=~"2.."')
    return {
        "series": {
            REQUESTS_PER_SECOND: rate_of(),
            PREDICT_REQUESTS_PER_SECOND: rate_of(f'service=~"{predict}"'),
            SUCCESS_RATE: f"{ok} / {rate_of()}",
            CLIENT_ERRORS_PER_SECOND: rate_of('code=~"4.."'),
            SERVER_ERRORS_PER_SECOND: rate_of('code=~"5.."'),
            LATENCY_P50: quantile(0.5),
            LATENCY_P90: quantile(0.9),
            LATENCY_P99: quantile(0.99),
            REWARD: f"{rate_of(metric=FEEDBACK_REWARD)} / {rate_of(metric=FEEDBACK_TOTAL)}",
        },
        "replicas": {
            REQUESTS_PER_SECOND: rate_of(by="pod"),
            LATENCY_P99: quantile(0.99, by="pod, le"),
            CPU: f"sum by (pod)(rate(container_cpu_usage_seconds_total{{{pods}}}[{rate}]))",
            MEMORY: f"sum by (pod)(container_memory_working_set_bytes{{{pods}}})",
        },
        "totals": {
            TOTAL_REQUESTS: f"sum(increase({count}{{{sel}}}[{{window}}]))",
            TOTAL_PREDICT_REQUESTS: (
                f'sum(increase({count}{{{sel},service=~"{predict}"}}[{{window}}]))'
            ),
            TOTAL_CLIENT_ERRORS: f'sum(increase({count}{{{sel},code=~"4.."}}[{{window}}]))',
            TOTAL_SERVER_ERRORS: f'sum(increase({count}{{{sel},code=~"5.."}}[{{window}}]))',
            TOTAL_FEEDBACK: f"sum(increase({FEEDBACK_TOTAL}{{{sel}}}[{{window}}]))",
            REWARD_SUM: f"sum(increase({FEEDBACK_REWARD}{{{sel}}}[{{window}}]))",
        },
    }


async def _query(session: aiohttp.ClientSession, base: str, path: str, params: dict) -> list:
    async with session.get(f"{base}/api/v1/{path}", params=params) as response:
        body = await response.json(content_type=None)
    if response.status != 200 or body.get("status") != "success":
        raise RuntimeError(f"Prometheus: {body.get('error') or response.status}")
    return body["data"]["result"]


async def prometheus_metrics(
    session: aiohttp.ClientSession,
    base_url: str,
    namespace: str,
    deployment_id: str,
    window: float,
    step: float,
) -> MetricsReport:
    """The metrics report (docs/internals.md "Metrics") from Prometheus range queries."""
    base = base_url.rstrip("/")
    points = max(1, int(window // step))
    end = math.floor(time.time() / step) * step
    start = end - (points - 1) * step
    times = [start + i * step for i in range(points)]
    rate = f"{max(int(step * 2), 60)}s"
    queries = promql(namespace, deployment_id, rate)
    span = {"start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}

    def aligned(values: list) -> list[float | None]:
        row: list[float | None] = [None] * points
        for stamp, text in values:
            index = round((float(stamp) - start) / step)
            if 0 <= index < points:
                row[index] = _value(text)
        return row

    names = list(queries["series"])
    replica_names = list(queries["replicas"])
    total_names = list(queries["totals"])
    results = await asyncio.gather(
        *(
            _query(session, base, "query_range", {"query": queries["series"][n], **span})
            for n in names
        ),
        *(
            _query(session, base, "query_range", {"query": queries["replicas"][n], **span})
            for n in replica_names
        ),
        *(
            _query(
                session,
                base,
                "query",
                {
                    "query": queries["totals"][n].replace("{window}", f"{int(window)}s"),
                    "time": f"{end:.3f}",
                },
            )
            for n in total_names
        ),
    )
    series = {}
    for name, result in zip(names, results[: len(names)], strict=True):
        series[name] = aligned(result[0]["values"]) if result else [None] * points
    replicas: dict[str, dict[str, list[float | None]]] = {}
    offset = len(names)
    for name, result in zip(
        replica_names, results[offset : offset + len(replica_names)], strict=True
    ):
        for item in result:
            pod = item["metric"].get("pod", "")
            column = replicas.setdefault(pod, {n: [None] * points for n in replica_names})
            column[name] = aligned(item["values"])
    totals_raw = {}
    for name, result in zip(total_names, results[offset + len(replica_names) :], strict=True):
        totals_raw[name] = _value(result[0]["value"][1]) if result else None
    feedback = totals_raw.get(TOTAL_FEEDBACK) or 0.0
    totals: dict[str, Any] = {k: round(totals_raw.get(k) or 0.0) for k in COUNTED_TOTALS}
    totals[TOTAL_REWARD] = (totals_raw.get(REWARD_SUM) or 0.0) / feedback if feedback else None
    return MetricsReport(
        deployment_id=deployment_id,
        window=points * step,
        step=step,
        timestamps=times,
        series=DeploymentSeries.model_validate(
            {name: series.get(name, [None] * points) for name in DEPLOYMENT_SERIES}
        ),
        replicas={pod: ReplicaSeries.model_validate(c) for pod, c in replicas.items()},
        totals=MetricsTotals.model_validate(totals),
    )
