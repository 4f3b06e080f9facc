"""Bearer JWTs at the edge: the Ingress's external auth, the shared oauth2-proxy, the operator."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from click.testing import CliRunner

from primehub_jupyter.core.access import JwtSettings
from primehub_jupyter.core.errors import ValidationError
from primehub_jupyter.engines.kubernetes import edgeauth, routing
from primehub_jupyter.engines.kubernetes.engine import KubernetesEngine
from primehub_jupyter.engines.kubernetes.operator_cli import operator_command
from primehub_jupyter.engines.kubernetes.settings import DEFAULT_JWT_PROXY_IMAGE, OperatorSettings

from .conftest import phdeployment
from .test_manifests import CR, SETTINGS, spec, validate_k8s

NGINX = "nginx.ingress.kubernetes.io"
IMAGE = "registry.example.com/iris:1"
JWT = {
    "issuer": "https://keycloak.example.com/realms/primehub",
    "audience": "models",
    "jwks": "https://keycloak.example.com/realms/primehub/protocol/openid-connect/certs",
}
WITH_JWT = OperatorSettings.model_validate(
    {**SETTINGS.model_dump(by_alias=True), "namespace": "primehub", "jwt": JWT}
)
FLAGS_FILE = Path(__file__).parent / "schemas" / "oauth2-proxy-flags.txt"
FLAGS = {line.strip() for line in FLAGS_FILE.read_text().splitlines() if line.startswith("--")}


def private(**policy: Any) -> Any:
    endpoint: dict[str, Any] = {"accessType": "private", "clients": [{"name": "app"}]}
    if policy:
        endpoint["policy"] = policy
    return spec(modelImage=IMAGE, endpoint=endpoint)


def main_ingress(deployment_spec: Any, settings: OperatorSettings = WITH_JWT) -> dict[str, Any]:
    ingress = routing.ingress_manifests(CR, deployment_spec, settings)[0]
    validate_k8s(ingress)
    return ingress["metadata"]["annotations"]


def allowed(annotations: dict[str, str]) -> dict[str, list[str]]:
    url = urlsplit(annotations[f"{NGINX}/auth-url"])
    assert (url.scheme, url.netloc, url.path) == (
        "http",
        "primehub-jwt-auth.primehub.svc.cluster.local:4180",
        "/oauth2/auth",
    )
    return {k: v[0].split(",") for k, v in parse_qs(url.query).items()}


# ---- the Ingress ------------------------------------------------------------------------------


def test_private_endpoint_takes_basic_or_bearer_of_the_deployments_group():
    annotations = main_ingress(private())
    # Basic clients as before ...
    assert annotations[f"{NGINX}/auth-type"] == "basic"
    assert annotations[f"{NGINX}/auth-secret"] == "iris-clients"
    # ... or a bearer token oauth2-proxy accepts for a member of the group (bare or Keycloak path).
    assert annotations[f"{NGINX}/satisfy"] == "any"
    assert allowed(annotations) == {"allowed_groups": ["Data_Science", "/Data_Science"]}
    snippet = annotations[f"{NGINX}/configuration-snippet"]
    assert "$upstream_http_x_auth_request_email" in snippet
    assert "X-Forwarded-User $remote_user$primehub_bearer_user" in snippet
    assert 'proxy_set_header Authorization "";' in snippet


def test_policy_groups_or_users_are_rendered_into_the_auth_url():
    assert allowed(main_ingress(private(groups=["team-a", "team-b"]))) == {
        "allowed_groups": ["team-a", "/team-a", "team-b", "/team-b"]
    }
    assert allowed(main_ingress(private(users=["bob", "carol@example.com"]))) == {
        "allowed_emails": ["bob", "carol@example.com"]
    }


def test_canary_and_shadow_ingresses_check_the_same_credentials():
    deployment_spec = spec(
        endpoint={"accessType": "private", "policy": {"groups": ["team-a"]}},
        modelImage=IMAGE,
    )
    two = deployment_spec.model_copy(
        update={
            "predictors": [
                deployment_spec.predictor.model_copy(update={"name": "a", "traffic": 100}),
                deployment_spec.predictor.model_copy(update={"name": "s", "shadow": True}),
            ]
        }
    )
    main, shadow = routing.ingress_manifests(CR, two, WITH_JWT)
    for ingress in (main, shadow):
        validate_k8s(ingress)
        assert allowed(ingress["metadata"]["annotations"])["allowed_groups"][0] == "team-a"


def test_without_an_issuer_or_on_public_endpoints_nothing_changes():
    basic_only = main_ingress(private(), SETTINGS)
    assert f"{NGINX}/auth-url" not in basic_only and f"{NGINX}/satisfy" not in basic_only
    assert basic_only[f"{NGINX}/auth-type"] == "basic"
    public = main_ingress(spec(modelImage=IMAGE))
    assert not {f"{NGINX}/auth-url", f"{NGINX}/auth-type", f"{NGINX}/satisfy"} & set(public)


def test_without_snippets_the_edge_still_checks_tokens():
    settings = WITH_JWT.model_copy(
        update={"ingress": WITH_JWT.ingress.model_copy(update={"forwarded_user": False})}
    )
    annotations = main_ingress(private(), settings)
    assert f"{NGINX}/configuration-snippet" not in annotations
    assert allowed(annotations)["allowed_groups"] == ["Data_Science", "/Data_Science"]


def test_a_policy_of_users_and_groups_is_refused_on_kubernetes():
    (problem,) = edgeauth.policy_problems(private(users=["bob"], groups=["team-a"]))
    assert problem["field"] == "spec.endpoint.policy" and "not both" in problem["message"]
    assert edgeauth.policy_problems(private(users=["bob"])) == []
    # The engine answers it at once (422) when the server has an issuer; without one, as before.
    engine = KubernetesEngine(jwt_settings=JwtSettings(**JWT))
    with pytest.raises(ValidationError) as raised:
        engine.check_spec(private(users=["bob"], groups=["team-a"]))
    assert raised.value.details[0]["field"] == "spec.endpoint.policy"
    KubernetesEngine().check_spec(private(users=["bob"], groups=["team-a"]))


# ---- the shared oauth2-proxy -------------------------------------------------------------------


def test_proxy_objects_validate_and_use_only_published_flags():
    deployment = edgeauth.proxy_deployment(WITH_JWT)
    service = edgeauth.proxy_service(WITH_JWT)
    secret = edgeauth.proxy_secret(WITH_JWT)
    for obj in (deployment, service, secret):
        validate_k8s(obj)
        assert obj["metadata"]["name"] == "primehub-jwt-auth"
        assert obj["metadata"]["namespace"] == "primehub"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    unknown = [a for a in args if a.split("=", 1)[0] not in FLAGS]
    assert unknown == [], f"not oauth2-proxy flags: {unknown}"
    assert f"--oidc-issuer-url={JWT['issuer']}" in args
    assert f"--oidc-jwks-url={JWT['jwks']}" in args
    assert "--client-id=models" in args and "--skip-jwt-bearer-tokens=true" in args
    assert "--oidc-email-claim=preferred_username" in args
    assert "--oidc-groups-claim=groups" in args
    # Secrets only through the Secret, never in the manifest.
    assert {e["name"] for e in container["env"]} == {
        "OAUTH2_PROXY_COOKIE_SECRET",
        "OAUTH2_PROXY_CLIENT_SECRET",
    }
    assert all("value" not in e for e in container["env"])
    cookie = base64.b64decode(secret["data"]["cookie-secret"])
    assert len(cookie) == 32  # oauth2-proxy takes 16, 24 or 32 bytes
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert service["spec"]["ports"][0]["port"] == edgeauth.PROXY_PORT


def test_operator_settings_take_jwt_from_yaml_or_the_environment(tmp_path):
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump({"jwt": {**JWT, "groupsClaim": "roles"}}))
    settings = OperatorSettings.load(path, jwt_user_claim="sub")
    assert settings.jwt is not None
    assert (settings.jwt.groups_claim, settings.jwt.user_claim) == ("roles", "sub")
    assert settings.jwt.jwt_settings().issuer == JWT["issuer"]
    assert OperatorSettings.load(None).jwt is None
    with pytest.raises(ValueError, match="jwks must be an http"):
        OperatorSettings.load(None, jwt_issuer="https://i", jwt_audience="a", jwt_jwks="/keys.json")

    config = tmp_path / "config.yaml"
    config.write_text("groups: []\n")
    result = CliRunner().invoke(
        operator_command,
        ["--config", str(config), "--kubeconfig", str(tmp_path / "none")],
        env={"PRIMEHUB_JWT_ISSUER": "https://i", "PRIMEHUB_JWT_JWKS": "https://j"},
    )
    assert result.exit_code != 0 and "jwt.audience" in result.output


# ---- the operator on the emulator ----------------------------------------------------------------


@pytest.fixture
def operator_overrides() -> dict[str, Any]:
    return {"jwt": JWT}


def test_operator_renders_creates_updates_and_removes_the_edge_objects(cluster, operator):
    cluster.sim.images[IMAGE] = "ok"
    # The simulated kubelet runs any known image as a ready container (it only needs to pull).
    cluster.sim.images[DEFAULT_JWT_PROXY_IMAGE] = "ok"
    body = phdeployment(
        "secured",
        modelImage=IMAGE,
        endpoint={
            "accessType": "private",
            "clients": [{"name": "app"}],
            "policy": {"groups": ["team-a"]},
        },
    )
    cluster.apply(body)
    cluster.wait_phase("secured", "Deployed")

    def query() -> dict[str, list[str]] | None:
        ingress = cluster.find("ingresses", "secured")
        annotations = (ingress or {}).get("metadata", {}).get("annotations") or {}
        url = annotations.get(f"{NGINX}/auth-url")
        return parse_qs(urlsplit(url).query) if url else None

    assert query() == {"allowed_groups": ["team-a,/team-a"]}
    annotations = cluster.find("ingresses", "secured")["metadata"]["annotations"]
    assert annotations[f"{NGINX}/satisfy"] == "any"
    assert annotations[f"{NGINX}/auth-type"] == "basic"
    # The shared oauth2-proxy, accepted by the emulated API server's schema checks.
    proxy = cluster.find("deployments", "primehub-jwt-auth")
    assert proxy is not None and cluster.find("services", "primehub-jwt-auth") is not None
    assert cluster.find("secrets", "primehub-jwt-auth") is not None
    assert (
        f"--oidc-issuer-url={JWT['issuer']}"
        in (proxy["spec"]["template"]["spec"]["containers"][0]["args"])
    )

    def proxy_available() -> bool:
        live = cluster.find("deployments", "primehub-jwt-auth") or {}
        return (live.get("status") or {}).get("availableReplicas") == 2

    cluster.wait(proxy_available, "the proxy's pods to be available")

    # A new policy: the auth-url follows.
    cluster.patch(
        "phdeployments",
        "secured",
        {"spec": {"endpoint": {"policy": {"users": ["bob"], "groups": []}}}},
    )
    cluster.wait(lambda: query() == {"allowed_emails": ["bob"]}, "the users policy")

    # Both users and groups: the edge cannot say "either", the deployment says why.
    cluster.patch(
        "phdeployments",
        "secured",
        {"spec": {"endpoint": {"policy": {"users": ["bob"], "groups": ["team-a"]}}}},
    )
    status = cluster.wait_phase("secured", "Failed")
    assert "spec.endpoint.policy" in status["message"] and "not both" in status["message"]

    # Public: no external auth, no basic auth left on the Ingress.
    cluster.patch("phdeployments", "secured", {"spec": {"endpoint": {"accessType": "public"}}})
    cluster.wait_phase("secured", "Deployed")
    cluster.wait(lambda: query() is None, "the auth-url to go")
    annotations = cluster.find("ingresses", "secured")["metadata"]["annotations"]
    assert not {f"{NGINX}/satisfy", f"{NGINX}/auth-type"} & set(annotations)
    assert "Authorization" not in annotations[f"{NGINX}/configuration-snippet"]

    # Deleted: its Ingress goes with it; the shared proxy stays for the other endpoints.
    cluster.delete("phdeployments", "secured")
    cluster.wait(lambda: cluster.find("ingresses", "secured") is None, "the Ingress to go")
    assert cluster.find("deployments", "primehub-jwt-auth") is not None
