"""The service catalog through the REST API and the gateway, on the local engine."""

from __future__ import annotations

import asyncio

import requests
from openapi_spec_validator import validate

from .conftest import spec


def _get(url: str, auth: tuple[str, str] | None = None) -> requests.Response:
    return requests.get(url, auth=auth, timeout=30)


async def test_catalog_of_a_private_deployment(api, bundles):
    body = {"spec": spec(bundles["v1"], endpoint={"accessType": "private"})}
    deployment_id = (await api.ok("POST", "deployments", body))["id"]
    deployed = await api.wait_phase(deployment_id, "Deployed")
    endpoint = deployed["status"]["endpoint"].removesuffix("/api/v1.0/predictions")
    me = await api.ok("GET", "me")
    assert endpoint == f"{me['endpointBase']}/deployment/{deployment_id}"

    # Signed in, the user sees the document without a client token; try-it-out goes to the
    # endpoint itself.
    document = await api.ok("GET", f"deployments/{deployment_id}/catalog")
    validate(document)
    assert document["servers"] == [{"url": endpoint}]
    assert document["info"]["title"] == f"Deployment {deployment_id}"
    # Private: Swagger UI's Authorize asks for a client's name and token.
    assert document["security"] == [{"client": []}]
    assert document["components"]["securitySchemes"]["client"]["scheme"] == "basic"
    operation = document["paths"]["/api/v1.0/predictions"]["post"]
    example = operation["requestBody"]["content"]["application/json"]["example"]
    assert example == deployed["status"]["sampleRequest"]

    # At the gateway the catalog is a path like any other: private means a client token.
    for path in ("/api/model/info", "/openapi.json"):
        assert (await asyncio.to_thread(_get, endpoint + path)).status_code == 401
    client = await api.ok("POST", f"deployments/{deployment_id}/clients", {"name": "swagger"})
    auth = ("swagger", client["token"])
    direct = await asyncio.to_thread(_get, endpoint + "/openapi.json", auth)
    assert direct.status_code == 200, direct.text
    # The gateway says where it mounts the deployment: the document's paths hang off it.
    assert direct.json()["servers"] == [{"url": f"/deployment/{deployment_id}"}]
    assert direct.json()["paths"] == document["paths"]

    # The example, sent with the client's credentials as Swagger UI does, is answered.
    answer = await asyncio.to_thread(
        lambda: requests.post(
            endpoint + "/api/v1.0/predictions", json=example, auth=auth, timeout=30
        )
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"]["ndarray"][0]) == 3

    # Stopped: no replica to ask, and the answer says so (503, not a 500).
    await api.ok("POST", f"deployments/{deployment_id}/stop", {})
    await api.wait_phase(deployment_id, "Stopped")
    code, body = await api.call("GET", f"deployments/{deployment_id}/catalog")
    assert code == 503, body
    assert "cannot give its catalog now" in body["message"]


async def test_catalog_of_an_unknown_deployment_is_404(api):
    code, body = await api.call("GET", "deployments/nope-12345/catalog")
    assert code == 404 and "not found" in body["message"]
