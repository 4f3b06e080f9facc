"""Pure functions: how requests reach the predictors (ingress-nginx Ingresses or an HTTPRoute).

Facts this module relies on (ingress-nginx, "Annotations" and "Canary" in
https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/):
- A canary Ingress (`canary: "true"`) on the same host and path as the main Ingress takes
  `canary-weight` percent (0-100) of the requests, chosen per request. "Known limitation:
  currently a maximum of one canary ingress can be applied per Ingress rule": so at most two
  answering predictors on ingress-nginx. A canary Ingress ignores every other annotation (they
  come from the main Ingress) except load-balance, upstream-hash-by and session affinity.
- `canary-by-header` routes an exact header value (or "always"/"never") to the canary; it is no
  hash of a user id, so it cannot give sticky A/B by weight: spec.routing.stickyHeader is refused.
- `mirror-target` sends a copy of each request to a URL (the answer is discarded); `mirror-host`
  sets its Host header. The copy carries the original URI ($request_uri), not the rewritten one,
  so it goes back through the controller to the shadow's own Ingress (same path regex and
  rewrite, a host of its own).
Gateway API (gateway.networking.k8s.io/v1 HTTPRoute, standard channel): backendRefs carry integer
weights, RequestMirror copies requests, URLRewrite replaces the path prefix; there is no
standard basic auth, so private endpoints need ingress-nginx, and no hash-based split either.
The KEDA HTTP add-on's interceptor (github.com/kedacore/http-add-on) routes held requests by Host
header to the HTTPScaledObject whose `hosts` match: a predictor at zero is reached through an
ExternalName Service to the interceptor, with that Host set by the route.
"""

from __future__ import annotations

import random
from typing import Any

from ...core.models import DeploymentSpec, Predictor
from . import edgeauth
from .resources import (
    PORT_NAME,
    child_name,
    clients_secret_name,
    meta,
    with_applied_hash,
)
from .settings import MODEL_PORT, OperatorSettings

NGINX = "nginx.ingress.kubernetes.io"
WAKE_SUFFIX = "wake"
SHADOW_SUFFIX = "shadow"
NGINX_MAX_ANSWERING = 2


# ---- what the cluster can do with a spec -------------------------------------------------


def traffic_problems(spec: DeploymentSpec, router: str) -> list[dict[str, str]]:
    """What the router cannot do with this spec: [{field, message}] ([] when all is fine)."""
    problems: list[dict[str, str]] = []
    if spec.routing is not None and spec.routing.sticky_header:
        problems.append(
            {
                "field": "spec.routing.stickyHeader",
                "message": "sticky routing by header is not available on Kubernetes: "
                "ingress-nginx's canary-by-header only matches exact header values and "
                "Gateway API weights have no hash; remove stickyHeader (requests are split "
                "by weight, each on its own)",
            }
        )
    answering = [p for p in spec.predictors if not p.shadow]
    if router == "ingress-nginx" and len(answering) > NGINX_MAX_ANSWERING:
        problems.append(
            {
                "field": "spec.predictors",
                "message": f"ingress-nginx splits traffic with one canary Ingress per path: at "
                f"most {NGINX_MAX_ANSWERING} predictors with traffic (plus a shadow), not "
                f"{len(answering)}; the operator's router: gateway-api allows up to four",
            }
        )
    at_zero = [(i, p) for i, p in enumerate(spec.predictors) if p.idle_seconds is not None]
    answering_at_zero = [(i, p) for i, p in at_zero if not p.shadow]
    limited = at_zero if router == "gateway-api" else answering_at_zero
    if len(limited) > 1:
        index = limited[1][0]
        names = ", ".join(p.name for _, p in limited)
        problems.append(
            {
                "field": f"spec.predictors.{index}.minReplicas",
                "message": f"only one predictor per deployment can scale to zero on {router} "
                f"({names} do): requests held for it are told apart by one Host header; give "
                "the others minReplicas: 1",
            }
        )
    if router == "gateway-api" and spec.endpoint.access_type == "private":
        problems.append(
            {
                "field": "spec.endpoint.accessType",
                "message": "private endpoints need ingress-nginx (HTTP Basic auth); the Gateway "
                "API has no standard authentication: use a public endpoint",
            }
        )
    return problems


# ---- where each predictor is reached -------------------------------------------------------


def wake_host(cr: dict[str, Any], predictor: Predictor) -> str:
    """The Host the KEDA HTTP add-on's interceptor knows a predictor at zero by."""
    namespace = cr["metadata"].get("namespace") or "default"
    return f"{child_name(cr['metadata']['name'], predictor.name)}.{namespace}"


def backend(cr: dict[str, Any], predictor: Predictor, settings: OperatorSettings) -> dict[str, Any]:
    """The Service (name, port) requests for a predictor go to: its own, or the interceptor's."""
    deployment_id = cr["metadata"]["name"]
    if predictor.idle_seconds is not None:
        name = child_name(deployment_id, predictor.name, WAKE_SUFFIX)
        return {"name": name, "port": {"number": settings.autoscaling.interceptor_port}}
    return {"name": child_name(deployment_id, predictor.name), "port": {"name": PORT_NAME}}


def wake_service_manifest(
    cr: dict[str, Any], spec: DeploymentSpec, predictor: Predictor, settings: OperatorSettings
) -> dict[str, Any]:
    """An ExternalName Service in our namespace for the KEDA HTTP add-on's interceptor."""
    name = child_name(cr["metadata"]["name"], predictor.name, WAKE_SUFFIX)
    port = settings.autoscaling.interceptor_port
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(cr, name, spec.group_name, predictor.name),
        "spec": {
            "type": "ExternalName",
            "externalName": settings.autoscaling.interceptor_service,
            "ports": [{"name": PORT_NAME, "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }
    return with_applied_hash(manifest)


def invoked_service(spec: DeploymentSpec, deployment_id: str) -> str:
    """The Service the engine's invoke calls: a predictor chosen by weight, as the route does.

    A predictor at zero is called through its own Service all the same: invoke is for trying
    a deployment out, and waits like any caller at most the engine's invoke_timeout.
    """
    weights = {k: v for k, v in spec.weights().items() if v > 0}
    if not weights:
        return child_name(deployment_id, spec.predictor.name)
    names = list(weights)
    chosen = random.choices(names, weights=[weights[n] for n in names])[0]
    return child_name(deployment_id, chosen)


# ---- ingress-nginx ---------------------------------------------------------------------


def _path_rule(deployment_id: str, service: dict[str, Any], host: str) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": f"/deployment/{deployment_id}(/|$)(.*)",
                    "pathType": "ImplementationSpecific",
                    "backend": {"service": service},
                }
            ]
        }
    }
    if host:
        rule["host"] = host
    return rule


def _entry_annotations(
    deployment_id: str, spec: DeploymentSpec, settings: OperatorSettings
) -> dict[str, str]:
    ingress = settings.ingress
    annotations = {
        f"{NGINX}/use-regex": "true",
        f"{NGINX}/rewrite-target": "/$2",
        f"{NGINX}/proxy-body-size": ingress.proxy_body_size,
        f"{NGINX}/proxy-read-timeout": str(ingress.proxy_read_timeout_seconds),
        f"{NGINX}/proxy-send-timeout": str(ingress.proxy_read_timeout_seconds),
        # The service catalog: its document's `servers` is this prefix, and its Swagger UI in
        # JupyterLab calls from another origin (CORS as the local gateway answers it, never
        # with the browser's own credentials).
        f"{NGINX}/x-forwarded-prefix": f"/deployment/{deployment_id}",
        f"{NGINX}/enable-cors": "true",
        f"{NGINX}/cors-allow-origin": "*",
        f"{NGINX}/cors-allow-methods": "GET, POST, HEAD, OPTIONS",
        f"{NGINX}/cors-allow-headers": "Authorization, Content-Type, Request-ID",
        f"{NGINX}/cors-allow-credentials": "false",
        **ingress.annotations,
    }
    if ingress.forwarded_user:
        # $remote_user is the client name after basic auth, empty on public endpoints: either
        # way a caller's own X-Forwarded-User never reaches the model.
        annotations[f"{NGINX}/configuration-snippet"] = (
            "proxy_set_header X-Forwarded-User $remote_user;\n"
        )
    if spec.endpoint.access_type == "private":
        annotations.update(
            {
                f"{NGINX}/auth-type": "basic",
                f"{NGINX}/auth-secret": clients_secret_name(deployment_id),
                f"{NGINX}/auth-secret-type": "auth-map",
                f"{NGINX}/auth-realm": f"PrimeHub deployment {deployment_id}",
            }
        )
        # Bearer JWTs beside the clients, when the operator is configured with an issuer.
        annotations.update(edgeauth.bearer_annotations(spec, settings))
    return annotations


def _ingress(
    cr: dict[str, Any],
    spec: DeploymentSpec,
    settings: OperatorSettings,
    name: str,
    annotations: dict[str, str],
    service: dict[str, Any],
    host: str,
    predictor: str | None,
) -> dict[str, Any]:
    ingress = settings.ingress
    ingress_spec: dict[str, Any] = {"rules": [_path_rule(cr["metadata"]["name"], service, host)]}
    if ingress.class_name:
        ingress_spec["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name and host and host == ingress.host:
        ingress_spec["tls"] = [{"hosts": [host], "secretName": ingress.tls_secret_name}]
    manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta(cr, name, spec.group_name, predictor, annotations=annotations),
        "spec": ingress_spec,
    }
    return with_applied_hash(manifest)


def shadow_host(cr: dict[str, Any], predictor: Predictor) -> str:
    """The Host of a shadow's own Ingress: mirrored copies come back to nginx with it."""
    namespace = cr["metadata"].get("namespace") or "default"
    name = child_name(cr["metadata"]["name"], predictor.name, SHADOW_SUFFIX)
    return f"{name}.{namespace}.primehub.internal"


def ingress_manifests(
    cr: dict[str, Any], spec: DeploymentSpec, settings: OperatorSettings
) -> list[dict[str, Any]]:
    """The main Ingress (primary predictor), a canary Ingress, a shadow's Ingress.

    The main Ingress keeps the deployment's name (`<id>`): it is the endpoint, whichever
    predictor is primary. Weights live only in the canary's annotations, so a weight change
    touches only them.
    """
    deployment_id = cr["metadata"]["name"]
    host = settings.ingress.host
    primary = spec.predictor
    main = _entry_annotations(deployment_id, spec, settings)
    answering_at_zero = [p for p in spec.predictors if not p.shadow and p.idle_seconds is not None]
    if answering_at_zero:
        # The interceptor tells predictors apart by Host; a canary inherits this annotation,
        # which is why only one answering predictor may be at zero (traffic_problems).
        main[f"{NGINX}/upstream-vhost"] = wake_host(cr, answering_at_zero[0])
    shadow = spec.shadow
    if shadow is not None:
        main[f"{NGINX}/mirror-target"] = f"http://{settings.ingress.controller_service}$request_uri"
        main[f"{NGINX}/mirror-host"] = shadow_host(cr, shadow)
    manifests = [
        _ingress(
            cr, spec, settings, deployment_id, main, backend(cr, primary, settings), host, None
        )
    ]
    weights = spec.weights()
    for predictor in spec.predictors:
        if predictor.shadow or predictor.name == primary.name:
            continue
        canary = {
            f"{NGINX}/canary": "true",
            f"{NGINX}/canary-weight": str(weights.get(predictor.name, 0)),
        }
        manifests.append(
            _ingress(
                cr,
                spec,
                settings,
                child_name(deployment_id, predictor.name),
                canary,
                backend(cr, predictor, settings),
                host,
                predictor.name,
            )
        )
    if shadow is not None:
        annotations = _entry_annotations(deployment_id, spec, settings)
        if shadow.idle_seconds is not None:
            annotations[f"{NGINX}/upstream-vhost"] = wake_host(cr, shadow)
        manifests.append(
            _ingress(
                cr,
                spec,
                settings,
                child_name(deployment_id, shadow.name, SHADOW_SUFFIX),
                annotations,
                backend(cr, shadow, settings),
                shadow_host(cr, shadow),
                shadow.name,
            )
        )
    return manifests


# ---- Gateway API ---------------------------------------------------------------------------


def _backend_ref(cr: dict[str, Any], predictor: Predictor, settings: OperatorSettings) -> dict:
    service = backend(cr, predictor, settings)
    port = service["port"].get("number", MODEL_PORT)
    return {"kind": "Service", "name": service["name"], "port": port}


def httproute_manifest(
    cr: dict[str, Any], spec: DeploymentSpec, settings: OperatorSettings
) -> dict[str, Any]:
    """One HTTPRoute at /deployment/<id>/: weighted backends, a mirror for the shadow."""
    deployment_id = cr["metadata"]["name"]
    weights = spec.weights()
    refs = [
        {**_backend_ref(cr, p, settings), "weight": weights.get(p.name, 0)}
        for p in spec.predictors
        if not p.shadow
    ]
    filters: list[dict[str, Any]] = [
        {
            "type": "URLRewrite",
            "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
        },
        {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {
                "set": [{"name": "X-Forwarded-Prefix", "value": f"/deployment/{deployment_id}"}],
                # No authentication here: a caller's own X-Forwarded-User never reaches the model.
                "remove": ["X-Forwarded-User"],
            },
        },
    ]
    at_zero = [p for p in spec.predictors if p.idle_seconds is not None]
    if at_zero:
        # URLRewrite is one filter per rule: its hostname serves the one predictor at zero.
        filters[0]["urlRewrite"]["hostname"] = wake_host(cr, at_zero[0])
    if spec.shadow is not None:
        filters.append(
            {
                "type": "RequestMirror",
                "requestMirror": {"backendRef": _backend_ref(cr, spec.shadow, settings)},
            }
        )
    route_spec: dict[str, Any] = {
        "parentRefs": [dict(ref) for ref in settings.gateway.parent_refs],
        "rules": [
            {
                "matches": [
                    {"path": {"type": "PathPrefix", "value": f"/deployment/{deployment_id}"}}
                ],
                "filters": filters,
                "backendRefs": refs,
            }
        ],
    }
    if settings.gateway.hostnames:
        route_spec["hostnames"] = list(settings.gateway.hostnames)
    manifest = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": meta(cr, deployment_id, spec.group_name),
        "spec": route_spec,
    }
    return with_applied_hash(manifest)
