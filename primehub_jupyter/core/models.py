"""The deployment object (PrimeHub's PhDeployment): spec, status and history, as one JSON shape."""

from __future__ import annotations

import enum
import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from .ids import id_problem

API_VERSION = "primehub.io/v1alpha1"
KIND = "PhDeployment"
MAX_HISTORY = 32

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_CLIENT_NAME = re.compile(r"^[a-zA-Z0-9][-_.a-zA-Z0-9]{0,62}$")
_METADATA_KEY = re.compile(r"^[a-zA-Z0-9]([-_./a-zA-Z0-9]{0,126}[a-zA-Z0-9])?$")


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

    name: str
    value: str = ""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(f"'{value}' is not a valid environment variable name")
        return value


class ClientRef(_Model):
    """A client allowed to call a private endpoint (its token lives elsewhere, hashed)."""

    name: str

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_client_name(value)


def check_client_name(value: str) -> str:
    """Validate a client name: it becomes the user name of HTTP Basic auth."""
    if not _CLIENT_NAME.match(value):
        raise ValueError(
            f"'{value}' is not a valid client name: 1-63 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return value


class Endpoint(_Model):
    """How the endpoint is reached: by anyone, or by named clients with a token."""

    access_type: Literal["public", "private"] = "public"
    clients: list[ClientRef] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_clients(self) -> Endpoint:
        names = [c.name for c in self.clients]
        if len(names) != len(set(names)):
            raise ValueError("client names must be unique")
        return self


class Predictor(_Model):
    """The model to serve and how many replicas serve it."""

    name: str = "predictor1"
    replicas: int = Field(1, ge=1, le=64)
    model_image: str | None = None
    model_uri: str | None = Field(None, alias="modelURI")
    instance_type: str = Field(min_length=1)
    image_pull_secret: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _METADATA_KEY.match(key):
                raise ValueError(
                    f"metadata key '{key}' is invalid: letters, digits, '-', '_', '.', '/', "
                    "at most 128 characters, starting and ending with a letter or digit"
                )
        return value

    @model_validator(mode="after")
    def _needs_a_model(self) -> Predictor:
        if not (self.model_image or self.model_uri):
            raise ValueError("a predictor needs a modelImage or a modelURI")
        return self


class DeploymentSpec(_Model):
    """What the user asked for: everything but id, groupName and displayName may change."""

    display_name: str = Field(min_length=1, max_length=255)
    description: str = Field("", max_length=4000)
    update_message: str = Field("", max_length=1000)
    group_name: str = Field(min_length=1)
    user_name: str = ""
    stop: bool = False
    env: list[EnvVar] = Field(default_factory=list)
    endpoint: Endpoint = Field(default_factory=Endpoint)
    predictors: list[Predictor] = Field(min_length=1, max_length=1)

    @property
    def predictor(self) -> Predictor:
        """The (single) predictor."""
        return self.predictors[0]


IMMUTABLE_SPEC_FIELDS = ("groupName", "displayName")


class HistoryEntry(_Model):
    """One change of the spec: who, when, why, and the spec as it became."""

    revision: int
    time: str
    user: str
    update_message: str = ""
    spec: DeploymentSpec


class ReplicaStatus(_Model):
    """One replica as the engine sees it."""

    name: str
    ready: bool = False
    phase: str = "Starting"
    restarts: int = 0
    message: str = ""
    start_time: str | None = None


class DeploymentStatus(_Model):
    """What the engine observed; never written by users."""

    phase: Phase = Phase.DEPLOYING
    message: str = ""
    replicas: int = 0
    available_replicas: int = 0
    endpoint: str | None = None
    creation_time: str | None = None
    last_updated: str | None = None
    replica_statuses: list[ReplicaStatus] = Field(default_factory=list)
    sample_request: dict[str, Any] | None = None
    history: list[HistoryEntry] = Field(default_factory=list)


class Deployment(_Model):
    """A deployment: id, the desired spec and the observed status."""

    id: str
    spec: DeploymentSpec
    status: DeploymentStatus = Field(default_factory=DeploymentStatus)
    resource_version: str = "0"

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        problem = id_problem(value)
        if problem:
            raise ValueError(problem)
        return value

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


def merge_patch(target: Any, patch: Any, key: str | None = None) -> Any:
    """JSON merge patch (RFC 7386), except that `predictors` merges item by item.

    Merging `predictors` by index lets `{"predictors": [{"replicas": 3}]}` change one field
    without restating the whole predictor; every other list (env, clients) is replaced whole.
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
        and len(patch) <= len(target)
    ):
        merged = [merge_patch(old, new) for old, new in zip(target, patch, strict=False)]
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
        problems.append({"field": loc, "message": msg})
    return problems


def describe_problems(problems: list[dict[str, str]]) -> str:
    """One line for a list of field problems."""
    return "; ".join(
        f"{p['field']}: {p['message']}" if p["field"] else p["message"] for p in problems
    )
