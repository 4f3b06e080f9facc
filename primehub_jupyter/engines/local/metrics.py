"""Metrics of local deployments: scrape the gateway, the replicas and psutil; keep history."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

from ...core.metrics import MetricsReport
from ..series import Counters, MetricsStore, ReplicaSample, Snapshot, parse_replica
from .gateway_process import GatewayProcess
from .processes import Prober
from .replica import READY, RETIRING, DeploymentState

# A metrics request scrapes anew when the last scrape is older than this (seconds).
FRESH_METRICS_SECONDS = 1.0

GATEWAY_REQUESTS = "primehub_gateway_requests_total"
GATEWAY_DURATION = "primehub_gateway_request_duration_seconds"


def parse_gateway(text: str) -> dict[str, Counters]:
    """Per-deployment counters from the gateway's Prometheus text."""
    result: dict[str, Counters] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            deployment = sample.labels.get("deployment")
            if deployment is None:
                continue
            counters = result.setdefault(deployment, {})
            if sample.name == GATEWAY_REQUESTS:
                key = f"{sample.labels.get('code', '')}|{sample.labels.get('kind', 'other')}"
                counters[key] = counters.get(key, 0.0) + sample.value
            elif sample.name == GATEWAY_DURATION + "_bucket":
                key = "bucket:" + sample.labels["le"]
                counters[key] = counters.get(key, 0.0) + sample.value
    return result


def process_usage(pid: int) -> tuple[float, float] | None:
    """(CPU seconds, resident bytes) of a process and its children (model-server workers)."""
    try:
        proc = psutil.Process(pid)
        processes = [proc, *proc.children(recursive=True)]
        cpu = memory = 0.0
        for p in processes:
            with p.oneshot():
                times = p.cpu_times()
                cpu += times.user + times.system
                memory += p.memory_info().rss
        return cpu, memory
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class LocalMetrics:
    """Scrapes the gateway and every serving replica each interval, and keeps the history."""

    def __init__(
        self,
        *,
        gateway: GatewayProcess,
        prober: Prober,
        deployments: Callable[[], Iterable[DeploymentState]],
        retention: float,
        interval: float,
        log: Any = None,
    ) -> None:
        self.gateway = gateway
        self.prober = prober
        self.deployments = deployments
        self.interval = interval
        self.log = log or logging.getLogger(__name__)
        self.store = MetricsStore(retention, interval)
        self._lock = asyncio.Lock()
        self._collected_at = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Scrape in the background until `stop()`."""
        self._task = asyncio.create_task(self._collect(), name="primehub-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def begin(self, deployment_id: str) -> None:
        """A new deployment has served nothing: a zero baseline, so its first requests count."""
        self.store.add(deployment_id, Snapshot(time.time()))

    async def report(self, deployment_id: str, window: float, step: float) -> MetricsReport:
        """The deployment's report, with the requests of the last seconds in its totals."""
        if time.monotonic() - self._collected_at > FRESH_METRICS_SECONDS:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                await self.collect_once()
        return self.store.series(deployment_id, window, step)

    async def _collect(self) -> None:
        while True:
            try:
                await self.collect_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # metrics must never take the engine down
                self.log.exception("PrimeHub metrics scrape failed")
            await asyncio.sleep(self.interval)

    async def _scrape(self, url: str, headers: dict[str, str] | None = None) -> str:
        try:
            async with self.prober.session().get(url, headers=headers) as response:
                return await response.text() if response.status == 200 else ""
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return ""

    async def collect_once(self) -> None:
        """One scrape of the gateway and every ready (or retiring) replica."""
        async with self._lock:  # one scrape at a time: snapshots stay in time order
            await self._collect_locked()
        self._collected_at = time.monotonic()

    async def _collect_locked(self) -> None:
        now = time.time()
        text = await self._scrape(
            f"{self.gateway.url}/_primehub/metrics", self.gateway.internal_admin_headers()
        )
        gateway = parse_gateway(text) if text else {}
        states = [s for s in self.deployments() if not s.deleted]
        targets = [
            (state.id, replica)
            for state in states
            for replica in state.replicas
            if replica.handle is not None and replica.state in (READY, RETIRING)
        ]
        texts = await asyncio.gather(*(self._scrape(f"{r.url}/metrics") for _, r in targets))
        pids = [r.handle.pid if r.handle else None for _, r in targets]
        usage = await asyncio.to_thread(
            lambda: [process_usage(pid) if pid else None for pid in pids]
        )
        samples: dict[str, dict[str, ReplicaSample]] = {s.id: {} for s in states}
        for (deployment_id, replica), body, used in zip(targets, texts, usage, strict=True):
            sample = ReplicaSample(parse_replica(body) if body else {})
            if used is not None:
                sample.cpu_seconds, sample.memory = used
            samples[deployment_id][replica.name] = sample
        for state in states:
            self.store.add(state.id, Snapshot(now, gateway.get(state.id, {}), samples[state.id]))
        self.store.forget(s.id for s in states)
