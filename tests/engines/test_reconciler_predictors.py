"""The local reconciler with several predictors: replicas, routes and phases per predictor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from primehub_jupyter.core.models import DeploymentSpec, Phase, PredictorPhase

from ..conftest import wait_until
from .test_reconciler import Harness, answers


@pytest.fixture
def harness(tmp_path: Path, groups_file: Path, jp_asyncio_loop: Any) -> Iterator[Harness]:
    made = Harness(tmp_path / "data", groups_file)
    jp_asyncio_loop.run_until_complete(made.store.open())
    yield made
    jp_asyncio_loop.run_until_complete(made.close())


def predictor(name: str, bundle: Path, **fields: Any) -> dict[str, Any]:
    return {"name": name, "instanceType": "cpu-0.5", "modelURI": str(bundle), **fields}


def document(*predictors: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "displayName": "Iris canary",
        "groupName": "default",
        "predictors": list(predictors),
        **top,
    }


def routed(harness: Harness, dep_id: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in harness.gateway.routes[dep_id]["predictors"]}


async def test_each_predictor_runs_its_own_replicas_and_a_weight_change_restarts_none(
    harness, bundles
):
    state = await harness.add(
        "canary",
        document(
            predictor("v1", bundles["v1"], traffic=90, replicas=2),
            predictor("v2", bundles["v2"], traffic=10),
            routing={"stickyHeader": "X-User"},
        ),
    )
    await harness.until(state, Phase.DEPLOYED)
    assert sorted(r.predictor for r in state.replicas) == ["v1", "v1", "v2"]
    assert all(r.name.startswith(f"canary-{r.predictor}-") for r in state.replicas)
    table = harness.gateway.routes["canary"]
    assert table["stickyHeader"] == "X-User"
    assert [(p["name"], p["traffic"], p["shadow"]) for p in table["predictors"]] == [
        ("v1", 90, False),
        ("v2", 10, False),
    ]
    assert len(harness.gateway.replica_urls("canary", "v1")) == 2
    assert all(answers(url) for url in harness.gateway.replica_urls("canary"))
    handles = {r.name: r.handle for r in state.replicas}

    # A weight change is a routing change: the same processes serve with the new weights.
    document_now = state.deployment.spec.to_json()
    document_now["predictors"][0]["traffic"] = 50
    document_now["predictors"][1]["traffic"] = 50
    state.deployment.spec = DeploymentSpec.model_validate(document_now)
    await harness.reconciler.tick()
    assert state.phase == Phase.DEPLOYED
    assert {r.name: r.handle for r in state.replicas} == handles
    assert [p["traffic"] for p in harness.gateway.routes["canary"]["predictors"]] == [50, 50]
    assert all(r.handle is not None and r.handle.exit_code() is None for r in state.replicas)

    # Promoting v1 removes v2: its replica leaves the routes, then stops; v1's stay.
    promoted = state.deployment.spec.to_json()
    promoted["predictors"] = [{**promoted["predictors"][0], "traffic": 100}]
    state.deployment.spec = DeploymentSpec.model_validate(promoted)
    await harness.reconciler.tick()
    assert list(routed(harness, "canary")) == ["v1"]
    [v2] = [h for name, h in handles.items() if "-v2-" in name]
    await wait_until(lambda: v2 is not None and v2.exit_code() is not None, what="v2 stopped")
    assert all(h is not None and h.exit_code() is None for n, h in handles.items() if "-v1-" in n)
    assert list(state.predictors) == ["v1"]


async def test_a_broken_shadow_is_told_but_the_deployment_serves(harness, bundles):
    state = await harness.add(
        "shadowed",
        document(
            predictor("main", bundles["v1"]),
            predictor("mirror", bundles["broken"], shadow=True),
        ),
    )

    async def settled() -> bool:
        await harness.reconciler.tick()
        return state.predictors["mirror"].phase == PredictorPhase.FAILED

    await wait_until(settled, limit=120, what="the shadow failed")
    await harness.until(state, Phase.DEPLOYED)
    assert state.message.startswith("shadow predictor mirror: ")
    assert state.predictors["main"].phase == PredictorPhase.DEPLOYED
    table = routed(harness, "shadowed")
    assert table["mirror"]["shadow"] and table["mirror"]["replicas"] == []
    assert table["mirror"]["phase"] == "Failed" and table["main"]["traffic"] == 100


async def test_a_broken_canary_with_traffic_fails_the_deployment(harness, bundles):
    state = await harness.add(
        "bad-canary",
        document(
            predictor("v1", bundles["v1"], traffic=80),
            predictor("v2", bundles["broken"], traffic=20),
        ),
    )
    await harness.until(state, Phase.FAILED)
    assert state.message.startswith("predictor v2: ")

    # The healthy predictor keeps its route: its share of requests is still answered.
    async def v1_routed() -> list[str]:
        await harness.reconciler.tick()
        return harness.gateway.replica_urls("bad-canary", "v1")

    await wait_until(v1_routed, what="v1 routed")
    assert state.phase == Phase.FAILED
    assert harness.gateway.replica_urls("bad-canary", "v2") == []


async def test_wanted_replicas_is_the_fixed_count_or_the_lower_bound(harness, bundles):
    spec = DeploymentSpec.model_validate(
        document(
            predictor("fixed", bundles["v1"], traffic=50, replicas=3),
            predictor("auto", bundles["v1"], traffic=30, minReplicas=2, maxReplicas=4),
            predictor("zero", bundles["v1"], traffic=20, minReplicas=0, maxReplicas=2),
        )
    )
    state = await harness.add("counts", spec.to_json())
    wanted = [harness.reconciler.wanted_replicas(state, p) for p in spec.predictors]
    assert wanted == [3, 2, 1]
