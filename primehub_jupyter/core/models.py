"""The deployment object (PrimeHub's PhDeployment): spec, status and history, as one JSON shape."""

from __future__ import annotations

import enum
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .ids import (
    CLIENT_NAME,
    DNS1035,
    DNS1123_SUBDOMAIN,
    ENV_NAME,
    MAX_ID_LENGTH,
    METADATA_KEY,
    RESOURCE_NAME,
    id_problem,
    name_problem,
)

API_VERSION = "primehub.io/v1alpha1"
KIND = "PhDeployment"
MAX_HISTORY = 32

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_nul(value: str) -> str:
    # A NUL cannot travel in an argv, an environment or a file name: refuse it at the door.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _one_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must be one line without control characters")
    return value


def _name_check(pattern: re.Pattern[str], what: str, rule: str) -> BeforeValidator:
    """A before-validator: it sees the raw input, before any stripping, and refuses a change."""

    def check(value: Any) -> Any:
        problem = name_problem(value, pattern, what, rule)
        if problem:
            raise ValueError(problem)
        return value

    return BeforeValidator(check)


def _name_schema(pattern: re.Pattern[str], max_length: int) -> WithJsonSchema:
    schema = {"type": "string", "pattern": f"^{pattern.pattern}$", "maxLength": max_length}
    return WithJsonSchema(schema)


# Free text may span lines (descriptions, messages, env values) but never carries a NUL;
# a `Line` (display names, URIs, images) has no control characters at all.
Text = Annotated[str, AfterValidator(_no_nul)]
Line = Annotated[str, AfterValidator(_one_line)]
# The length first, so the message says characters (a constraint after a validator counts items).
UpdateMessage = Annotated[str, Field(max_length=1000), AfterValidator(_no_nul)]
EnvName = Annotated[
    str,
    _name_check(ENV_NAME, "environment variable name", "letters, digits, '-', '.' and '_'"),
    _name_schema(ENV_NAME, 255),
]
ClientName = Annotated[
    str,
    _name_check(
        CLIENT_NAME,
        "client name",
        "1-63 letters, digits, '-', '_' or '.', starting with a letter or digit",
    ),
    _name_schema(CLIENT_NAME, 63),
]
MetadataKey = Annotated[
    str,
    _name_check(
        METADATA_KEY,
        "metadata key",
        "letters, digits, '-', '_', '.', '/', at most 128 characters, "
        "starting and ending with a letter or digit",
    ),
    _name_schema(METADATA_KEY, 128),
]
ResourceName = Annotated[
    str,
    _name_check(
        RESOURCE_NAME,
        "name",
        "1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    ),
    _name_schema(RESOURCE_NAME, 63),
]
SecretName = Annotated[
    str,
    _name_check(
        DNS1123_SUBDOMAIN,
        "secret name",
        "lowercase letters, digits, '-' and '.' (a Kubernetes object name)",
    ),
    _name_schema(DNS1123_SUBDOMAIN, 253),
]


def _id_check(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("the id must be a string")
    problem = id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


DeploymentId = Annotated[
    str,
    BeforeValidator(_id_check),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^{DNS1035.pattern}$",
            "maxLength": MAX_ID_LENGTH,
            "description": "The deployment id: a DNS-1035 label.",
        }
    ),
]


def utcnow() -> str:
    """Now as RFC 3339 UTC with milliseconds and a 'Z', the one time format of the API."""
    return format_time(datetime.now(timezone.utc))


def format_time(value: datetime) -> str:
    """Format an aware datetime the way the API does."""
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class Phase(str, enum.Enum):
    """Where a deployment is in its life, as PrimeHub names it."""

    DEPLOYING = "Deploying"
    DEPLOYED = "Deployed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    FAILED = "Failed"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        protected_namespaces=(),
        str_strip_whitespace=True,
    )

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict with the API's camelCase names."""
        return self.model_dump(by_alias=True, mode="json")


class EnvVar(_Model):
    """An environment variable passed to the model server."""

    name: EnvName
    value: Text = ""


class ClientRef(_Model):
    """A client allowed to call a private endpoint (its token lives elsewhere, hashed)."""

    name: ClientName


MAX_POLICY_ENTRIES = 256
# A user as an identity provider names it (preferred_username or sub): one line, no control
# characters; e-mail addresses and UUIDs included.
PolicyUser = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_one_line)]


class AccessPolicy(_Model):
    """Who may call a private endpoint with a bearer JWT: listed users or members of listed groups.

    Without a policy, members of the deployment's group (by the token's groups claim) may call.
    HTTP Basic clients are not subject to it: a client token is its own grant.
    """

    users: list[PolicyUser] = Field(default_factory=list, max_length=MAX_POLICY_ENTRIES)
    groups: list[ResourceName] = Field(default_factory=list, max_length=MAX_POLICY_ENTRIES)

    @model_validator(mode="after")
    def _unique(self) -> AccessPolicy:
        for what, names in (("users", self.users), ("groups", self.groups)):
            if len(names) != len(set(names)):
                raise ValueError(f"policy {what} must be unique")
        return self

    def allows(self, user: str | None, groups: list[str]) -> bool:
        """Whether a token's user and groups are named by this policy."""
        return (user is not None and user in self.users) or bool(set(groups) & set(self.groups))


class Endpoint(_Model):
    """How the endpoint is reached: by anyone, or by named clients with a token."""

    access_type: Literal["public", "private"] = "public"
    clients: list[ClientRef] = Field(default_factory=list)
    policy: AccessPolicy | None = Field(
        default=None,
        description="Private endpoints: who may call with a bearer JWT (users or groups); "
        "without it, members of the deployment's group. Ignored for public endpoints.",
    )

    @model_validator(mode="after")
    def _unique_clients(self) -> Endpoint:
        names = [c.name for c in self.clients]
        if len(names) != len(set(names)):
            raise ValueError("client names must be unique")
        return self


MAX_PREDICTORS = 4
MAX_REPLICAS = 64
DEFAULT_TARGET_CONCURRENCY = 8
DEFAULT_SCALE_TO_ZERO_AFTER = 300
# An HTTP header name (RFC 9110 token), as the gateway and ingress-nginx will look it up.
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")


class Predictor(_Model):
    """One model serving part of the traffic: a fixed replica count or autoscaling bounds."""

    name: ResourceName = "predictor1"
    # Strict: "2", 2.5 and true are mistakes to report, not values to coerce.
    # None with autoscaling (minReplicas/maxReplicas); 1 when neither is given.
    replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS, strict=True)
    min_replicas: int | None = Field(
        None,
        ge=0,
        le=MAX_REPLICAS,
        strict=True,
        description="Autoscaling lower bound; 0 allows scale to zero.",
    )
    max_replicas: int | None = Field(
        None, ge=1, le=MAX_REPLICAS, strict=True, description="Autoscaling upper bound."
    )
    target_concurrency: int | None = Field(
        None,
        ge=1,
        le=1000,
        strict=True,
        description=f"In-flight requests per replica the autoscaler aims at "
        f"(default {DEFAULT_TARGET_CONCURRENCY}).",
    )
    scale_to_zero_after_seconds: int | None = Field(
        None,
        ge=10,
        le=86400,
        strict=True,
        description=f"Idle seconds before scaling to zero (default {DEFAULT_SCALE_TO_ZERO_AFTER}); "
        "only with minReplicas: 0.",
    )
    traffic: int | None = Field(
        None,
        ge=0,
        le=100,
        strict=True,
        description="Percent of requests; the non-shadow predictors sum to 100. "
        "Optional with one predictor.",
    )
    shadow: bool = Field(
        False,
        strict=True,
        description="Receives a copy of each request; its answers are compared, never returned.",
    )
    model_image: Line | None = Field(
        None, max_length=1024, description="A container image serving the model."
    )
    model_uri: Line | None = Field(
        None,
        alias="modelURI",
        max_length=4096,
        description="Where the model bundle is: pvc://<claim>/<path>, a path on a configured "
        "volume, http(s)://, s3:// or models:/<name>/<version> (MLflow).",
    )
    instance_type: ResourceName
    image_pull_secret: SecretName | None = None
    metadata: dict[MetadataKey, Text] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_a_model(self) -> Predictor:
        if not (self.model_image or self.model_uri):
            raise ValueError("a predictor needs a modelImage or a modelURI")
        return self

    @model_validator(mode="after")
    def _replicas_or_bounds(self) -> Predictor:
        bounds = (self.min_replicas, self.max_replicas)
        tuning = (self.target_concurrency, self.scale_to_zero_after_seconds)
        if self.replicas is not None and any(v is not None for v in bounds + tuning):
            raise ValueError(
                "replicas: give either replicas or autoscaling "
                "(minReplicas/maxReplicas/targetConcurrency/scaleToZeroAfterSeconds), not both"
            )
        if all(v is None for v in bounds):
            if any(v is not None for v in tuning):
                raise ValueError(
                    "maxReplicas: required with targetConcurrency or scaleToZeroAfterSeconds"
                )
            self.replicas = 1 if self.replicas is None else self.replicas
            return self
        if self.max_replicas is None:
            raise ValueError("maxReplicas: required with minReplicas")
        if self.min_replicas is None:
            self.min_replicas = 1
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must not exceed "
                f"maxReplicas ({self.max_replicas})"
            )
        if self.scale_to_zero_after_seconds is not None and self.min_replicas != 0:
            raise ValueError("scaleToZeroAfterSeconds: only with minReplicas: 0")
        return self

    @property
    def autoscaled(self) -> bool:
        """Whether the replica count follows load between minReplicas and maxReplicas."""
        return self.max_replicas is not None

    @property
    def lowest(self) -> int:
        """The fewest replicas this predictor may run (0 when it scales to zero)."""
        return self.min_replicas if self.autoscaled else self.replicas  # type: ignore[return-value]

    @property
    def highest(self) -> int:
        """The most replicas this predictor may run (what quota counts)."""
        return self.max_replicas if self.autoscaled else self.replicas  # type: ignore[return-value]

    @property
    def concurrency_target(self) -> int:
        """In-flight requests per replica the autoscaler aims at."""
        return self.target_concurrency or DEFAULT_TARGET_CONCURRENCY

    @property
    def idle_seconds(self) -> int | None:
        """Idle seconds before scaling to zero, or None when it never scales to zero."""
        if not self.autoscaled or self.min_replicas != 0:
            return None
        return self.scale_to_zero_after_seconds or DEFAULT_SCALE_TO_ZERO_AFTER


def _header_name(value: Any) -> Any:
    if not isinstance(value, str) or not HEADER_NAME.fullmatch(value):
        raise ValueError("must be an HTTP header name: letters, digits and '-', at most 63")
    return value


HeaderName = Annotated[
    str,
    BeforeValidator(_header_name),
    WithJsonSchema({"type": "string", "pattern": f"^{HEADER_NAME.pattern}$", "maxLength": 63}),
]


class Routing(_Model):
    """How requests choose a predictor beyond the weights."""

    sticky_header: HeaderName | None = Field(
        default=None,
        description="Requests with the same value of this header go to the same predictor "
        "while the weights are unchanged.",
    )


def _traffic_problem(predictors: list[Predictor]) -> str | None:
    names = [p.name for p in predictors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        return f"predictor names must be unique ({', '.join(duplicates)} repeated)"
    shadows = [p for p in predictors if p.shadow]
    if len(shadows) > 1:
        return f"at most one shadow predictor ({', '.join(p.name for p in shadows)} are shadows)"
    for p in shadows:
        if p.traffic:
            return (
                f"the shadow predictor {p.name} must not have traffic "
                "(it gets a copy of each request)"
            )
    serving = [p for p in predictors if not p.shadow]
    if not serving:
        return "a shadow needs a predictor that answers (one without shadow: true)"
    if len(serving) == 1 and serving[0].traffic is None:
        return None
    missing = [p.name for p in serving if p.traffic is None]
    if missing:
        return f"traffic: required for each predictor when there are several ({', '.join(missing)})"
    total = sum(p.traffic or 0 for p in serving)
    if total != 100:
        return f"traffic of the non-shadow predictors must sum to 100 (got {total})"
    return None


def _checked_predictors(value: list[Predictor]) -> list[Predictor]:
    problem = _traffic_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class DeploymentSpec(_Model):
    """What the user asked for: everything but id, groupName and displayName may change."""

    display_name: Line = Field(min_length=1, max_length=255)
    description: Text = Field("", max_length=4000)
    update_message: UpdateMessage = ""
    group_name: ResourceName
    user_name: Line = ""
    stop: bool = Field(False, strict=True)
    env: list[EnvVar] = Field(default_factory=list, max_length=256)
    endpoint: Endpoint = Field(default_factory=Endpoint)
    routing: Routing = Field(default_factory=Routing)
    predictors: Annotated[
        list[Predictor],
        Field(min_length=1, max_length=MAX_PREDICTORS),
        AfterValidator(_checked_predictors),
    ]

    @property
    def predictor(self) -> Predictor:
        """The primary predictor: the answering one with the most traffic (the first on a tie)."""
        serving = [p for p in self.predictors if not p.shadow]
        return max(serving, key=lambda p: 100 if p.traffic is None else p.traffic)

    def weights(self) -> dict[str, int]:
        """Percent of requests per answering predictor (shadows excluded)."""
        serving = [p for p in self.predictors if not p.shadow]
        if len(serving) == 1:
            return {serving[0].name: 100}
        return {p.name: p.traffic or 0 for p in serving}

    @property
    def shadow(self) -> Predictor | None:
        """The shadow predictor, if any."""
        return next((p for p in self.predictors if p.shadow), None)


IMMUTABLE_SPEC_FIELDS = ("groupName", "displayName")


class _Observed(_Model):
    # Answers always carry every field: their schema says so, so TypeScript need not guess.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


def _history_optional(schema: dict[str, Any]) -> None:
    # Lists of deployments leave the history out (Deployment.summary_json).
    required = [name for name in schema.pop("required", []) if name != "history"]
    if required:
        schema["required"] = required


class HistoryEntry(_Observed):
    """One change of the spec: who, when, why, and the spec as it became."""

    revision: int
    time: str
    user: str
    update_message: str = ""
    spec: DeploymentSpec


class ReplicaStatus(_Observed):
    """One replica as the engine sees it."""

    name: str
    predictor: str = ""
    ready: bool = False
    phase: str = "Starting"
    restarts: int = 0
    message: str = ""
    start_time: str | None = None


class PredictorPhase(str, enum.Enum):
    """Where one predictor is: serving, on its way, idle at zero, or broken."""

    DEPLOYING = "Deploying"
    DEPLOYED = "Deployed"
    SCALED_TO_ZERO = "ScaledToZero"
    WAKING_UP = "WakingUp"
    STOPPED = "Stopped"
    FAILED = "Failed"


class PredictorStatus(_Observed):
    """One predictor as the engine sees it."""

    name: str
    traffic: int = 0
    shadow: bool = False
    replicas: int = 0
    available_replicas: int = 0
    phase: PredictorPhase = PredictorPhase.DEPLOYING
    message: str = ""


class DeploymentStatus(_Observed):
    """What the engine observed; never written by users."""

    model_config = ConfigDict(json_schema_extra=_history_optional)

    phase: Phase = Phase.DEPLOYING
    message: str = ""
    replicas: int = 0
    available_replicas: int = 0
    endpoint: str | None = None
    creation_time: str | None = None
    last_updated: str | None = None
    replica_statuses: list[ReplicaStatus] = Field(default_factory=list)
    predictors: list[PredictorStatus] = Field(
        default_factory=list, description="Per predictor, in spec order."
    )
    sample_request: dict[str, Any] | None = Field(
        default=None, description="The bundle's recorded sample request, when the engine knows it."
    )
    history: list[HistoryEntry] = Field(
        default_factory=list, max_length=MAX_HISTORY, description="Newest first."
    )


class DeploymentRecord(_Observed):
    """A deployment: id, the desired spec and the observed status."""

    id: DeploymentId
    spec: DeploymentSpec
    status: DeploymentStatus = Field(default_factory=DeploymentStatus)
    resource_version: str = "0"

    def summary_json(self) -> dict[str, Any]:
        """The object without its history, for lists."""
        data = self.to_json()
        data["status"].pop("history", None)
        return data

    def to_custom_resource(self) -> dict[str, Any]:
        """The Kubernetes custom resource form of this deployment."""
        data = self.to_json()
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": self.id, "resourceVersion": self.resource_version},
            "spec": data["spec"],
            "status": data["status"],
        }


INDEX_MERGED_LISTS = frozenset({"predictors"})
_FIXED = ("replicas",)
_AUTOSCALING = ("minReplicas", "maxReplicas", "targetConcurrency", "scaleToZeroAfterSeconds")


def _merge_predictor(target: Any, patch: dict[str, Any]) -> Any:
    # Switching between a fixed count and autoscaling replaces the other mode's fields, so
    # {"minReplicas": 0, "maxReplicas": 3} works without also sending "replicas": null.
    if isinstance(target, dict):
        if any(patch.get(k) is not None for k in _FIXED):
            target = {k: v for k, v in target.items() if k not in _AUTOSCALING}
        elif any(patch.get(k) is not None for k in ("minReplicas", "maxReplicas")):
            target = {k: v for k, v in target.items() if k not in _FIXED}
    return merge_patch(target, patch)


def merge_patch(target: Any, patch: Any, key: str | None = None) -> Any:
    """JSON merge patch (RFC 7386), except that `predictors` merges item by item.

    When every item of a `predictors` patch has a name, the patch lists the predictors (their
    membership and order) and each is merged onto the old one of that name, so unchanged fields
    may be left out; a predictor not listed is removed. Without names, items merge by index, so
    `{"predictors": [{"replicas": 3}]}` changes one field of a single predictor. Every other list
    (env, clients) is replaced whole.
    """
    if isinstance(patch, dict):
        result = dict(target) if isinstance(target, dict) else {}
        for name, value in patch.items():
            if value is None:
                result.pop(name, None)
            else:
                result[name] = merge_patch(result.get(name), value, name)
        return result
    if (
        key in INDEX_MERGED_LISTS
        and isinstance(patch, list)
        and isinstance(target, list)
        and patch
        and all(isinstance(item, dict) for item in patch)
        and all(isinstance(item, dict) for item in target)
    ):
        if all(isinstance(item.get("name"), str) for item in patch):
            old = {item.get("name"): item for item in target}
            return [_merge_predictor(old.get(item["name"], {}), item) for item in patch]
        if len(patch) <= len(target):
            merged = [_merge_predictor(old, new) for old, new in zip(target, patch, strict=False)]
            return merged + target[len(patch) :]
    return patch


def pydantic_problems(error: Exception) -> list[dict[str, str]]:
    """Turn a pydantic ValidationError into [{field, message}] a person can read."""
    problems = []
    for item in getattr(error, "errors", lambda: [])():
        loc = ".".join(str(part) for part in item.get("loc", ()))
        msg = item.get("msg", "invalid")
        msg = msg.removeprefix("Value error, ")
        if item.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif item.get("type") == "missing":
            msg = "required"
        problems.append({"field": loc, "message": msg})
    return problems


def describe_problems(problems: list[dict[str, str]]) -> str:
    """One line for a list of field problems."""
    return "; ".join(
        f"{p['field']}: {p['message']}" if p["field"] else p["message"] for p in problems
    )
