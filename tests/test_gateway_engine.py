"""The gateway behind a real LocalEngine: invoke kept in its deployment, a bad entry isolated."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from typing import Any

import bcrypt
import requests

from primehub_jupyter.engines.local.engine import LocalEngine
from primehub_jupyter.gateway.auth import internal_token

from .conftest import spec, wait_until

PREDICT = "api/v1.0/predictions"
PAYLOAD = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
JSON = {"Content-Type": "application/json"}


def engine_of(jp_serverapp: Any) -> LocalEngine:
    """The running LocalEngine of the test server."""
    engine = jp_serverapp.web_app.settings["primehub_app"].engine
    assert isinstance(engine, LocalEngine)
    return engine


def raw_post(url: str, target: str, headers: dict[str, str]) -> int:
    """POST with the request target exactly as written (clients would remove dot segments)."""
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps(PAYLOAD).encode()
    lines = [f"POST {target} HTTP/1.1", "Host: gw", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in {**headers, **JSON}.items()]
    lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        return response.status


async def invoke_status(api: Any, parts: list[str], params: dict[str, str] | None = None) -> int:
    """POST the payload to pub's invoke route as alice; the status code."""
    response = await api.fetch(
        "primehub",
        "api",
        "deployments",
        "pub",
        *parts,
        method="POST",
        body=json.dumps(PAYLOAD),
        params=params or {},
        headers={"Authorization": "token alice", **JSON},
        raise_error=False,
    )
    return int(response.code)


async def predictions_seen(api: Any, deployment_id: str) -> int:
    """How many predictions the deployment's model answered, from its access log."""
    text = await api.ok("GET", f"deployments/{deployment_id}/logs", tail="all")
    return text.count("POST /api/v1.0/predictions ")


async def test_invoke_cannot_reach_another_groups_private_deployment(
    api, bundles, jp_serverapp
) -> None:
    carol = api.as_user("carol")
    public = {"id": "pub", "spec": spec(bundles["v1"])}
    secret = {
        "id": "secret-b",
        "spec": spec(bundles["v2"], groupName="team-c", endpoint={"accessType": "private"}),
    }
    await api.ok("POST", "deployments", public)
    await carol.ok("POST", "deployments", secret)
    await api.wait_phase("pub", "Deployed")
    await carol.wait_phase("secret-b", "Deployed")
    engine = engine_of(jp_serverapp)

    # Carol may invoke her own deployment; its log counts what its model saw.
    code, _ = await carol.call("POST", f"deployments/secret-b/invoke/{PREDICT}", PAYLOAD)
    assert code == 200
    await wait_until(lambda: predictions_seen(carol, "secret-b"), what="secret-b's first line")
    assert await predictions_seen(carol, "secret-b") == 1

    # Alice (not in team-c) through the REST API: the query and the path forms.
    crafted = [f"../secret-b/{PREDICT}", f"..%2Fsecret-b/{PREDICT}", f"%2e%2e/secret-b/{PREDICT}"]
    for path in crafted:
        assert await invoke_status(api, ["invoke"], {"path": path}) == 400, path
    # In the URL path, tornado decodes '..%2F' into '../' before the handler sees it.
    assert await invoke_status(api, ["invoke", "..%2Fsecret-b", *PREDICT.split("/")]) == 400
    # ... and straight at the engine, whatever the API layer lets through.
    body = json.dumps(PAYLOAD).encode()
    for path in [*crafted, f"./../secret-b/{PREDICT}", f"api/../../secret-b/{PREDICT}"]:
        result = await engine.invoke("pub", path, body, dict(JSON), "alice")
        assert result.status == 400, (path, result.status, result.body)

    # Straight at the gateway with the token the engine uses for pub.
    assert engine._gateway is not None
    gateway_url = engine._gateway.url
    pubs = {
        "X-PrimeHub-Internal-Token": internal_token(engine._gateway.token, "pub"),
        "X-PrimeHub-User": "alice",
    }
    direct = await asyncio.to_thread(
        requests.post, f"{gateway_url}/deployment/secret-b/{PREDICT}", json=PAYLOAD, headers=pubs
    )
    assert direct.status_code == 401
    dotted = f"/deployment/pub/../secret-b/{PREDICT}"
    assert await asyncio.to_thread(raw_post, gateway_url, dotted, pubs) == 400
    # The raw admin token is no internal credential any more.
    admin = {**pubs, "X-PrimeHub-Internal-Token": engine._gateway.token}
    direct = await asyncio.to_thread(
        requests.post, f"{gateway_url}/deployment/secret-b/{PREDICT}", json=PAYLOAD, headers=admin
    )
    assert direct.status_code == 401

    # Pub itself still works through invoke; secret-b's model saw only carol's two calls.
    code, answer = await api.call("POST", f"deployments/pub/invoke/{PREDICT}", PAYLOAD)
    assert code == 200, answer
    code, _ = await carol.call("POST", f"deployments/secret-b/invoke/{PREDICT}", PAYLOAD)
    assert code == 200
    await wait_until(
        lambda: _at_least(predictions_seen(carol, "secret-b"), 2), what="secret-b's second line"
    )
    assert await predictions_seen(carol, "secret-b") == 2


async def _at_least(count: Any, minimum: int) -> bool:
    return await count >= minimum


async def test_a_refused_routing_entry_fails_only_its_deployment(
    api, bundles, jp_serverapp
) -> None:
    await api.ok("POST", "deployments", {"id": "good", "spec": spec(bundles["v1"])})
    private = spec(bundles["v1"], endpoint={"accessType": "private"})
    await api.ok("POST", "deployments", {"id": "bad", "spec": private})
    good = await api.wait_phase("good", "Deployed")
    await api.wait_phase("bad", "Deployed")
    engine = engine_of(jp_serverapp)

    # A client name no validation should ever have let in, as a corrupt store would hold it.
    hashed = bcrypt.hashpw(b"token", bcrypt.gensalt(rounds=4)).decode()
    engine.reconciler.deployments["bad"].client_hashes["ok\n"] = hashed
    engine.kick()
    failed = await api.wait_phase("bad", "Failed")
    message = failed["status"]["message"]
    assert message.startswith("the gateway refused this deployment's routing entry: ")
    assert "client name 'ok\\n'" in message

    # Every other deployment keeps routing, and a new one gets traffic.
    endpoint = good["status"]["endpoint"]
    response = await asyncio.to_thread(requests.post, endpoint, json=PAYLOAD, timeout=30)
    assert response.status_code == 200
    await api.ok("POST", "deployments", {"id": "newer", "spec": spec(bundles["v2"])})
    newer = await api.wait_phase("newer", "Deployed")
    response = await asyncio.to_thread(
        requests.post, newer["status"]["endpoint"], json=PAYLOAD, timeout=30
    )
    assert response.status_code == 200
    assert (await api.ok("GET", "deployments/good"))["status"]["phase"] == "Deployed"
    # The refused deployment is not served without its access rules.
    bad_endpoint = failed["status"]["endpoint"]
    response = await asyncio.to_thread(requests.post, bad_endpoint, json=PAYLOAD, timeout=30)
    assert response.status_code == 503

    # Once the entry is valid again, the deployment comes back.
    del engine.reconciler.deployments["bad"].client_hashes["ok\n"]
    engine.kick()
    await api.wait_phase("bad", "Deployed")
    response = await asyncio.to_thread(requests.post, bad_endpoint, json=PAYLOAD, timeout=30)
    assert response.status_code == 401
