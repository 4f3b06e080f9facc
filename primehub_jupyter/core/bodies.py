"""The REST API's request and response bodies, and the checks every body goes through."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticError
from typing_extensions import Self

from .errors import BadRequest, ValidationError
from .jobs import (
    DEFAULT_MAX_FAILED_SHARE,
    MAX_CHUNK_ROWS,
    JobFormat,
    JobRecord,
    JobUri,
)
from .models import (
    ClientName,
    ClientRef,
    DeploymentId,
    DeploymentRecord,
    DeploymentSpec,
    HistoryEntry,
    UpdateMessage,
    _Model,
    _Observed,
    describe_problems,
    pydantic_problems,
)


def parse_spec(data: Any) -> DeploymentSpec:
    """Validate a spec document, turning pydantic's errors into one readable 422."""
    if not isinstance(data, dict):
        raise ValidationError("spec must be an object")
    try:
        return DeploymentSpec.model_validate(data)
    except PydanticError as error:
        problems = pydantic_problems(error)
        for p in problems:
            p["field"] = f"spec.{p['field']}" if p["field"] else "spec"
        raise ValidationError(describe_problems(problems), details=problems) from None


def revalidate(spec: DeploymentSpec) -> DeploymentSpec:
    """Run a spec built in code (model_copy skips validation) through the create-time checks."""
    return parse_spec(spec.model_dump(by_alias=True, mode="json", warnings=False))


def _version(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("resourceVersion must be the string of the deployment you read")
    return str(value)


ResourceVersion = Annotated[
    str,
    BeforeValidator(_version),
    WithJsonSchema(
        {
            "type": "string",
            "description": "When given, the change fails with 409 if the deployment changed "
            "since; without it the change is applied to the newest version.",
        }
    ),
]


# ---- requests ---------------------------------------------------------------------------


class _Request(_Model):
    """A request body: `parse` answers 400 for a body that is not an object, 422 for a field."""

    # What a body of this kind looks like, said in the 400 for one that is not an object.
    usage: ClassVar[str] = "the body must be a JSON object"
    # Fields whose value must be an object for the request to make sense at all (else 400).
    objects: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        # Named together and first: a misspelt field explains the errors that follow from it.
        if isinstance(data, dict):
            known = {field.alias or name for name, field in cls.model_fields.items()}
            unknown = sorted(str(key) for key in data if key not in known)
            if unknown:
                raise ValueError(f"unknown fields: {', '.join(unknown)}")
        return data

    @classmethod
    def parse(cls, data: Any, **context: Any) -> Self:
        """Validate a parsed JSON body; BadRequest (400) or ValidationError (422) if it fails."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict) or any(
            not isinstance(data.get(name), dict) for name in cls.objects
        ):
            raise BadRequest(cls.usage)
        try:
            return cls.model_validate(data, context=context)
        except PydanticError as error:
            problems = pydantic_problems(error)
            raise ValidationError(describe_problems(problems), details=problems) from None


class ResourceMetadata(_Model):
    """The custom resource's metadata: its name is the id; other keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: DeploymentId | None = None
    resource_version: ResourceVersion | None = None


class _ResourceRequest(_Request):
    """A body that may come as the custom resource: `apiVersion`, `kind` and `metadata`."""

    id: DeploymentId | None = None
    api_version: str | None = None
    kind: str | None = None
    metadata: ResourceMetadata | None = None

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_object(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, dict):
            raise ValueError('metadata must be an object, e.g. {"name": "my-model"}')
        return value

    @model_validator(mode="after")
    def _one_name(self) -> Self:
        named = self.metadata.name if self.metadata else None
        if self.id is not None and named is not None and self.id != named:
            raise ValueError("id and metadata.name name different deployments; give one of them")
        return self

    @property
    def requested_id(self) -> str | None:
        """The id asked for by `id` or `metadata.name`; None to generate one."""
        return self.id if self.id is not None else (self.metadata.name if self.metadata else None)


class CreateDeployment(_ResourceRequest):
    """The body of `POST deployments`: `{"id"?, "spec"}` or the custom resource form."""

    usage: ClassVar[str] = "the body must be a JSON object with a 'spec'"

    spec: DeploymentSpec
    status: dict[str, Any] | None = Field(None, description="Ignored: the engine owns it.")

    @field_validator("spec", mode="before")
    @classmethod
    def _owner(cls, value: Any, info: ValidationInfo) -> Any:
        # The signed-in user owns what they create, whatever the body says.
        user = (info.context or {}).get("user")
        if user is not None and isinstance(value, dict):
            return {**value, "userName": user}
        return value


SpecPatch = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "description": "A JSON merge patch of the spec; list items of objects merge by "
            "index. groupName and displayName are immutable.",
            "x-merge-patch-of": "DeploymentSpec",
        }
    ),
]


class UpdateDeployment(_ResourceRequest):
    """The body of `PATCH deployments/<id>`: a merge patch of the spec."""

    usage: ClassVar[str] = "the body must be a JSON object with a 'spec' object to merge"
    objects: ClassVar[tuple[str, ...]] = ("spec",)

    spec: SpecPatch
    resource_version: ResourceVersion | None = None

    @property
    def based_on(self) -> str | None:
        """The resourceVersion the update was based on (top level or metadata), if any."""
        if self.resource_version is not None:
            return self.resource_version
        return self.metadata.resource_version if self.metadata else None

    @property
    def patch(self) -> dict[str, Any]:
        """The spec patch; `userName` is the server's to set, never the caller's."""
        return {key: value for key, value in self.spec.items() if key != "userName"}


class ChangeMessage(_Request):
    """The body of `POST .../stop` and `POST .../start`, when one is given."""

    usage: ClassVar[str] = 'the body, when given, must be {"updateMessage": "..."}'

    update_message: UpdateMessage | None = None


class Rollback(_Request):
    """The body of `POST .../rollback`."""

    usage: ClassVar[str] = 'the body must be {"revision": N}'

    revision: int = Field(strict=True, ge=1, description="A revision of the history.")
    update_message: UpdateMessage | None = None


class NewClient(_Request):
    """The body of `POST .../clients`."""

    usage: ClassVar[str] = 'the body must be {"name": "<client name>"}'

    name: ClientName


class Promote(_Request):
    """The body of `POST .../promote`: the predictor to send every request to."""

    usage: ClassVar[str] = 'the body must be {"predictor": "<predictor name>"}'

    predictor: str = Field(
        min_length=1, max_length=63, description="An answering (not shadow) predictor's name."
    )
    update_message: UpdateMessage | None = None


class GroupSettings(_Request):
    """The body of `PATCH groups/<group>` (administrators)."""

    usage: ClassVar[str] = 'the body must be {"enabledDeployment": true|false}'

    enabled_deployment: bool = Field(strict=True)


class CreateJob(_Request):
    """The body of `POST deployments/<id>/jobs`: score a file with the deployment's model.

    Relative paths are resolved like `modelURI` (the caller's working directory; the server's
    root directory through the REST API). `format` defaults to the input's file ending.
    """

    usage: ClassVar[str] = 'the body must be {"input": "<path or URI>", "output": "<path or URI>"}'

    input: JobUri
    output: JobUri
    format: JobFormat | None = None
    predictor: str | None = Field(
        None, min_length=1, max_length=63, description="Default: the primary predictor."
    )
    chunk_rows: int | None = Field(None, ge=1, le=MAX_CHUNK_ROWS, strict=True)
    output_columns: Literal["all", "predictions"] = "all"
    overwrite: bool = Field(False, strict=True, description="Replace an existing output file.")
    max_failed_share: float = Field(DEFAULT_MAX_FAILED_SHARE, ge=0.0, le=1.0)


# ---- responses --------------------------------------------------------------------------


class ErrorBody(_Observed):
    """Every 4xx/5xx answer: a message for a person, a reason for code, field details."""

    message: str = Field(description="What went wrong, for a person.")
    reason: str = "Error"
    details: list[dict[str, Any]] = Field(
        default_factory=list, description="Which fields were wrong, when some were."
    )


class DeploymentList(_Observed):
    """`GET deployments`: newest update first, each without its history."""

    deployments: list[DeploymentRecord]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(
            by_alias=True,
            mode="json",
            exclude={"deployments": {"__all__": {"status": {"history"}}}},
        )


class HistoryList(_Observed):
    """`GET deployments/<id>/history`: newest first."""

    history: list[HistoryEntry]


class ClientList(_Observed):
    """`GET deployments/<id>/clients`: names only; tokens are never shown again."""

    clients: list[ClientRef]


class ClientCreated(_Observed):
    """`POST deployments/<id>/clients`: the client and its token, returned this once."""

    name: ClientName
    token: str = Field(description="Returned once, when the client is added; keep it.")


class ReplicaList(_Observed):
    """`GET deployments/<id>/replicas`: the replicas that have logs."""

    replicas: list[str]


class JobList(_Observed):
    """`GET deployments/<id>/jobs`: newest first, at most the last 50."""

    jobs: list[JobRecord]


class LogLines(_Observed):
    """`GET deployments/<id>/logs?format=json`: the replicas and the lines, oldest first."""

    replicas: list[str]
    lines: list[str]


class InstanceTypeInfo(_Observed):
    """An instance type a user can pick."""

    name: str
    display_name: str
    description: str
    cpu: float
    memory: str
    gpu: int
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]


class QuotaInfo(_Observed):
    """A group's limits; null means unlimited."""

    cpu: float | None
    memory: str | None
    gpu: int | None
    max_deployments: int | None


class UsageInfo(_Observed):
    """What a group's running deployments hold."""

    cpu: float
    memory: str
    gpu: int
    deployments: int


class GroupInfo(_Observed):
    """A group of the user, with its quota, current usage and instance types."""

    name: str
    display_name: str
    enabled_deployment: bool
    is_member: bool
    quota: QuotaInfo
    usage: UsageInfo
    instance_types: list[InstanceTypeInfo]


class GroupList(_Observed):
    """`GET groups`."""

    groups: list[GroupInfo]


class InstanceTypeList(_Observed):
    """`GET instance-types`."""

    instance_types: list[InstanceTypeInfo]


class Me(_Observed):
    """`GET me`: the signed-in user, whether an admin, the engine and the groups."""

    name: str
    is_admin: bool
    engine: str
    endpoint_base: str | None
    groups: list[GroupInfo]


class CatalogDocument(_Observed):
    """`GET deployments/<id>/catalog`: the deployment's OpenAPI 3 document (its service catalog).

    Built by the model server from the bundle's signature and sample (`serving/catalog.py`);
    `servers` is the deployment's endpoint URL, so Swagger UI's "try it out" calls the endpoint.
    """

    # The document is OpenAPI's, not ours: its other top-level keys pass through.
    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=True)

    openapi: str
    info: dict[str, Any]
    servers: list[dict[str, Any]]
    paths: dict[str, Any]


REQUESTS: tuple[type[_Model], ...] = (
    CreateDeployment,
    UpdateDeployment,
    ChangeMessage,
    Rollback,
    Promote,
    NewClient,
    GroupSettings,
    CreateJob,
)
RESPONSES: tuple[type[_Model], ...] = (
    DeploymentRecord,
    DeploymentList,
    HistoryEntry,
    HistoryList,
    ClientList,
    ClientCreated,
    ReplicaList,
    LogLines,
    GroupInfo,
    GroupList,
    InstanceTypeList,
    Me,
    CatalogDocument,
    JobRecord,
    JobList,
    ErrorBody,
)
