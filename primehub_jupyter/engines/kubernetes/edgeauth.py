"""Bearer JWTs at the edge: ingress-nginx external auth to oauth2-proxy, beside Basic clients.

Why this shape (docs/kubernetes.md, "Bearer JWTs"): a private endpoint keeps ingress-nginx's
basic auth against the deployment's clients Secret, and adds `auth-url` to one oauth2-proxy per
namespace that validates bearer tokens (`--skip-jwt-bearer-tokens`) and checks the deployment's
policy from the URL's query (`allowed_groups`, `allowed_emails`); `satisfy: any` lets either
credential in. oauth2-proxy ANDs the two query lists, so on Kubernetes a policy names users or
groups, not both (`policy_problems`). nginx answers 401 when any check said 401, so a valid token
outside the policy gets 401 here, not 403 as on the local gateway.
"""

from __future__ import annotations

import base64
import logging
import secrets
from typing import Any
from urllib.parse import quote

from ...core.models import DeploymentSpec
from .children import apply
from .client import DEPLOYMENTS, SECRETS, SERVICES, Kube, KubeError
from .resources import with_applied_hash
from .settings import JwtEdgeSettings, OperatorSettings

log = logging.getLogger("primehub.operator")

NGINX = "nginx.ingress.kubernetes.io"
PROXY_PORT = 4180
PROXY_LABEL = "app.kubernetes.io/name"
# The header oauth2-proxy answers /oauth2/auth with (--set-xauthrequest): the user claim, as
# --oidc-email-claim names it (a bearer session's Email falls back to the user, never empty).
USER_HEADER = "x_auth_request_email"


# ---- what the edge can enforce ------------------------------------------------------------


def policy_problems(spec: DeploymentSpec) -> list[dict[str, str]]:
    """[{field, message}] for a policy oauth2-proxy cannot enforce as written ([] when fine)."""
    policy = spec.endpoint.policy
    if spec.endpoint.access_type != "private" or policy is None:
        return []
    if policy.users and policy.groups:
        return [
            {
                "field": "spec.endpoint.policy",
                "message": "on Kubernetes the edge (oauth2-proxy's allowed_groups and "
                "allowed_emails) requires both lists to match, not either: name users or "
                "groups in the policy, not both (add the users to a group instead)",
            }
        ]
    return []


def allowed_query(spec: DeploymentSpec) -> str:
    """The auth-url query naming who may call: the policy's users or groups, else the group.

    A group is listed bare and as Keycloak's top-level path ('/team-a'): oauth2-proxy matches
    the groups claim's values exactly.
    """
    policy = spec.endpoint.policy
    if policy is not None and policy.users:
        return "allowed_emails=" + ",".join(quote(u, safe="@.-_") for u in policy.users)
    groups = policy.groups if policy is not None and policy.groups else [spec.group_name]
    names = [form for g in groups for form in (g, f"/{g.strip('/')}")]
    return "allowed_groups=" + ",".join(quote(n, safe="/.-_") for n in dict.fromkeys(names))


def proxy_host(settings: OperatorSettings) -> str:
    """In-cluster address of the namespace's oauth2-proxy Service."""
    assert settings.jwt is not None
    namespace = settings.namespace or "default"
    return f"{settings.jwt.proxy_name}.{namespace}.svc.cluster.local:{PROXY_PORT}"


def bearer_annotations(spec: DeploymentSpec, settings: OperatorSettings) -> dict[str, str]:
    """Ingress annotations adding bearer JWTs to a private endpoint ({} when JWTs are off).

    Basic auth stays as it is; `satisfy: any` admits a request either check accepts.
    """
    if settings.jwt is None or spec.endpoint.access_type != "private":
        return {}
    annotations = {
        f"{NGINX}/auth-url": f"http://{proxy_host(settings)}/oauth2/auth?{allowed_query(spec)}",
        f"{NGINX}/satisfy": "any",
    }
    if settings.ingress.forwarded_user:
        # $remote_user is the Basic client (empty for a bearer request); the auth answer's user
        # is empty for a Basic request (oauth2-proxy finds no JWT in it). Neither credential
        # reaches the model.
        annotations[f"{NGINX}/configuration-snippet"] = (
            f"auth_request_set $primehub_bearer_user $upstream_http_{USER_HEADER};\n"
            "proxy_set_header X-Forwarded-User $remote_user$primehub_bearer_user;\n"
            'proxy_set_header Authorization "";\n'
        )
    return annotations


# ---- the shared oauth2-proxy ----------------------------------------------------------------


def proxy_args(jwt: JwtEdgeSettings) -> list[str]:
    """oauth2-proxy's flags: validate bearer JWTs only, in nginx auth_request mode.

    No sign-in flow ever runs (the Ingress has no auth-signin: nginx answers 401), so the login
    and redeem URLs are the issuer's, never called; discovery is skipped for the given JWKS.
    """
    return [
        "--provider=oidc",
        f"--oidc-issuer-url={jwt.issuer}",
        "--skip-oidc-discovery=true",
        f"--oidc-jwks-url={jwt.jwks}",
        f"--login-url={jwt.issuer}",
        f"--redeem-url={jwt.issuer}",
        f"--client-id={jwt.audience}",
        f"--oidc-email-claim={jwt.user_claim}",
        f"--oidc-groups-claim={jwt.groups_claim}",
        "--email-domain=*",
        "--skip-jwt-bearer-tokens=true",
        "--set-xauthrequest=true",
        "--reverse-proxy=true",
        "--force-json-errors=true",
        f"--http-address=0.0.0.0:{PROXY_PORT}",
        "--upstream=static://202",
        "--silence-ping-logging=true",
    ]


def _labels(jwt: JwtEdgeSettings) -> dict[str, str]:
    return {PROXY_LABEL: jwt.proxy_name, "app.kubernetes.io/component": "jwt-auth"}


def _metadata(jwt: JwtEdgeSettings, settings: OperatorSettings) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": jwt.proxy_name, "labels": _labels(jwt)}
    if settings.namespace:
        meta["namespace"] = settings.namespace
    return meta


def proxy_deployment(settings: OperatorSettings) -> dict[str, Any]:
    """oauth2-proxy's Deployment: no service-account token, read-only, non-root."""
    jwt = settings.jwt
    assert jwt is not None

    def secret_env(name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": jwt.proxy_name, "key": key}}}

    probe = {"httpGet": {"path": "/ping", "port": "http"}, "periodSeconds": 10}
    container = {
        "name": "oauth2-proxy",
        "image": jwt.proxy_image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": proxy_args(jwt),
        "env": [
            secret_env("OAUTH2_PROXY_COOKIE_SECRET", "cookie-secret"),
            secret_env("OAUTH2_PROXY_CLIENT_SECRET", "client-secret"),
        ],
        "ports": [{"name": "http", "containerPort": PROXY_PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": probe,
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "128Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65532,
        },
    }
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(jwt, settings),
        "spec": {
            "replicas": jwt.proxy_replicas,
            "selector": {"matchLabels": _labels(jwt)},
            "template": {
                "metadata": {"labels": _labels(jwt)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                },
            },
        },
    }
    return with_applied_hash(manifest)


def proxy_service(settings: OperatorSettings) -> dict[str, Any]:
    """The Service ingress-nginx's auth-url calls."""
    jwt = settings.jwt
    assert jwt is not None
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(jwt, settings),
        "spec": {
            "selector": _labels(jwt),
            "ports": [
                {"name": "http", "port": PROXY_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }
    return with_applied_hash(manifest)


def proxy_secret(settings: OperatorSettings) -> dict[str, Any]:
    """Random values oauth2-proxy insists on: a cookie secret and a client secret.

    Neither is ever used (no sign-in flow, no cookie is issued); they are made once here.
    """
    jwt = settings.jwt
    assert jwt is not None
    values = {"cookie-secret": secrets.token_hex(16), "client-secret": secrets.token_hex(16)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(jwt, settings),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


async def ensure_proxy(kube: Kube, settings: OperatorSettings) -> None:
    """Create or update the shared oauth2-proxy (its Secret once, then Service, Deployment).

    They belong to no PhDeployment: every private endpoint of the namespace uses them, and they
    stay when the last one goes (docs/kubernetes.md says how to remove them).
    """
    if settings.jwt is None:
        return
    if await kube.find(SECRETS, settings.jwt.proxy_name) is None:
        try:
            await kube.create(SECRETS, proxy_secret(settings))
        except KubeError as error:
            if error.status != 409:
                raise
    await apply(kube, SERVICES, proxy_service(settings))
    await apply(kube, DEPLOYMENTS, proxy_deployment(settings))
