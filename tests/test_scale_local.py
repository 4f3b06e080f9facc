"""Autoscaling on the local engine with real replicas: up under load, down, to zero and awake."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import wait_until

PAYLOAD = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
# Each prediction waits up to 100 ms for a batch: in flight long enough for every load sample
# to see the clients that are sending, whatever this machine's speed.
SLOW = {"primehub.io/max-batch-size": "64", "primehub.io/max-batch-wait-ms": "100"}


@pytest.fixture
def engine_config() -> dict[str, Any]:
    """Short autoscaling windows, so a test waits seconds rather than minutes."""
    return {
        "drain_seconds": 0.5,
        "stop_grace_seconds": 5.0,
        "restart_backoff_max": 2.0,
        "scale_interval": 0.2,
        "scale_concurrency_window": 1.0,
        "scale_stable_window": 3.0,
        "hold_timeout": 60.0,
    }


def autoscaled(bundle: Path, **bounds: Any) -> dict[str, Any]:
    return {
        "displayName": "Iris autoscaled",
        "groupName": "default",
        "predictors": [
            {
                "name": "predictor1",
                "instanceType": "cpu-0.5",
                "modelURI": str(bundle),
                **bounds,
            }
        ],
    }


def predictor_status(deployment: dict[str, Any]) -> dict[str, Any]:
    [status] = deployment["status"]["predictors"]
    return status


class Load:
    """`clients` threads posting predictions in a loop until stopped; counts the answers."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.stop = threading.Event()
        self.codes: dict[int, int] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(clients)
        self._futures = [self._pool.submit(self._client) for _ in range(clients)]

    def _client(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    code = session.post(self.url, json=PAYLOAD, timeout=60).status_code
                except requests.RequestException:
                    code = 0
                with self._lock:
                    self.codes[code] = self.codes.get(code, 0) + 1

    def finish(self) -> dict[int, int]:
        self.stop.set()
        for future in self._futures:
            future.result(timeout=120)
        self._pool.shutdown()
        return self.codes


async def test_autoscale_up_under_a_load_step_and_back_down_never_below_min(api, bundles):
    body = {
        "id": "busy",
        "spec": autoscaled(
            bundles["v1"], minReplicas=1, maxReplicas=3, targetConcurrency=2, metadata=SLOW
        ),
    }
    await api.ok("POST", "deployments", body)
    deployed = await api.wait_phase("busy", "Deployed", limit=120)
    assert predictor_status(deployed)["replicas"] == 1
    load = Load(deployed["status"]["endpoint"], clients=8)
    seen: list[dict[str, Any]] = []

    async def scaled_up() -> bool:
        d = await api.ok("GET", "deployments/busy")
        seen.append(d)
        status = predictor_status(d)
        return status["replicas"] > 1 and status["availableReplicas"] > 1

    try:
        await wait_until(scaled_up, limit=120, what="more than one ready replica under load")
    finally:
        codes = load.finish()
    # Scaling up is no rollout: the deployment kept serving, and no request failed.
    assert {d["status"]["phase"] for d in seen} == {"Deployed"}
    assert set(codes) == {200}, codes
    assert predictor_status(seen[-1])["replicas"] <= 3

    async def scaled_down() -> bool:
        d = await api.ok("GET", "deployments/busy")
        seen.append(d)
        status = predictor_status(d)
        return status["replicas"] == 1 and status["availableReplicas"] == 1

    await wait_until(scaled_down, limit=120, what="back to one replica after the stable window")
    # Never below minReplicas, and never without a ready replica, on the way down.
    assert min(predictor_status(d)["availableReplicas"] for d in seen) >= 1
    assert {d["status"]["phase"] for d in seen} == {"Deployed"}


async def test_scale_to_zero_then_the_first_request_is_held_and_answered(api, bundles):
    body = {
        "id": "sleepy",
        "spec": autoscaled(bundles["v1"], minReplicas=0, maxReplicas=2, scaleToZeroAfterSeconds=10),
    }
    await api.ok("POST", "deployments", body)
    deployed = await api.wait_phase("sleepy", "Deployed", limit=120)
    assert predictor_status(deployed)["replicas"] == 1  # deployed awake: the model is seen to load
    endpoint = deployed["status"]["endpoint"]
    assert requests.post(endpoint, json=PAYLOAD, timeout=30).status_code == 200

    async def at_zero() -> dict[str, Any] | None:
        d = await api.ok("GET", "deployments/sleepy")
        status = predictor_status(d)
        return d if status["phase"] == "ScaledToZero" and status["replicas"] == 0 else None

    idle = await wait_until(at_zero, limit=120, what="scaled to zero after the idle period")
    # Scaled to zero by policy: still Deployed, and the status says so.
    assert idle["status"]["phase"] == "Deployed"
    assert "scaled to zero" in predictor_status(idle)["message"]
    assert "scaled to zero" in idle["status"]["message"]
    assert idle["status"]["replicaStatuses"] == []

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(requests.post, endpoint, json=PAYLOAD, timeout=120)
        phases: list[tuple[str, str]] = []

        async def answered() -> bool:
            d = await api.ok("GET", "deployments/sleepy")
            phases.append((d["status"]["phase"], predictor_status(d)["phase"]))
            return first.done()

        await wait_until(answered, limit=120, what="the held request's answer")
        response = first.result()
    # Held while a replica started, then answered: not failed.
    assert response.status_code == 200, response.text
    assert response.headers["X-PrimeHub-Predictor"] == "predictor1"
    assert "ndarray" in response.json()["data"]
    # Waking is quick (a replica forks from its warm template), so a poll may never see
    # WakingUp: tests/engines/test_reconciler_scale.py asserts that phase deterministically.
    assert {phase for phase, _ in phases} == {"Deployed"}
    assert {p for _, p in phases} <= {"ScaledToZero", "WakingUp", "Deployed"}, phases
    awake = await api.ok("GET", "deployments/sleepy")
    assert predictor_status(awake)["phase"] == "Deployed"
    assert predictor_status(awake)["availableReplicas"] == 1
