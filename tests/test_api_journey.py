"""The whole journey through the REST API, once per real engine: local processes and Kubernetes.

Local: real replica processes and the gateway over real HTTP. Kubernetes: the Jupyter server's
KubernetesEngine, the operator, and the emulated cluster (tests/kubernetes/harness.py).
The steps are shared; what only one engine's world can show is checked by its `World`.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import numpy as np
import pytest
import requests

from .conftest import OWNER, RequestLoop, spec, wait_until
from .serve_helpers import replica_processes

IMAGE = "registry.example.com/iris:1"


class World:
    """One engine's server configuration, spec and the checks only its world can make."""

    engine = ""
    replicas_after_update = 2

    def server_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return config

    def spec(self, replicas: int) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop what the world started."""


class LocalWorld(World):
    """The embedded engine: iris models in bundles, served by real processes."""

    engine = "LocalEngine"

    def __init__(self, bundles: dict[str, Path], models: dict[str, Any], iris: Any) -> None:
        self.bundles, self.models = bundles, models
        self.X = iris[0]
        self.rows = self.X[:5].tolist()

    def spec(self, replicas: int) -> dict[str, Any]:
        return spec(self.bundles["v1"], replicas=replicas)

    async def deployed(self, api: Any, deployment_id: str, deployed: dict[str, Any]) -> None:
        # "Run an Example" can use the request recorded in the bundle: it suits this model.
        from primehub_jupyter.serving.bundle import load_bundle

        sample = deployed["status"]["sampleRequest"]
        assert sample == load_bundle(self.bundles["v1"]).sample.request
        assert len(sample["data"]["ndarray"][0]) == 4
        # The endpoint answers over real HTTP with the model's own predictions.
        response = await self.post(deployed["status"]["endpoint"])
        assert response.status_code == 200, response.text
        got = np.array(response.json()["data"]["ndarray"])
        np.testing.assert_allclose(got, self.models["v1"].predict_proba(self.X[:5]), rtol=1e-9)
        invoked = await api.ok(
            "POST", f"deployments/{deployment_id}/invoke", {"data": {"ndarray": self.rows}}
        )
        np.testing.assert_allclose(
            np.array(invoked["data"]["ndarray"]), self.models["v1"].predict_proba(self.X[:5])
        )

    async def post(self, url: str, **kw: Any) -> requests.Response:
        payload = {"data": {"ndarray": kw.pop("rows", self.rows)}}
        return await asyncio.to_thread(requests.post, url, json=payload, timeout=60, **kw)

    async def update(self, api: Any, deployment_id: str, version: str) -> dict[str, Any]:
        """Rolling update to the second model while a bounded request loop runs: nothing fails."""
        endpoint = (await api.ok("GET", f"deployments/{deployment_id}"))["status"]["endpoint"]
        payload = {"data": {"ndarray": self.rows[:1]}}
        with RequestLoop(endpoint, payload, concurrency=4, max_requests=4000) as loop:
            await wait_until(lambda: loop.count >= 10, what="the request loop to run")
            updated = await api.ok(
                "PATCH",
                f"deployments/{deployment_id}",
                {
                    "spec": {
                        "predictors": [{"modelURI": str(self.bundles["v2"])}],
                        "updateMessage": "v2",
                    },
                    "resourceVersion": version,
                },
            )
            await api.wait_phase(deployment_id, "Deployed")
            mark = loop.count

            # The old replicas drain and stop while traffic continues.
            async def drained() -> bool:
                processes = await asyncio.to_thread(replica_processes, deployment_id)
                d = await api.ok("GET", f"deployments/{deployment_id}")
                return len(processes) == 2 and len(d["status"]["replicaStatuses"]) == 2

            await wait_until(drained, what="the old replicas to drain and stop")
            await wait_until(lambda: loop.count > mark + 20, what="traffic after the rollout")
        assert loop.count > 50, "the loop must have run during the update"
        assert loop.errors == [], loop.errors[:5]
        v1 = self.models["v1"].predict_proba(self.X[:1])[0]
        v2 = self.models["v2"].predict_proba(self.X[:1])[0]
        seen = {tuple(np.round(b["data"]["ndarray"][0], 9)) for b in loop.bodies}
        assert tuple(np.round(v1, 9)) in seen and tuple(np.round(v2, 9)) in seen
        response = await self.post(endpoint)
        np.testing.assert_allclose(
            np.array(response.json()["data"]["ndarray"]),
            self.models["v2"].predict_proba(self.X[:5]),
        )
        return updated

    async def updated_history(self, api: Any, deployment_id: str, history: list[dict]) -> None:
        assert history[0]["updateMessage"] == "v2"
        assert history[0]["spec"]["predictors"][0]["modelURI"] == str(self.bundles["v2"])
        assert history[1]["spec"]["predictors"][0]["modelURI"] == str(self.bundles["v1"])

    async def private(self, api: Any, deployment_id: str, token: str) -> None:
        endpoint = (await api.ok("GET", f"deployments/{deployment_id}"))["status"]["endpoint"]
        assert (await self.post(endpoint)).status_code == 401
        assert (await self.post(endpoint, auth=("billing", token))).status_code == 200

    async def client_deleted(self, api: Any, deployment_id: str, token: str) -> None:
        endpoint = (await api.ok("GET", f"deployments/{deployment_id}"))["status"]["endpoint"]
        assert (await self.post(endpoint, auth=("billing", token))).status_code == 401

    async def logs(self, replicas: list[str], logs: dict[str, Any]) -> None:
        # Older replicas keep their logs: the two of v1 and the two of v2.
        assert len(replicas) >= 2
        assert any("POST /api/v1.0/predictions 200" in line for line in logs["lines"])

    async def stopped(self, api: Any, deployment_id: str, endpoint: str) -> None:
        response = await self.post(endpoint)
        assert response.status_code == 503
        assert "Stopped" in response.json()["message"]
        assert await asyncio.to_thread(replica_processes, deployment_id) == []

    async def deleted(self, deployment_id: str, endpoint: str) -> None:
        assert (await self.post(endpoint)).status_code == 404
        assert await asyncio.to_thread(replica_processes, deployment_id) == []


class KubernetesWorld(World):
    """The KubernetesEngine against the emulated cluster, with the operator running."""

    engine = "KubernetesEngine"
    replicas_after_update = 3

    def __init__(self, root: Path, groups_file: Path) -> None:
        from .kubernetes.harness import FakeCluster, OperatorThread, operator_settings

        self.root = root
        self.cluster = FakeCluster(root / "k8s").start()
        self.cluster.sim.images[IMAGE] = "ok"
        try:
            self.operator = OperatorThread(
                self.cluster, groups_file, operator_settings(), root
            ).start()
        except BaseException:
            self.cluster.stop()
            raise

    def close(self) -> None:
        try:
            self.operator.stop()
        finally:
            self.cluster.stop()
        assert self.cluster.api.denied == [], f"RBAC too narrow: {self.cluster.api.denied}"

    def server_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The extension with engine_class = KubernetesEngine, talking to the emulated cluster."""
        from .kubernetes.harness import JUPYTER

        network = self.cluster.network
        config = {k: v for k, v in config.items() if k != "LocalEngine"}
        config["PrimeHubApp"] = {
            **config["PrimeHubApp"],
            "engine_class": "primehub_jupyter.engines.kubernetes.KubernetesEngine",
        }
        config["KubernetesEngine"] = {
            "kubeconfig": str(self.cluster.kubeconfig(self.root / "jupyter.kubeconfig", JUPYTER)),
            "service_url_template": f"{network}/svc/{{name}}",
            "pod_url_template": f"{network}/pod/{{pod}}",
            "deploy_timeout": 60,
            "delete_wait_seconds": 20,
        }
        return config

    def spec(self, replicas: int = 1, **predictor: Any) -> dict[str, Any]:
        return {
            "displayName": "Iris classifier",
            "groupName": "default",
            "predictors": [
                {"instanceType": "cpu-0.5", "replicas": replicas, "modelImage": IMAGE, **predictor}
            ],
        }

    async def deployed(self, api: Any, deployment_id: str, deployed: dict[str, Any]) -> None:
        assert self.cluster.find("phdeployments", deployment_id)["spec"]["userName"] == OWNER
        invoked = await api.ok(
            "POST", f"deployments/{deployment_id}/invoke", {"data": {"ndarray": [[1, 2]]}}
        )
        assert invoked["data"]["ndarray"] == [[3.0]] and invoked["meta"]["user"] == OWNER

    async def update(self, api: Any, deployment_id: str, version: str) -> dict[str, Any]:
        updated = await api.ok(
            "PATCH",
            f"deployments/{deployment_id}",
            {
                "spec": {"predictors": [{"replicas": 3}], "updateMessage": "more traffic"},
                "resourceVersion": version,
            },
        )
        deployed = await api.wait_phase(deployment_id, "Deployed")
        assert deployed["status"]["availableReplicas"] == 3
        return updated

    async def updated_history(self, api: Any, deployment_id: str, history: list[dict]) -> None:
        assert [(h["revision"], h["updateMessage"]) for h in history] == [
            (2, "more traffic"),
            (1, ""),
        ]
        assert history[1]["spec"]["predictors"][0]["replicas"] == 2

    async def private(self, api: Any, deployment_id: str, token: str) -> None:
        # Clients are bcrypt hashes in a Secret nginx reads.
        secret = self.cluster.find("secrets", f"{deployment_id}-clients")
        stored = base64.b64decode(secret["data"]["billing"])
        assert stored.startswith(b"$2y$") and bcrypt.checkpw(token.encode(), stored)
        await api.wait_phase(deployment_id, "Deployed")
        annotations = self.cluster.find("ingresses", deployment_id)["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/auth-type"] == "basic"

    async def client_deleted(self, api: Any, deployment_id: str, token: str) -> None:
        secret = self.cluster.find("secrets", f"{deployment_id}-clients")
        assert "billing" not in (secret.get("data") or {})

    async def logs(self, replicas: list[str], logs: dict[str, Any]) -> None:
        # Logs and replicas come from the pod log API: the three pods that run now.
        assert len(replicas) == 3
        assert any(f"user={OWNER}" in line for line in logs["lines"])

    async def stopped(self, api: Any, deployment_id: str, endpoint: str) -> None:
        assert self.cluster.objects("pods", f"primehub.io/phdeployment={deployment_id}") == []
        # One Deployment per predictor, named <id>-<predictor>, kept at 0 replicas.
        deployment = self.cluster.find("deployments", f"{deployment_id}-predictor1")
        assert deployment["spec"]["replicas"] == 0

    async def deleted(self, deployment_id: str, endpoint: str) -> None:
        # The custom resource and every child are gone.
        selector = f"primehub.io/phdeployment={deployment_id}"
        assert self.cluster.find("phdeployments", deployment_id) is None
        for plural in ("deployments", "services", "ingresses"):
            assert self.cluster.objects(plural, selector) == [], plural
        assert self.cluster.find("secrets", f"{deployment_id}-clients") is None
        assert self.cluster.objects("pods") == [] and self.cluster.objects("replicasets") == []
        assert self.cluster.api.denied == [], "the Jupyter side's Role is too narrow"


@pytest.fixture(params=["local", "kubernetes"])
def world(request, tmp_path: Path, groups_file: Path) -> Iterator[World]:
    if request.param == "local":
        fixtures = ("bundles", "models", "iris")
        made: World = LocalWorld(*(request.getfixturevalue(name) for name in fixtures))
    else:
        made = KubernetesWorld(tmp_path, groups_file)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def jp_server_config(jp_server_config: dict, world: World) -> dict:
    return world.server_config(jp_server_config)


async def test_deploy_update_private_stop_start_delete(api, world: World):
    me = await api.ok("GET", "me")
    assert me["engine"] == world.engine

    created = await api.ok("POST", "deployments", {"spec": world.spec(replicas=2)})
    deployment_id = created["id"]
    assert created["status"]["phase"] == "Deploying" and created["resourceVersion"] == "1"
    assert deployment_id.startswith("iris-classifier-")
    deployed = await api.wait_phase(deployment_id, "Deployed")
    assert deployed["status"]["availableReplicas"] == 2
    endpoint = deployed["status"]["endpoint"]
    assert endpoint.endswith(f"/deployment/{deployment_id}/api/v1.0/predictions")
    await world.deployed(api, deployment_id, deployed)

    # Update: history grows; a stale resourceVersion gets 409, not a lost write.
    updated = await world.update(api, deployment_id, created["resourceVersion"])
    assert updated["resourceVersion"] == "2"
    code, error = await api.call(
        "PATCH",
        f"deployments/{deployment_id}",
        {"spec": {"description": "stale"}, "resourceVersion": "1"},
    )
    assert code == 409 and "stale" in error["message"]
    history = (await api.ok("GET", f"deployments/{deployment_id}/history"))["history"]
    assert [h["revision"] for h in history] == [2, 1]
    assert history[0]["user"] == OWNER
    await world.updated_history(api, deployment_id, history)
    entry = await api.ok("GET", f"deployments/{deployment_id}/history/1")
    assert entry["spec"]["predictors"][0]["replicas"] == 2

    # Private: the token is shown once; only its hash is kept.
    await api.ok(
        "PATCH", f"deployments/{deployment_id}", {"spec": {"endpoint": {"accessType": "private"}}}
    )
    client = await api.ok("POST", f"deployments/{deployment_id}/clients", {"name": "billing"})
    assert await api.ok("GET", f"deployments/{deployment_id}/clients") == {
        "clients": [{"name": "billing"}]
    }
    await world.private(api, deployment_id, client["token"])
    code, _ = await api.call("DELETE", f"deployments/{deployment_id}/clients/billing")
    assert code == 204
    await world.client_deleted(api, deployment_id, client["token"])
    await api.ok(
        "PATCH", f"deployments/{deployment_id}", {"spec": {"endpoint": {"accessType": "public"}}}
    )

    # Logs: per replica, UTC timestamps, newest last.
    replicas = (await api.ok("GET", f"deployments/{deployment_id}/replicas"))["replicas"]
    logs = await api.ok("GET", f"deployments/{deployment_id}/logs", format="json")
    assert len(logs["replicas"]) >= 2
    timestamped = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
    assert all(timestamped.match(line) for line in logs["lines"]), logs["lines"][:5]
    await world.logs(replicas, logs)

    metrics = await api.ok("GET", f"deployments/{deployment_id}/metrics", window="60", step="5")
    assert metrics["deploymentId"] == deployment_id and "requestsPerSecond" in metrics["series"]

    # Stop: the replicas go away, the spec stays; start brings them back.
    stopped = await api.ok("POST", f"deployments/{deployment_id}/stop")
    assert stopped["status"]["phase"] in ("Stopping", "Stopped")
    await api.wait_phase(deployment_id, "Stopped")
    await world.stopped(api, deployment_id, endpoint)
    await api.ok("POST", f"deployments/{deployment_id}/start")
    restarted = await api.wait_phase(deployment_id, "Deployed")
    assert restarted["status"]["availableReplicas"] == world.replicas_after_update
    history = (await api.ok("GET", f"deployments/{deployment_id}/history"))["history"]
    assert [h["spec"]["stop"] for h in history[:2]] == [False, True]

    listed = (await api.ok("GET", "deployments"))["deployments"]
    assert [d["id"] for d in listed] == [deployment_id]
    assert "history" not in listed[0]["status"]

    code, _ = await api.call("DELETE", f"deployments/{deployment_id}")
    assert code == 204
    code, body = await api.call("GET", f"deployments/{deployment_id}")
    assert code == 404 and "not found" in body["message"]
    await world.deleted(deployment_id, endpoint)


@pytest.mark.parametrize("world", ["kubernetes"], indirect=True)
async def test_errors_on_kubernetes(api, world: KubernetesWorld):
    code, error = await api.call(
        "POST", "deployments", {"spec": world.spec(modelURI="gs://bucket/model")}
    )
    # modelImage wins when both are set; a URI alone must be one the cluster can fetch.
    assert code == 201
    body = world.spec()
    body["predictors"][0].pop("modelImage")
    body["predictors"][0]["modelURI"] = "gs://bucket/model"
    code, error = await api.call("POST", "deployments", {"spec": body})
    assert code == 422 and "cannot be used on Kubernetes" in error["message"]
    code, error = await api.call("POST", "deployments", {"id": "taken", "spec": world.spec()})
    assert code == 201
    code, error = await api.call("POST", "deployments", {"id": "taken", "spec": world.spec()})
    assert code == 409 and "already taken" in error["message"]
    code, error = await api.call(
        "POST", "deployments", {"spec": {**world.spec(), "groupName": "research"}}
    )
    assert code == 403 and "not enabled for this group" in error["message"]


@pytest.mark.parametrize("world", ["local"], indirect=True)
async def test_openapi_document_is_served_and_valid(api, world: World):
    from openapi_spec_validator import validate

    from primehub_jupyter.server.handlers import default_handlers

    document = await api.ok("GET", "openapi.json")
    validate(document)
    assert document["servers"][0]["url"].endswith("/primehub/api")
    paths = set(document["paths"])

    # Every route the server has is documented.
    routes = set()
    for pattern, _ in default_handlers:
        route = pattern.removeprefix("/primehub/api").rstrip("?").rstrip("/")
        route = route.replace("(?P<deployment_id>[^/]+)", "{id}")
        routes.add(re.sub(r"\(\?P<(\w+)>[^)]+\)", r"{\1}", route))
    assert routes == paths
    assert paths - routes == set()
    assert "/deployments/{id}/metrics" in paths and "/deployments/{id}/rollback" in paths
