"""Metrics of local deployments: the gateway's counters and replica usage from psutil."""

from __future__ import annotations

import psutil
from prometheus_client.parser import text_string_to_metric_families

from ..series import Counters

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
