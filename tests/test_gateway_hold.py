"""Held requests: the gateway's waiting room for predictors at zero replicas."""

from __future__ import annotations

import asyncio

import pytest

from primehub_jupyter.gateway.hold import HoldFull, Holds

KEY = ("iris", "predictor1")


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
