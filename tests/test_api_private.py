"""Private endpoints: HTTP Basic with client tokens that are shown once and never again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import requests

from .conftest import RequestLoop, spec, wait_until

PAYLOAD = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}


def _post(url: str, auth: tuple[str, str] | None = None) -> requests.Response:
    return requests.post(url, json=PAYLOAD, auth=auth, timeout=30)


async def test_private_endpoint_with_clients(api, bundles, tmp_path: Path):
    body = {"spec": spec(bundles["v1"], endpoint={"accessType": "private"})}
    deployment_id = (await api.ok("POST", "deployments", body))["id"]
    deployed = await api.wait_phase(deployment_id, "Deployed")
    endpoint = deployed["status"]["endpoint"]

    # No client yet: nobody gets in.
    response = await asyncio.to_thread(_post, endpoint)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")

    code, client = await api.call(
        "POST", f"deployments/{deployment_id}/clients", {"name": "app-one"}
    )
    assert code == 201 and client["name"] == "app-one"
    token = client["token"]
    assert len(token) >= 32

    assert (await asyncio.to_thread(_post, endpoint)).status_code == 401
    assert (await asyncio.to_thread(_post, endpoint, ("app-one", "wrong"))).status_code == 401
    assert (await asyncio.to_thread(_post, endpoint, ("other", token))).status_code == 401
    response = await asyncio.to_thread(_post, endpoint, ("app-one", token))
    assert response.status_code == 200, response.text

    # The model saw who called (X-Forwarded-User), as its access log shows.
    async def logged() -> bool:
        logs = await api.ok("GET", f"deployments/{deployment_id}/logs")
        return "POST /api/v1.0/predictions 200" in logs and "user=app-one" in logs

    await wait_until(logged, what="the access line with the client name")

    # Adding the same name again replaces the token: the old one stops working.
    second = await api.ok("POST", f"deployments/{deployment_id}/clients", {"name": "app-one"})
    assert second["token"] != token
    assert (await asyncio.to_thread(_post, endpoint, ("app-one", token))).status_code == 401
    assert (
        await asyncio.to_thread(_post, endpoint, ("app-one", second["token"]))
    ).status_code == 200

    # The token is in no later API answer and in no log.
    tokens = [token, second["token"]]
    answers = [
        await api.ok("GET", f"deployments/{deployment_id}"),
        await api.ok("GET", "deployments"),
        await api.ok("GET", f"deployments/{deployment_id}/clients"),
        await api.ok("GET", f"deployments/{deployment_id}/history"),
        await api.ok("GET", f"deployments/{deployment_id}/logs", tail="all"),
    ]
    text = json.dumps(answers)
    assert all(t not in text for t in tokens)
    assert (await api.ok("GET", f"deployments/{deployment_id}/clients")) == {
        "clients": [{"name": "app-one"}]
    }
    data_dir = tmp_path / "primehub-data"
    for path in data_dir.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json", ".yaml", ".sqlite3", ""):
            content = path.read_bytes()
            assert all(t.encode() not in content for t in tokens), f"token found in {path}"

    history = (await api.ok("GET", f"deployments/{deployment_id}/history"))["history"]
    assert history[0]["updateMessage"] == "client 'app-one' replaced"
    assert history[1]["updateMessage"] == "client 'app-one' added"

    # Deleting the client locks it out at once.
    code, _ = await api.call("DELETE", f"deployments/{deployment_id}/clients/app-one")
    assert code == 204
    assert (
        await asyncio.to_thread(_post, endpoint, ("app-one", second["token"]))
    ).status_code == 401
    code, body = await api.call("DELETE", f"deployments/{deployment_id}/clients/app-one")
    assert code == 404 and "no client" in body["message"]

    # A signed-in user can still invoke it through the API, without a token.
    answer = await api.ok("POST", f"deployments/{deployment_id}/invoke", PAYLOAD)
    assert len(answer["data"]["ndarray"][0]) == 3


async def test_switching_access_type_drops_no_request(api, bundles):
    deployment_id = (await api.ok("POST", "deployments", {"spec": spec(bundles["v1"])}))["id"]
    endpoint = (await api.wait_phase(deployment_id, "Deployed"))["status"]["endpoint"]
    # Clients can be added before going private, so callers have credentials in advance.
    client = await api.ok("POST", f"deployments/{deployment_id}/clients", {"name": "svc"})
    auth = ("svc", client["token"])
    with RequestLoop(endpoint, PAYLOAD, concurrency=3, max_requests=3000, auth=auth) as loop:
        await wait_until(lambda: loop.count >= 10, what="the request loop to run")
        await api.ok(
            "PATCH",
            f"deployments/{deployment_id}",
            {"spec": {"endpoint": {"accessType": "private"}}},
        )

        async def refused() -> bool:
            return (await asyncio.to_thread(_post, endpoint)).status_code == 401

        await wait_until(refused, what="the endpoint to ask for a token")
        mark = loop.count
        await wait_until(lambda: loop.count > mark + 10, what="traffic while private")
        await api.ok(
            "PATCH",
            f"deployments/{deployment_id}",
            {"spec": {"endpoint": {"accessType": "public"}}},
        )
        mark = loop.count
        await wait_until(lambda: loop.count > mark + 10, what="traffic after going public")
    assert loop.count > 30
    assert loop.errors == [], loop.errors[:3]
    assert (await asyncio.to_thread(_post, endpoint)).status_code == 200
    # No replica was restarted for an access change.
    deployment = await api.ok("GET", f"deployments/{deployment_id}")
    assert all(r["restarts"] == 0 for r in deployment["status"]["replicaStatuses"])
    assert len(deployment["status"]["replicaStatuses"]) == 1


async def test_clients_cannot_be_added_by_update_or_create(api, bundles):
    body = {
        "spec": spec(bundles["v1"], endpoint={"accessType": "private", "clients": [{"name": "x"}]})
    }
    code, error = await api.call("POST", "deployments", body)
    assert code == 422 and "clients are added after creation" in error["message"]
    deployment_id = (await api.ok("POST", "deployments", {"spec": spec(bundles["v1"])}))["id"]
    code, error = await api.call(
        "PATCH",
        f"deployments/{deployment_id}",
        {"spec": {"endpoint": {"clients": [{"name": "x"}]}}},
    )
    assert code == 422 and "use POST .../clients" in error["message"]
    code, error = await api.call(
        "POST", f"deployments/{deployment_id}/clients", {"name": "bad:name"}
    )
    assert code == 422 and "not a valid client name" in error["message"]
