"""Checks of request bodies and built specs shared by every service operation."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as PydanticError

from .errors import ValidationError
from .ids import id_problem
from .models import DeploymentSpec, describe_problems, pydantic_problems


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


def requested_id(body: dict[str, Any]) -> str | None:
    """The id asked for by `id` or the custom resource's `metadata.name`; None to generate one."""
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValidationError(
            'metadata must be an object, e.g. {"name": "my-model"}',
            details=[{"field": "metadata", "message": "must be an object"}],
        )
    found: dict[str, str] = {}
    for field, value in (("id", body.get("id")), ("metadata.name", (metadata or {}).get("name"))):
        if value is None:
            continue
        problem = "the id must be a string" if not isinstance(value, str) else id_problem(value)
        if problem:
            raise ValidationError(problem, details=[{"field": field, "message": problem}])
        found[field] = value
    if len(set(found.values())) > 1:
        raise ValidationError(
            "id and metadata.name name different deployments; give one of them",
            details=[{"field": "id", "message": "differs from metadata.name"}],
        )
    return next(iter(found.values()), None)


def resource_version(body: dict[str, Any]) -> str | None:
    """The resourceVersion an update was based on (top level or metadata), if any."""
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValidationError(
            "metadata must be an object", details=[{"field": "metadata", "message": "invalid"}]
        )
    version = body.get("resourceVersion")
    if version is None and metadata:
        version = metadata.get("resourceVersion")
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise ValidationError(
            "resourceVersion must be the string of the deployment you read",
            details=[{"field": "resourceVersion", "message": "must be a string"}],
        )
    return str(version)
