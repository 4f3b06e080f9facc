"""The local reconciler under the autoscaler: scale to zero, wake, and no name used twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from primehub_jupyter.core.models import Phase, PredictorPhase
from primehub_jupyter.engines.local.autoscaler import Sample
from primehub_jupyter.engines.local.replica import DeploymentState

from ..conftest import wait_until
from .test_reconciler import Harness, answers

KEY = ("zero", "predictor1")


@pytest.fixture
def harness(tmp_path: Path, groups_file: Path, jp_asyncio_loop: Any) -> Iterator[Harness]:
    made = Harness(tmp_path / "data", groups_file)
    jp_asyncio_loop.run_until_complete(made.store.open())
    yield made
    jp_asyncio_loop.run_until_complete(made.close())


def scales_to_zero(bundle: Path) -> dict[str, Any]:
    return {
        "displayName": "Iris at zero",
        "groupName": "default",
        "predictors": [
            {
                "name": "predictor1",
                "instanceType": "cpu-0.5",
                "modelURI": str(bundle),
                "minReplicas": 0,
                "maxReplicas": 2,
                "scaleToZeroAfterSeconds": 10,
            }
        ],
    }


def entry(harness: Harness) -> dict[str, Any]:
    [predictor] = harness.gateway.routes["zero"]["predictors"]
    return predictor


def idle(harness: Harness) -> None:
    """Make the scaler see its idle period pass (the policy itself is tested alone)."""
    scaler = harness.reconciler.autoscaler.scalers[KEY]
    scaler.last_active -= 11
    assert scaler.observe(time.monotonic(), Sample()) == 0


def distinct_names(state: DeploymentState) -> bool:
    names = [r.name for r in state.replicas]
    return len(names) == len(set(names))


async def test_scaled_to_zero_stays_deployed_and_wakes_on_a_held_request(harness, bundles):
    state = await harness.add("zero", scales_to_zero(bundles["v1"]))
    await harness.until(state, Phase.DEPLOYED)
    [first] = state.replicas
    assert entry(harness)["hold"] is True and len(entry(harness)["replicas"]) == 1

    idle(harness)
    await harness.reconciler.tick()
    # Out of the routes at once (drained, then stopped); the predictor is ScaledToZero by
    # policy and the deployment stays Deployed, saying so.
    assert entry(harness)["replicas"] == [] and entry(harness)["hold"] is True
    assert entry(harness)["phase"] == "ScaledToZero"
    pstate = state.predictors["predictor1"]
    assert pstate.phase == PredictorPhase.SCALED_TO_ZERO
    assert state.phase == Phase.DEPLOYED and "scaled to zero" in state.message
    await wait_until(lambda: first.handle is None or first.handle.exit_code() is not None)

    async def gone() -> bool:
        await harness.reconciler.tick()
        return state.replicas == []

    await wait_until(gone, what="the replica stopped")

    scaler = harness.reconciler.autoscaler.scalers[KEY]
    assert scaler.observe(time.monotonic(), Sample(held=1)) == 1
    await harness.reconciler.tick()
    assert pstate.phase == PredictorPhase.WAKING_UP
    assert pstate.message == "waking up from zero replicas; 1 request held"
    assert state.phase == Phase.DEPLOYED

    async def awake() -> bool:
        await harness.reconciler.tick()
        return pstate.phase == PredictorPhase.DEPLOYED

    await wait_until(awake, limit=120, what="awake")
    assert len(entry(harness)["replicas"]) == 1 and not scaler.woke
    assert all(answers(url) for url in harness.gateway.replica_urls("zero"))


async def test_a_wake_while_the_last_replica_stops_never_reuses_its_name(harness, bundles):
    state = await harness.add("zero", scales_to_zero(bundles["v1"]))
    await harness.until(state, Phase.DEPLOYED)
    [first] = state.replicas
    idle(harness)
    await harness.reconciler.tick()  # retired, now stopping
    scaler = harness.reconciler.autoscaler.scalers[KEY]
    assert scaler.observe(time.monotonic(), Sample(held=1)) == 1

    async def awake() -> bool:
        await harness.reconciler.tick()
        assert distinct_names(state)
        return state.predictors["predictor1"].phase == PredictorPhase.DEPLOYED

    await wait_until(awake, limit=120, what="awake again")
    [second] = state.replicas
    assert second is not first and second.handle is not None
    assert first.handle is None or first.handle.exit_code() is not None


async def test_a_predictor_still_loading_is_not_idle(harness, bundles):
    state = await harness.add("zero", scales_to_zero(bundles["v1"]))
    await harness.reconciler.tick()  # the first replica starts loading
    scaler = harness.reconciler.autoscaler.scalers[KEY]
    scaler.last_active -= 11  # as if the model took longer than the idle period to load
    await harness.reconciler.tick()
    # The tick saw no ready replica: idle time starts only once one serves.
    assert scaler.observe(time.monotonic(), Sample()) == 1
    await harness.until(state, Phase.DEPLOYED)
