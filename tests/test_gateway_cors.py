"""Browser calls to endpoints from another origin (the service catalog's Swagger UI): CORS."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import bcrypt
import pytest
import requests

from .gateway_backends import Backend, Gateway, start_backend, start_gateway, stop

ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(24)
TOKEN = "tok-" + secrets.token_urlsafe(24)
HASH = bcrypt.hashpw(TOKEN.encode(), bcrypt.gensalt(rounds=4)).decode()
ORIGIN = {"Origin": "http://127.0.0.1:8888"}


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Backend]]:
    gateway = start_gateway(tmp_path_factory.mktemp("gateway"), ADMIN_TOKEN)
    backend = start_backend("A")
    replicas = [{"name": "r-a", "url": backend.url}]
    route = {"phase": "Deployed", "message": "", "replicas": replicas}
    gateway.route(
        pub={**route, "accessType": "public"},
        priv={**route, "accessType": "private", "clients": {"alice": HASH}},
    )
    yield gateway, backend
    backend.kill()
    stop(gateway.process)


@pytest.mark.parametrize("dep", ["pub", "priv"])
def test_preflight_is_answered_without_credentials(routed, dep: str) -> None:
    gateway, _ = routed
    headers = {
        **ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    answer = requests.options(gateway.endpoint(dep, "/api/v1.0/predictions"), headers=headers)
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    allowed = answer.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    # Never the browser's own credentials: "*" and no Allow-Credentials.
    assert "Access-Control-Allow-Credentials" not in answer.headers


def test_answers_carry_allow_origin_and_private_still_needs_a_token(routed) -> None:
    gateway, _ = routed
    public = requests.post(gateway.endpoint("pub", "/api/v1.0/predictions"), headers=ORIGIN)
    assert public.status_code == 200
    assert public.headers["Access-Control-Allow-Origin"] == "*"
    url = gateway.endpoint("priv", "/api/v1.0/predictions")
    refused = requests.post(url, headers=ORIGIN)
    assert refused.status_code == 401  # readable by the page, so Swagger UI can say why
    assert refused.headers["Access-Control-Allow-Origin"] == "*"
    allowed = requests.post(url, headers=ORIGIN, auth=("alice", TOKEN))
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "*"
    # An OPTIONS that is not a preflight is forwarded like any request (and needs credentials).
    assert requests.options(url, headers=ORIGIN).status_code == 401
