"""The REST journey on the Kubernetes engine: Jupyter server, operator, emulated cluster."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tests.conftest import OWNER

from .harness import JUPYTER, FakeCluster

IMAGE = "registry.example.com/iris:1"


@pytest.fixture
def jp_server_config(
    tmp_path: Path, groups_file: Path, cluster: FakeCluster, operator: Any
) -> dict:
    """The extension with engine_class = KubernetesEngine, talking to the emulated cluster."""
    cluster.sim.images[IMAGE] = "ok"
    return {
        "ServerApp": {
            "jpserver_extensions": {"primehub_jupyter": True},
            "identity_provider_class": "tests.users.NamedTokenIdentityProvider",
        },
        "NamedTokenIdentityProvider": {"users": [OWNER, "bob", "carol", "dave"]},
        "PrimeHubApp": {
            "engine_class": "primehub_jupyter.engines.kubernetes.KubernetesEngine",
            "data_dir": str(tmp_path / "primehub-data"),
            "groups_file": str(groups_file),
            "bcrypt_rounds": 4,
        },
        "KubernetesEngine": {
            "kubeconfig": str(cluster.kubeconfig(tmp_path / "jupyter.kubeconfig", JUPYTER)),
            "service_url_template": f"{cluster.network}/svc/{{name}}",
            "pod_url_template": f"{cluster.network}/pod/{{pod}}",
            "deploy_timeout": 60,
            "delete_wait_seconds": 20,
        },
    }


def spec(**predictor: Any) -> dict[str, Any]:
    return {
        "displayName": "Iris classifier",
        "groupName": "default",
        "predictors": [
            {"instanceType": "cpu-0.5", "replicas": 1, "modelImage": IMAGE, **predictor}
        ],
    }


async def test_journey_on_kubernetes(api, cluster):
    me = await api.ok("GET", "me")
    assert me["engine"] == "KubernetesEngine"

    created = await api.ok("POST", "deployments", {"spec": spec(replicas=2)})
    deployment_id = created["id"]
    assert created["status"]["phase"] == "Deploying" and created["resourceVersion"] == "1"
    assert cluster.find("phdeployments", deployment_id)["spec"]["userName"] == OWNER
    deployed = await api.wait_phase(deployment_id, "Deployed", limit=30)
    assert deployed["status"]["availableReplicas"] == 2
    assert deployed["status"]["endpoint"].endswith(
        f"/deployment/{deployment_id}/api/v1.0/predictions"
    )

    invoked = await api.ok(
        "POST", f"deployments/{deployment_id}/invoke", {"data": {"ndarray": [[1, 2]]}}
    )
    assert invoked["data"]["ndarray"] == [[3.0]] and invoked["meta"]["user"] == OWNER

    # Update: history grows; a stale resourceVersion gets 409, not a lost write.
    updated = await api.ok(
        "PATCH",
        f"deployments/{deployment_id}",
        {
            "spec": {"predictors": [{"replicas": 3}], "updateMessage": "more traffic"},
            "resourceVersion": "1",
        },
    )
    assert updated["resourceVersion"] == "2"
    code, error = await api.call(
        "PATCH",
        f"deployments/{deployment_id}",
        {"spec": {"description": "stale"}, "resourceVersion": "1"},
    )
    assert code == 409 and "stale" in error["message"]
    deployed = await api.wait_phase(deployment_id, "Deployed", limit=30)
    assert deployed["status"]["availableReplicas"] == 3
    history = (await api.ok("GET", f"deployments/{deployment_id}/history"))["history"]
    assert [(h["revision"], h["updateMessage"]) for h in history] == [(2, "more traffic"), (1, "")]
    assert history[1]["spec"]["predictors"][0]["replicas"] == 2

    # Private: clients are bcrypt hashes in a Secret nginx reads; the token is shown once.
    await api.ok(
        "PATCH", f"deployments/{deployment_id}", {"spec": {"endpoint": {"accessType": "private"}}}
    )
    client = await api.ok("POST", f"deployments/{deployment_id}/clients", {"name": "billing"})
    secret = cluster.find("secrets", f"{deployment_id}-clients")
    stored = base64.b64decode(secret["data"]["billing"])
    assert stored.startswith(b"$2y$") and bcrypt.checkpw(client["token"].encode(), stored)
    assert await api.ok("GET", f"deployments/{deployment_id}/clients") == {
        "clients": [{"name": "billing"}]
    }
    await api.wait_phase(deployment_id, "Deployed", limit=30)
    annotations = cluster.find("ingresses", deployment_id)["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-type"] == "basic"
    code, _ = await api.call("DELETE", f"deployments/{deployment_id}/clients/billing")
    assert code == 204
    assert "billing" not in (cluster.find("secrets", f"{deployment_id}-clients").get("data") or {})

    # Logs and replicas come from the pod log API.
    replicas = (await api.ok("GET", f"deployments/{deployment_id}/replicas"))["replicas"]
    assert len(replicas) == 3
    logs = await api.ok("GET", f"deployments/{deployment_id}/logs", format="json")
    assert any(f"user={OWNER}" in line for line in logs["lines"])

    metrics = await api.ok("GET", f"deployments/{deployment_id}/metrics", window="60", step="5")
    assert metrics["deploymentId"] == deployment_id and "requestsPerSecond" in metrics["series"]

    # Stop scales to zero; start brings the replicas back.
    stopped = await api.ok("POST", f"deployments/{deployment_id}/stop")
    assert stopped["status"]["phase"] in ("Stopping", "Stopped")
    await api.wait_phase(deployment_id, "Stopped", limit=30)
    assert cluster.objects("pods", f"primehub.io/phdeployment={deployment_id}") == []
    assert cluster.find("deployments", deployment_id)["spec"]["replicas"] == 0
    await api.ok("POST", f"deployments/{deployment_id}/start")
    restarted = await api.wait_phase(deployment_id, "Deployed", limit=30)
    assert restarted["status"]["availableReplicas"] == 3
    history = (await api.ok("GET", f"deployments/{deployment_id}/history"))["history"]
    assert [h["spec"]["stop"] for h in history[:2]] == [False, True]

    # Delete: the custom resource and every child are gone.
    code, _ = await api.call("DELETE", f"deployments/{deployment_id}")
    assert code == 204
    for plural in ("phdeployments", "deployments", "services", "ingresses"):
        assert cluster.find(plural, deployment_id) is None, plural
    assert cluster.find("secrets", f"{deployment_id}-clients") is None
    assert cluster.objects("pods") == [] and cluster.objects("replicasets") == []
    code, body = await api.call("GET", f"deployments/{deployment_id}")
    assert code == 404 and "not found" in body["message"]
    assert cluster.api.denied == [], "the Jupyter side's Role is too narrow"


async def test_errors_on_kubernetes(api, cluster):
    code, error = await api.call(
        "POST", "deployments", {"spec": spec(modelURI="gs://bucket/model")}
    )
    # modelImage wins when both are set; a URI alone must be one the cluster can fetch.
    assert code == 201
    body = spec()
    body["predictors"][0].pop("modelImage")
    body["predictors"][0]["modelURI"] = "gs://bucket/model"
    code, error = await api.call("POST", "deployments", {"spec": body})
    assert code == 422 and "cannot be used on Kubernetes" in error["message"]
    code, error = await api.call("POST", "deployments", {"id": "taken", "spec": spec()})
    assert code == 201
    code, error = await api.call("POST", "deployments", {"id": "taken", "spec": spec()})
    assert code == 409 and "already taken" in error["message"]
    code, error = await api.call(
        "POST", "deployments", {"spec": {**spec(), "groupName": "research"}}
    )
    assert code == 403 and "not enabled for this group" in error["message"]
