"""Held requests: the gateway's waiting room for predictors at zero replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from primehub_jupyter.gateway.hold import HoldFull, Holds

from .gateway_backends import Backend, Gateway, start_backend, start_gateway, stop

KEY = ("iris", "predictor1")


def wait_until_sync(predicate: Callable[[], Any], what: str, limit: float = 30) -> None:
    """Poll a condition from a test thread; the limit only bounds a hang."""
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_held_request_is_released_by_the_routes_update_that_brings_its_replica() -> None:
    async def scenario() -> None:
        holds = Holds(limit=4, max_wait=30.0)
        replicas: list[str] = []
        waiting = asyncio.create_task(holds.wait(KEY, lambda: bool(replicas)))
        await asyncio.sleep(0)
        assert holds.report() == {"iris": {"predictor1": 1}}
        holds.routes_changed()  # an update without the replica: still waiting
        await asyncio.sleep(0)
        assert not waiting.done()
        replicas.append("r0")
        holds.routes_changed()
        assert await asyncio.wait_for(waiting, 5) is True
        assert holds.report() == {}

    run(scenario())


def test_a_replica_already_there_needs_no_update() -> None:
    async def scenario() -> None:
        holds = Holds()
        assert await holds.wait(KEY, lambda: True) is True
        assert holds.counts == {}

    run(scenario())


def test_the_queue_is_bounded_per_predictor() -> None:
    async def scenario() -> None:
        holds = Holds(limit=2, max_wait=30.0)
        tasks = [asyncio.create_task(holds.wait(KEY, lambda: False)) for _ in range(2)]
        other = asyncio.create_task(holds.wait(("iris", "v2"), lambda: False))
        await asyncio.sleep(0)
        with pytest.raises(HoldFull):
            await holds.wait(KEY, lambda: False)
        assert holds.report() == {"iris": {"predictor1": 2, "v2": 1}}
        holds.close()
        assert await asyncio.gather(*tasks, other) == [False, False, False]
        assert holds.counts == {}

    run(scenario())


def test_the_wait_is_bounded() -> None:
    async def scenario() -> None:
        holds = Holds(limit=2, max_wait=0.05)
        assert await holds.wait(KEY, lambda: False) is False
        assert holds.counts == {}

    run(scenario())


def test_a_client_that_leaves_frees_its_place() -> None:
    async def scenario() -> None:
        holds = Holds(limit=1, max_wait=30.0)
        task = asyncio.create_task(holds.wait(KEY, lambda: False))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert holds.counts == {}

    run(scenario())


def test_the_long_poll_returns_when_a_request_starts_waiting() -> None:
    async def scenario() -> None:
        holds = Holds(max_wait=30.0)
        version = holds.version
        poll = asyncio.create_task(holds.poll(version, 20.0))
        await asyncio.sleep(0)
        assert not poll.done()
        held = asyncio.create_task(holds.wait(KEY, lambda: False))
        await asyncio.wait_for(poll, 5)
        assert holds.version == version + 1
        # A poll that already missed a version returns at once.
        await asyncio.wait_for(holds.poll(version, 20.0), 1)
        holds.close()
        assert await held is False

    run(scenario())


# ---- the gateway process: held requests over real HTTP ----------------------------------------

ADMIN = "adm-" + "h" * 32


@pytest.fixture
def holding_gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path, ADMIN, "--hold-queue", "2", "--hold-timeout", "3")
    yield gw
    stop(gw.process)


@pytest.fixture
def echo() -> Iterator[Backend]:
    backend = start_backend("W")
    yield backend
    backend.kill()


def waking(replicas: list[dict[str, str]], *, hold: bool = True) -> dict[str, Any]:
    """A deployment whose only predictor scales to zero (`hold`) with these replicas."""
    return {
        "phase": "Deployed",
        "message": "",
        "accessType": "public",
        "predictors": [
            {
                "name": "sleepy",
                "traffic": 100,
                "phase": "ScaledToZero" if not replicas else "Deployed",
                "message": "",
                "replicas": replicas,
                "hold": hold,
            }
        ],
    }


def held(gateway: Gateway) -> dict[str, Any]:
    response = requests.get(f"{gateway.url}/_primehub/holds", headers=gateway.admin(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_held_request_is_answered_once_the_routes_bring_a_replica(
    holding_gateway: Gateway, echo: Backend
) -> None:
    gateway = holding_gateway
    gateway.route(zero=waking([]))
    url = gateway.endpoint("zero", "/api/v1.0/predictions")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(requests.post, url, json={"data": {}}, timeout=30)
        wait_until_sync(lambda: held(gateway)["held"] == {"zero": {"sleepy": 1}}, "held")
        load = requests.get(f"{gateway.url}/_primehub/load", headers=gateway.admin(), timeout=10)
        assert load.json()["deployments"]["zero"]["predictors"]["sleepy"]["held"] == 1
        # The long poll returns at once for an engine that has not seen this version yet.
        version = held(gateway)["version"]
        poll = requests.get(
            f"{gateway.url}/_primehub/holds?after={version - 1}&wait=20",
            headers=gateway.admin(),
            timeout=10,
        )
        assert poll.json()["held"] == {"zero": {"sleepy": 1}}
        gateway.route(zero=waking([{"name": "r-w", "url": echo.url}]))
        response = first.result(timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["X-PrimeHub-Predictor"] == "sleepy"
    assert response.headers["X-Backend"] == "W"
    assert held(gateway)["held"] == {}


def test_a_full_hold_and_a_wait_that_runs_out_answer_503_with_retry_after(
    holding_gateway: Gateway,
) -> None:
    gateway = holding_gateway
    gateway.route(zero=waking([]))
    url = gateway.endpoint("zero", "/api/v1.0/predictions")
    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(requests.post, url, json={}, timeout=30) for _ in range(2)]
        wait_until_sync(lambda: held(gateway)["held"] == {"zero": {"sleepy": 2}}, "two held")
        full = requests.post(url, json={}, timeout=30)  # the queue holds two
        timed_out = [f.result(timeout=30) for f in waiting]
    assert full.status_code == 503
    assert full.headers["Retry-After"] == "5"
    assert full.headers["X-PrimeHub-Predictor"] == "sleepy"
    assert "waking up" in full.json()["message"] and "2 requests already wait" in full.text
    for response in timed_out:
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert "no replica was ready within 3 s" in response.json()["message"]


def test_a_predictor_that_does_not_wake_is_not_held(holding_gateway: Gateway) -> None:
    gateway = holding_gateway
    gateway.route(zero=waking([], hold=False))
    response = requests.post(gateway.endpoint("zero", "/api/v1.0/predictions"), json={}, timeout=30)
    assert response.status_code == 503
    assert "waking" not in response.text and held(gateway)["held"] == {}


def test_a_bad_hold_flag_or_poll_query_is_refused(holding_gateway: Gateway) -> None:
    gateway = holding_gateway
    entry = waking([])
    entry["predictors"][0]["hold"] = "yes"
    answer = gateway.put_routes({"deployments": {"zero": entry}}).json()
    assert "predictors[0].hold must be true or false" in answer["rejected"]["zero"]
    bad = requests.get(
        f"{gateway.url}/_primehub/holds?after=x&wait=1", headers=gateway.admin(), timeout=10
    )
    assert bad.status_code == 400 and "after=" in bad.json()["message"]


def test_a_shadow_at_zero_is_never_waited_for_but_its_dropped_copy_is_counted(
    holding_gateway: Gateway, echo: Backend
) -> None:
    gateway = holding_gateway
    entry = waking([{"name": "r-w", "url": echo.url}])
    entry["predictors"][0]["hold"] = False
    entry["predictors"].append(
        {"name": "mirror", "shadow": True, "phase": "ScaledToZero", "replicas": [], "hold": True}
    )
    gateway.route(zero=entry)
    response = requests.post(gateway.endpoint("zero", "/api/v1.0/predictions"), json={}, timeout=30)
    assert response.status_code == 200 and response.headers["X-PrimeHub-Predictor"] == "sleepy"
    load = requests.get(f"{gateway.url}/_primehub/load", headers=gateway.admin(), timeout=10)
    mirror = load.json()["deployments"]["zero"]["predictors"]["mirror"]
    assert mirror["shadowDropped"] == 1 and mirror["held"] == 0
