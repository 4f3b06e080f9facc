"""Metrics a few seconds after traffic: a coarse step counts every request at once (issue 13)."""

from __future__ import annotations

import asyncio

import pytest
import requests

from .conftest import spec


@pytest.fixture
def engine_config():
    # Background scrapes far apart: only the scrape a metrics request makes can see the traffic.
    return {"drain_seconds": 0.2, "stop_grace_seconds": 5.0, "metrics_interval": 300.0}


async def test_coarse_step_counts_requests_of_the_last_seconds(api, bundles):
    created = await api.ok("POST", "deployments", {"spec": spec(bundles["v1"])})
    endpoint = (await api.wait_phase(created["id"], "Deployed"))["status"]["endpoint"]

    def traffic() -> None:
        with requests.Session() as session:
            for _ in range(31):
                body = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
                assert session.post(endpoint, json=body, timeout=30).status_code == 200

    await asyncio.to_thread(traffic)
    metrics = await api.ok("GET", f"deployments/{created['id']}/metrics", window="900", step="60")
    assert metrics["totals"]["predictRequests"] == 31
    assert all(t % 60 == 0 for t in metrics["timestamps"])
    counted = [v for v in metrics["series"]["predictRequestsPerSecond"] if v]
    assert counted, metrics["series"]  # the current, partial minute holds them
