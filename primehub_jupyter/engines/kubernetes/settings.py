"""Operator settings: images, ingress, model volumes, timeouts (operator.yaml of the ConfigMap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from ..._version import __version__
from ...core.access import DEFAULT_GROUPS_CLAIM, JwtSettings
from ...core.models import describe_problems, pydantic_problems

DEFAULT_MODEL_SERVER_IMAGE = f"ghcr.io/primehub-io/primehub-model-server:{__version__}"
#: oauth2-proxy release whose flags tests/kubernetes/schemas/oauth2-proxy-flags.txt lists.
DEFAULT_JWT_PROXY_IMAGE = "quay.io/oauth2-proxy/oauth2-proxy:v7.15.3"
MODEL_PORT = 9000


class _Settings(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class IngressSettings(_Settings):
    """How endpoints are exposed through ingress-nginx."""

    class_name: str = Field("nginx", description="IngressClass of ingress-nginx.")
    host: str = Field("", description="Host of the endpoints ('' accepts any host).")
    base_url: str = Field(
        "",
        alias="baseURL",
        description="Public URL of the ingress, e.g. https://models.example.com; endpoints "
        "are <baseURL>/deployment/<id>/api/v1.0/predictions.",
    )
    tls_secret_name: str = Field("", description="TLS secret for `host`, when TLS ends at nginx.")
    forwarded_user: bool = Field(
        True,
        description="Set X-Forwarded-User from the authenticated client ($remote_user) with a "
        "configuration-snippet (the controller must allow snippet annotations).",
    )
    controller_service: str = Field(
        "ingress-nginx-controller.ingress-nginx.svc.cluster.local",
        description="In-cluster address of the ingress-nginx controller: a shadow predictor's "
        "mirrored copies go back through it (to its own Ingress, which applies the same rewrite).",
    )
    proxy_body_size: str = "64m"
    proxy_read_timeout_seconds: int = 300
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations.")


class GatewaySettings(_Settings):
    """Where HTTPRoutes attach when `router` is gateway-api (Gateway API v1, standard channel)."""

    parent_refs: list[dict[str, str]] = Field(
        default_factory=list,
        description="parentRefs of every HTTPRoute: the Gateway(s), e.g. [{name: models, "
        "namespace: gateway-system}].",
    )
    hostnames: list[str] = Field(
        default_factory=list, description="hostnames of every HTTPRoute ([]: the Gateway's)."
    )


class AutoscalingSettings(_Settings):
    """How autoscaled predictors are scaled (docs/kubernetes.md, "Traffic and scale")."""

    metric: Literal["concurrency", "cpu"] = Field(
        "concurrency",
        description="concurrency: an HPA Pods metric of in-flight requests per pod (served by "
        "prometheus-adapter, see docs); cpu: an HPA on CPU utilization.",
    )
    concurrency_metric: str = Field(
        "primehub_inflight_requests",
        description="The per-pod Pods metric (custom.metrics.k8s.io) of in-flight requests.",
    )
    cpu_utilization: int = Field(70, ge=1, le=100, description="Target CPU % with metric: cpu.")
    interceptor_service: str = Field(
        "keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local",
        description="DNS name of the KEDA HTTP add-on's interceptor proxy (minReplicas: 0).",
    )
    interceptor_port: int = Field(8080, ge=1, le=65535)
    external_scaler: str = Field(
        "keda-add-ons-http-external-scaler.keda:9090",
        description="host:port of the KEDA HTTP add-on's external scaler.",
    )
    wake_timeout: str = Field(
        "120s", description="How long the interceptor holds a request while a predictor wakes."
    )


class ModelVolume(_Settings):
    """A volume that holds model bundles at an absolute path, e.g. users' home directories."""

    prefix: str = Field(description="Absolute path prefix in modelURI, e.g. /home/jovyan.")
    claim_name: str = Field(
        description="PersistentVolumeClaim holding that path; may use {user} and {group}."
    )
    sub_path: str = Field("", description="Where `prefix` is inside the claim.")


class PodSecurity(_Settings):
    """The securityContext of model pods: user model code runs with no powers it does not need."""

    run_as_user: int = Field(
        1000, ge=1, description="User of every container (the model-server image's user)."
    )
    run_as_group: int = Field(1000, ge=0, description="Primary group of every container.")
    fs_group: int = Field(1000, ge=0, description="Group owning the pod's writable volumes.")
    read_only_root_filesystem: bool = Field(
        True,
        description="Mount the image read-only; /tmp is a writable emptyDir. Turn off for "
        "modelImages that write elsewhere in their filesystem.",
    )


class JwtEdgeSettings(_Settings):
    """Bearer JWTs at the edge: ingress-nginx asks oauth2-proxy (docs/kubernetes.md, "Bearer JWTs").

    The same issuer, audience and claims as the server's `PrimeHubApp.jwt_*`.
    """

    issuer: str = Field(min_length=1, description="The tokens' `iss`, e.g. Keycloak's realm URL.")
    audience: str = Field(min_length=1, description="The tokens' `aud` (oauth2-proxy's client id).")
    jwks: str = Field(
        min_length=1,
        description="https URL of the issuer's JSON Web Key Set (oauth2-proxy fetches it; a "
        "file path is not possible at the edge).",
    )
    user_claim: str = Field(
        "preferred_username", description="The claim naming the caller (one claim at the edge)."
    )
    groups_claim: str = DEFAULT_GROUPS_CLAIM
    proxy_image: str = DEFAULT_JWT_PROXY_IMAGE
    proxy_replicas: int = Field(2, ge=1, le=20)
    proxy_name: str = Field(
        "primehub-jwt-auth",
        pattern=r"^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$",
        description="Name of the oauth2-proxy Deployment, Service and Secret the operator keeps.",
    )

    @field_validator("jwks")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("jwks must be an http(s) URL on Kubernetes (oauth2-proxy fetches it)")
        return value

    def jwt_settings(self) -> JwtSettings:
        """The core settings these stand for (what the local gateway would check)."""
        return JwtSettings(
            issuer=self.issuer,
            audience=self.audience,
            jwks=self.jwks,
            user_claim=self.user_claim,
            groups_claim=self.groups_claim,
        )


class OperatorSettings(_Settings):
    """Everything the operator needs besides the groups configuration."""

    namespace: str = ""
    model_server_image: str = DEFAULT_MODEL_SERVER_IMAGE
    model_initializer_image: str = Field(
        "", description="Image of the init container fetching modelURI (default: the model server)."
    )
    image_pull_policy: str = "IfNotPresent"
    deploy_timeout_seconds: float = Field(300.0, gt=0)
    resync_seconds: float = Field(15.0, gt=0, description="Re-check every deployment this often.")
    workers: int = Field(4, ge=1, le=64, description="Deployments reconciled at the same time.")
    storage_secret: str = Field(
        "",
        description="Secret whose keys become the init container's environment: "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, "
        "MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD.",
    )
    mlflow_tracking_uri: str = Field("", alias="mlflowTrackingURI")
    model_volumes: list[ModelVolume] = Field(default_factory=list)
    ingress: IngressSettings = Field(default_factory=lambda: IngressSettings.model_validate({}))
    router: Literal["ingress-nginx", "gateway-api"] = Field(
        "ingress-nginx",
        description="What splits traffic between predictors: ingress-nginx canary Ingresses (at "
        "most two answering predictors) or a Gateway API HTTPRoute (up to four).",
    )
    gateway: GatewaySettings = Field(default_factory=lambda: GatewaySettings.model_validate({}))
    autoscaling: AutoscalingSettings = Field(
        default_factory=lambda: AutoscalingSettings.model_validate({})
    )
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    service_account_name: str = Field("", description="ServiceAccount of model pods.")
    pod_security: PodSecurity = Field(default_factory=lambda: PodSecurity.model_validate({}))
    revision_history_limit: int = 3
    jwt: JwtEdgeSettings | None = Field(
        None,
        description="Bearer JWTs on private endpoints (oauth2-proxy behind ingress-nginx); "
        "absent: HTTP Basic only.",
    )

    @property
    def initializer_image(self) -> str:
        return self.model_initializer_image or self.model_server_image

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> OperatorSettings:
        """Read operator.yaml (if given); non-empty `overrides` (command line) win."""
        document: dict[str, Any] = {}
        if path:
            text = Path(path).read_text()
            document = yaml.safe_load(text) or {}
            if not isinstance(document, dict):
                raise ValueError(f"{path}: expected a mapping of settings")
        for key, value in overrides.items():
            if value in (None, ""):
                continue
            if key.startswith("jwt_"):  # --jwt-issuer etc.: fields of the jwt block
                jwt = document.get("jwt")
                document["jwt"] = {**(jwt if isinstance(jwt, dict) else {})}
                document["jwt"][to_camel(key[len("jwt_") :])] = value
            else:
                document[to_camel(key)] = value
        try:
            return cls.model_validate(document)
        except ValidationError as error:
            problems = describe_problems(pydantic_problems(error))
            where = f" in {path}" if path else ""
            raise ValueError(f"invalid operator settings{where}: {problems}") from None
