"""Bearer JWTs end to end: the server's jwt_* settings, the local engine's gateway, policies."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import spec, wait_until
from .jwt_helpers import AUDIENCE, ISSUER, Issuer, ec_key, rsa_key
from .serve_helpers import Serve, gateway_process

PAYLOAD = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    made = Issuer()
    made.add("rsa-1", rsa_key())
    made.add("ec-1", ec_key())
    return made


@pytest.fixture
def jwks_file(tmp_path: Path, issuer: Issuer) -> Path:
    path = tmp_path / "jwks.json"
    issuer.write(path)
    return path


@pytest.fixture
def jp_server_config(jp_server_config: dict, jwks_file: Path) -> dict:
    jp_server_config["PrimeHubApp"].update(
        {"jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "jwt_jwks": str(jwks_file)}
    )
    return jp_server_config


def _post(url: str, token: str | None = None, auth: Any = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url, json=PAYLOAD, headers=headers, auth=auth, timeout=30)


async def test_policy_naming_unknown_groups_is_refused(api, bundles) -> None:
    endpoint = {"accessType": "private", "policy": {"groups": ["default", "nope", "ghosts"]}}
    code, body = await api.call(
        "POST", "deployments", {"spec": {**spec(bundles["v1"], endpoint=endpoint), "stop": True}}
    )
    assert code == 422, body
    assert "nope, ghosts" in body["message"]
    assert body["details"][0]["field"] == "spec.endpoint.policy.groups"
    endpoint["policy"] = {"groups": ["default", "team-c"], "users": ["someone@example.com"]}
    created = await api.ok(
        "POST", "deployments", {"spec": {**spec(bundles["v1"], endpoint=endpoint), "stop": True}}
    )
    patch = {"spec": {"endpoint": {"policy": {"groups": ["missing"]}}}}
    code, body = await api.call("PATCH", f"deployments/{created['id']}", patch)
    assert code == 422 and "missing" in body["message"], body
    patch = {"spec": {"endpoint": {"policy": {"groups": ["small"]}}}}
    updated = await api.ok("PATCH", f"deployments/{created['id']}", patch)
    assert updated["spec"]["endpoint"]["policy"]["groups"] == ["small"]


async def test_bearer_tokens_reach_a_private_deployment(
    api, bundles, issuer: Issuer, tmp_path: Path
) -> None:
    body = {"spec": spec(bundles["v1"], endpoint={"accessType": "private"})}
    deployment_id = (await api.ok("POST", "deployments", body))["id"]
    deployed = await api.wait_phase(deployment_id, "Deployed")
    endpoint = deployed["status"]["endpoint"]

    # Group 'default' by its Keycloak path: admitted, and the model sees the token's user.
    member = issuer.token(groups=["/default"], preferred_username="alice")
    response = await asyncio.to_thread(_post, endpoint, member)
    assert response.status_code == 200, response.text

    async def logged() -> bool:
        logs = await api.ok("GET", f"deployments/{deployment_id}/logs")
        return "POST /api/v1.0/predictions 200" in logs and "user=alice" in logs

    await wait_until(logged, what="the model's access line naming the token's user")

    outsider = await asyncio.to_thread(_post, endpoint, issuer.token("ec-1", groups=["/team-c"]))
    assert outsider.status_code == 403
    expired = await asyncio.to_thread(_post, endpoint, issuer.token(exp=1, iat=0, nbf=0))
    assert expired.status_code == 401
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]

    # A policy replaces the group rule; the gateway gets it with the next routes push.
    patch = {"spec": {"endpoint": {"policy": {"users": ["dave"]}}}}
    await api.ok("PATCH", f"deployments/{deployment_id}", patch)
    dave = issuer.token(preferred_username="dave", groups=[])

    async def dave_admitted() -> bool:
        return (await asyncio.to_thread(_post, endpoint, dave)).status_code == 200

    await wait_until(dave_admitted, what="the policy to reach the gateway")
    assert (await asyncio.to_thread(_post, endpoint, member)).status_code == 403

    # Basic clients keep working beside bearer tokens.
    client = await api.ok("POST", f"deployments/{deployment_id}/clients", {"name": "app"})
    basic = await asyncio.to_thread(_post, endpoint, None, ("app", client["token"]))
    assert basic.status_code == 200, basic.text

    # No bearer token in any file of the data dir (logs, state, the gateway's settings).
    data_dir = tmp_path / "primehub-data"
    for path in data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(t.encode() in content for t in issuer.minted), f"token in {path}"
    settings = json.loads(next(data_dir.rglob("gateway/jwt.json")).read_text())
    assert settings["issuer"] == ISSUER and settings["jwks"].endswith("jwks.json")


def test_serve_takes_jwt_settings_on_its_command_line(tmp_path: Path, jwks_file: Path) -> None:
    data_dir = tmp_path / "data"
    jwt_args = (
        f"--PrimeHubApp.jwt_issuer={ISSUER}",
        f"--PrimeHubApp.jwt_audience={AUDIENCE}",
        f"--PrimeHubApp.jwt_jwks={jwks_file}",
    )
    server = Serve(data_dir, tmp_path / "serve.log")
    try:
        server.start()
        server.ok("GET", "deployments")  # the engine (and its gateway) are up
        before = gateway_process(data_dir)
        assert before is not None and "--jwt-config" not in before.cmdline()
        # A crash leaves the gateway running; a server started with other JWT settings must
        # not adopt it, but start one that has them.
        server.kill()
        server.extra = list(jwt_args)
        server.start()
        server.ok("GET", "deployments")
        gateway = gateway_process(data_dir)
        assert gateway is not None and gateway.pid != before.pid
        argv = gateway.cmdline()
        config = Path(argv[argv.index("--jwt-config") + 1])
        assert json.loads(config.read_text())["audience"] == AUDIENCE
        assert ISSUER not in " ".join(argv)  # settings travel in the file, not on argv
        # The same settings again: the running gateway is adopted.
        server.kill()
        server.start()
        server.ok("GET", "deployments")
        adopted = gateway_process(data_dir)
        assert adopted is not None and adopted.pid == gateway.pid
    finally:
        server.cleanup()
