"""Canary, A/B and shadow on the local engine: real model servers behind the real gateway."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from primehub_jupyter.engines.local.engine import LocalEngine
from primehub_jupyter.engines.local.launcher import SHADOW_NICENESS

from .conftest import RequestLoop, wait_until
from .serve_helpers import replica_processes

PAYLOAD = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
PREDICTOR = "X-PrimeHub-Predictor"


@pytest.fixture
def engine_config() -> dict[str, Any]:
    return {"drain_seconds": 0.5, "stop_grace_seconds": 5.0, "metrics_interval": 0.5}


def engine_of(jp_serverapp: Any) -> LocalEngine:
    engine = jp_serverapp.web_app.settings["primehub_app"].engine
    assert isinstance(engine, LocalEngine)
    return engine


def predictor(name: str, bundle: Path, **fields: Any) -> dict[str, Any]:
    return {"name": name, "instanceType": "cpu-0.5", "modelURI": str(bundle), **fields}


def ab_spec(bundles: dict[str, Path]) -> dict[str, Any]:
    return {
        "displayName": "Iris A/B",
        "groupName": "default",
        "routing": {"stickyHeader": "X-User"},
        "predictors": [
            predictor("v1", bundles["v1"], traffic=50),
            predictor("v2", bundles["v2"], traffic=50),
            predictor("mirror", bundles["v1"], shadow=True),
        ],
    }


async def test_predictors_split_stick_mirror_and_join_feedback(api, bundles, jp_serverapp):
    created = await api.ok("POST", "deployments", {"id": "ab", "spec": ab_spec(bundles)})
    assert created["id"] == "ab"
    deployed = await api.wait_phase("ab", "Deployed")
    status = deployed["status"]
    assert [(p["name"], p["traffic"], p["shadow"]) for p in status["predictors"]] == [
        ("v1", 50, False),
        ("v2", 50, False),
        ("mirror", 0, True),
    ]
    assert all(p["availableReplicas"] == 1 for p in status["predictors"])
    # The shadow's model server runs at a lower CPU priority than the answering ones.
    niceness = {}
    for process in replica_processes("ab"):
        cmdline = process.cmdline()
        niceness[cmdline[cmdline.index("--predictor") + 1]] = process.nice()
    assert niceness == {"v1": 0, "v2": 0, "mirror": SHADOW_NICENESS}, niceness
    by_predictor = {r["predictor"]: r["name"] for r in status["replicaStatuses"]}
    assert set(by_predictor) == {"v1", "v2", "mirror"}
    assert all(name.startswith(f"ab-{p}-") for p, name in by_predictor.items())
    endpoint = status["endpoint"]

    def traffic() -> list[tuple[str, dict[str, Any]]]:
        answers = []
        with requests.Session() as session:
            for _ in range(20):
                answer = session.post(endpoint, json=PAYLOAD, timeout=30)
                assert answer.status_code == 200
                answers.append((answer.headers[PREDICTOR], answer.json()))
            for user in ("ann", "ben", "cid"):
                seen = {
                    session.post(
                        endpoint, json=PAYLOAD, headers={"X-User": user}, timeout=30
                    ).headers[PREDICTOR]
                    for _ in range(4)
                }
                assert len(seen) == 1, (user, seen)
        return answers

    answers = await asyncio.to_thread(traffic)
    split = Counter(name for name, _ in answers)
    assert split == {"v1": 10, "v2": 10}  # exact over every hundred, even over twenty

    def feedback() -> None:
        url = endpoint.replace("/predictions", "/feedback")
        with requests.Session() as session:
            for name, answer in answers:
                body = {"response": answer, "reward": 1.0 if name == "v1" else 0.0}
                sent = session.post(url, json=body, timeout=30)
                assert sent.status_code == 200 and sent.headers[PREDICTOR] == name

    await asyncio.to_thread(feedback)
    engine = engine_of(jp_serverapp)

    async def compared() -> Any:
        counters = {c.name: c for c in await engine.predictor_counters("ab")}
        return counters if counters["mirror"].compared == 32 else None

    counters = await wait_until(compared, what="the shadow's comparisons")
    assert list(counters) == ["v1", "v2", "mirror"]
    v1, v2, mirror = counters["v1"], counters["v2"], counters["mirror"]
    assert v1.feedback == 10 and v1.reward_sum == 10.0 and v1.successes == 10
    assert v2.feedback == 10 and v2.reward_sum == 0.0 and v2.successes == 0
    assert v1.requests + v2.requests == 32 and v1.errors == v2.errors == 0
    # The shadow serves v1's model: it agrees with v1's answers at least.
    assert mirror.shadow and mirror.requests == 32 and mirror.differed <= v2.requests

    # Logs and metrics per replica, whichever predictor it serves.
    for name in by_predictor.values():
        text = await api.ok("GET", "deployments/ab/logs", replica=name, tail="all")
        assert "POST /api/v1.0/predictions" in text, name
    report = await wait_until(
        lambda: _metrics_with(api, 32), what="the predictions in the metrics report"
    )
    assert set(report["replicas"]) == set(by_predictor.values())

    # The REST API's invoke passes the predictor header on.
    invoked = await api.fetch(
        "primehub",
        "api",
        "deployments",
        "ab",
        "invoke",
        method="POST",
        body=json.dumps(PAYLOAD),
        headers={"Authorization": "token alice", "Content-Type": "application/json"},
    )
    assert invoked.code == 200 and invoked.headers[PREDICTOR] in ("v1", "v2")


async def _metrics_with(api: Any, predictions: int) -> dict | None:
    found = await api.ok("GET", "deployments/ab/metrics", window="60", step="1")
    return found if found["totals"]["predictRequests"] >= predictions else None


async def test_a_weight_change_under_load_restarts_nothing_and_drops_nothing(api, bundles):
    spec = ab_spec(bundles)
    spec["predictors"] = spec["predictors"][:2]
    spec.pop("routing")
    await api.ok("POST", "deployments", {"id": "shift", "spec": spec})
    before = (await api.wait_phase("shift", "Deployed"))["status"]["replicaStatuses"]
    endpoint = (await api.ok("GET", "deployments/shift"))["status"]["endpoint"]
    with RequestLoop(endpoint, PAYLOAD, concurrency=4, max_requests=3000) as loop:
        await wait_until(lambda: loop.count >= 40, what="load before the change")
        await api.ok(
            "PATCH",
            "deployments/shift",
            {
                "spec": {
                    "predictors": [{"name": "v1", "traffic": 100}, {"name": "v2", "traffic": 0}]
                }
            },
        )
        seen = loop.count
        await wait_until(lambda: loop.count >= seen + 40, what="load after the change")
    assert loop.errors == [] and set(loop.statuses) == {200}
    after = (await api.ok("GET", "deployments/shift"))["status"]
    assert after["phase"] == "Deployed"
    # The same processes: names and start times unchanged, no restart.
    key = [(r["name"], r["startTime"], r["restarts"]) for r in before]
    assert [(r["name"], r["startTime"], r["restarts"]) for r in after["replicaStatuses"]] == key
    assert [p["traffic"] for p in after["predictors"]] == [100, 0]
    answers = [requests.post(endpoint, json=PAYLOAD, timeout=30) for _ in range(10)]
    assert {a.headers[PREDICTOR] for a in answers} == {"v1"}

    await api.ok("PATCH", "deployments/shift", {"spec": {"stop": True}})
    stopped = await api.wait_phase("shift", "Stopped")
    assert [p["phase"] for p in stopped["status"]["predictors"]] == ["Stopped", "Stopped"]
    assert all(p["availableReplicas"] == 0 for p in stopped["status"]["predictors"])


async def test_check_spec_names_the_predictor_at_fault(api, bundles, tmp_path):
    spec = ab_spec(bundles)
    spec["predictors"][1]["modelURI"] = str(tmp_path / "missing")
    code, body = await api.call("POST", "deployments", {"spec": spec})
    assert code == 422, body
    assert body["details"][0]["field"] == "spec.predictors.1.modelURI"
    spec = ab_spec(bundles)
    spec["predictors"][2]["modelURI"] = "s3://bucket/model"
    code, body = await api.call("POST", "deployments", {"spec": spec})
    assert code == 422 and body["details"][0]["field"] == "spec.predictors.2.modelURI"
