"""The whole journey through the REST API on the embedded engine, with real processes and HTTP."""

from __future__ import annotations

import asyncio

import numpy as np
import requests

from .conftest import RequestLoop, spec


async def test_deploy_update_stop_start_delete(api, bundles, models, iris):
    X, _ = iris
    rows = X[:5].tolist()
    created = await api.ok("POST", "deployments", {"spec": spec(bundles["v1"], replicas=2)})
    deployment_id = created["id"]
    assert created["status"]["phase"] == "Deploying"
    assert deployment_id.startswith("iris-classifier-")

    deployed = await api.wait_phase(deployment_id, "Deployed")
    assert deployed["status"]["availableReplicas"] == 2
    endpoint = deployed["status"]["endpoint"]
    assert endpoint.endswith(f"/deployment/{deployment_id}/api/v1.0/predictions")
    # "Run an Example" can use the request recorded in the bundle: it suits this model.
    from primehub_jupyter.serving.bundle import load_bundle

    sample = deployed["status"]["sampleRequest"]
    assert sample == load_bundle(bundles["v1"]).sample.request
    assert len(sample["data"]["ndarray"][0]) == 4

    # The endpoint answers over real HTTP with the model's own predictions.
    response = await asyncio.to_thread(requests.post, endpoint, json={"data": {"ndarray": rows}})
    assert response.status_code == 200, response.text
    got = np.array(response.json()["data"]["ndarray"])
    np.testing.assert_allclose(got, models["v1"].predict_proba(X[:5]), rtol=1e-9)

    # Rolling update to the second model while a bounded request loop runs: nothing fails.
    payload = {"data": {"ndarray": rows[:1]}}
    with RequestLoop(endpoint, payload, concurrency=4, max_requests=4000) as loop:
        await asyncio.sleep(0.5)
        await api.ok(
            "PATCH",
            f"deployments/{deployment_id}",
            {"spec": {"predictors": [{"modelURI": str(bundles["v2"])}], "updateMessage": "v2"}},
        )
        await api.wait_phase(deployment_id, "Deployed")
        # Let the old replicas drain and stop while traffic continues.
        await asyncio.sleep(2.0)
    assert loop.count > 50, "the loop must have run during the update"
    assert loop.errors == [], loop.errors[:5]
    v1 = models["v1"].predict_proba(X[:1])[0]
    v2 = models["v2"].predict_proba(X[:1])[0]
    seen = {tuple(np.round(b["data"]["ndarray"][0], 9)) for b in loop.bodies}
    assert tuple(np.round(v1, 9)) in seen and tuple(np.round(v2, 9)) in seen
    response = await asyncio.to_thread(requests.post, endpoint, json={"data": {"ndarray": rows}})
    np.testing.assert_allclose(
        np.array(response.json()["data"]["ndarray"]), models["v2"].predict_proba(X[:5])
    )

    history = (await api.ok("GET", f"deployments/{deployment_id}/history"))["history"]
    assert [h["revision"] for h in history] == [2, 1]
    assert history[0]["updateMessage"] == "v2"
    assert history[0]["user"] == "alice"
    assert history[0]["spec"]["predictors"][0]["modelURI"] == str(bundles["v2"])
    assert history[1]["spec"]["predictors"][0]["modelURI"] == str(bundles["v1"])
    entry = await api.ok("GET", f"deployments/{deployment_id}/history/1")
    assert entry["spec"]["predictors"][0]["replicas"] == 2

    # Logs: per replica, UTC timestamps, newest last.
    logs = await api.ok("GET", f"deployments/{deployment_id}/logs", format="json")
    assert len([r for r in logs["replicas"]]) >= 2
    assert any("POST /api/v1.0/predictions 200" in line for line in logs["lines"])
    assert all(line[:4].isdigit() and line[23] == "Z" for line in logs["lines"])

    stopped = await api.ok("POST", f"deployments/{deployment_id}/stop")
    assert stopped["status"]["phase"] in ("Stopping", "Stopped")
    await api.wait_phase(deployment_id, "Stopped")
    response = await asyncio.to_thread(requests.post, endpoint, json={"data": {"ndarray": rows}})
    assert response.status_code == 503
    assert "Stopped" in response.json()["message"]

    await api.ok("POST", f"deployments/{deployment_id}/start")
    restarted = await api.wait_phase(deployment_id, "Deployed")
    assert restarted["status"]["availableReplicas"] == 2
    history = (await api.ok("GET", f"deployments/{deployment_id}/history"))["history"]
    assert [h["spec"]["stop"] for h in history[:2]] == [False, True]

    listed = (await api.ok("GET", "deployments"))["deployments"]
    assert [d["id"] for d in listed] == [deployment_id]
    assert "history" not in listed[0]["status"]

    code, _ = await api.call("DELETE", f"deployments/{deployment_id}")
    assert code == 204
    code, body = await api.call("GET", f"deployments/{deployment_id}")
    assert code == 404 and "not found" in body["message"]
    response = await asyncio.to_thread(requests.post, endpoint, json={"data": {"ndarray": rows}})
    assert response.status_code == 404


async def test_openapi_document_is_served_and_valid(api):
    from openapi_spec_validator import validate

    document = await api.ok("GET", "openapi.json")
    validate(document)
    assert document["servers"][0]["url"].endswith("/primehub/api")
    paths = set(document["paths"])
    import re

    from primehub_jupyter.server.handlers import default_handlers

    # Every route the server has is documented.
    routes = set()
    for pattern, _ in default_handlers:
        route = pattern.removeprefix("/primehub/api").rstrip("?").rstrip("/")
        route = route.replace("(?P<deployment_id>[^/]+)", "{id}")
        routes.add(re.sub(r"\(\?P<(\w+)>[^)]+\)", r"{\1}", route))
    assert routes == paths
    assert paths - routes == set()
    assert "/deployments/{id}/metrics" in paths and "/deployments/{id}/rollback" in paths
