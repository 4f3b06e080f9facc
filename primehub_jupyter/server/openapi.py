"""The REST API's OpenAPI 3.1 document; schemas come from the pydantic models themselves."""

from __future__ import annotations

import functools
from typing import Any

from .._version import __version__
from ..core.ids import MAX_INVOKE_PATH, PATH_SEGMENT
from ..core.jobs import JOB_ID
from ..core.schemas import api_models, component_schemas

REF = "#/components/schemas/{model}"


@functools.cache
def _schemas() -> dict[str, Any]:
    """Every request and response body, generated from core/bodies.py's models."""
    return component_schemas(api_models(), ref_template=REF)


def _ref(name: str) -> dict[str, Any]:
    """A reference to a component schema."""
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("ErrorBody"), "Malformed request (e.g. not JSON)."),
    "403": _json(_ref("ErrorBody"), "Not a member of the group, or deployment disabled for it."),
    "404": _json(_ref("ErrorBody"), "No such deployment visible to this user."),
    "409": _json(_ref("ErrorBody"), "Conflict: the id exists, or a stale resourceVersion."),
    "422": _json(_ref("ErrorBody"), "A field is invalid; `details` lists which."),
}


def _op(summary: str, responses: dict[str, Any], *, errors: tuple[str, ...] = (), **extra: Any):
    op: dict[str, Any] = {"summary": summary, "responses": dict(responses)}
    op["responses"].update({code: _ERRORS[code] for code in errors})
    op.update(extra)
    return op


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_OBJECT = {"type": "object"}
_SEGMENT = PATH_SEGMENT.pattern
_INVOKE_PATH = {
    "type": "string",
    "pattern": f"^{_SEGMENT}(/{_SEGMENT})*$",
    "maxLength": MAX_INVOKE_PATH,
    "description": "A path of the deployment's endpoint, e.g. api/v1.0/predictions or "
    "v2/models/<name>/infer: relative segments of letters, digits, '-', '_' and '.', "
    "never '.', '..', an empty segment, a percent-encoding or a URL (400).",
}
_MESSAGE_BODY = {"content": {"application/json": {"schema": _ref("ChangeMessage")}}}


def _body(model: str) -> dict[str, Any]:
    """A required JSON request body of a component schema."""
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


_PREDICTION = {
    "required": True,
    "content": {
        "application/json": {
            "schema": _OBJECT,
            "example": {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}},
        }
    },
}


def _paths() -> dict[str, Any]:
    deployment = _json(_ref("DeploymentRecord"), "The deployment.")
    return {
        "/me": {
            "get": _op("The signed-in user and their groups", {"200": _json(_ref("Me"), "Me")})
        },
        "/openapi.json": {"get": _op("This document", {"200": _json(_OBJECT, "OpenAPI 3.1")})},
        "/groups": {
            "get": _op("Groups with quota and usage", {"200": _json(_ref("GroupList"), "Groups")})
        },
        "/groups/{group}": {
            "parameters": [
                {"name": "group", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "patch": _op(
                "Enable or disable model deployment for a group (admins)",
                {"200": _json(_ref("GroupInfo"), "The group")},
                errors=("400", "403", "404", "422"),
                requestBody=_body("GroupSettings"),
            ),
        },
        "/instance-types": {
            "get": _op(
                "Instance types available to the user (optionally of one group)",
                {"200": _json(_ref("InstanceTypeList"), "Instance types")},
                parameters=[{"name": "group", "in": "query", "schema": {"type": "string"}}],
            )
        },
        "/deployments": {
            "get": _op(
                "List deployments of the user's groups, newest update first",
                {"200": _json(_ref("DeploymentList"), "Deployments")},
                parameters=[
                    {"name": "name", "in": "query", "schema": {"type": "string"}},
                    {"name": "mine", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "group", "in": "query", "schema": {"type": "string"}},
                ],
            ),
            "post": _op(
                "Create a deployment",
                {"201": deployment},
                errors=("400", "403", "409", "422"),
                requestBody=_body("CreateDeployment"),
            ),
        },
        "/deployments/{id}": {
            "parameters": [_ID],
            "get": _op(
                "A deployment with status and history", {"200": deployment}, errors=("404",)
            ),
            "patch": _op(
                "Update a deployment (rolling update; history grows)",
                {"200": deployment},
                errors=("400", "403", "404", "409", "422"),
                requestBody=_body("UpdateDeployment"),
            ),
            "delete": _op(
                "Delete a deployment", {"204": {"description": "Deleted"}}, errors=("403", "404")
            ),
        },
        "/deployments/{id}/stop": {
            "parameters": [_ID],
            "post": _op(
                "Stop: replicas go away, the spec stays",
                {"200": deployment},
                errors=("400", "403", "404", "422"),
                requestBody=_MESSAGE_BODY,
            ),
        },
        "/deployments/{id}/start": {
            "parameters": [_ID],
            "post": _op(
                "Start a stopped deployment",
                {"200": deployment},
                errors=("400", "403", "404", "422"),
                requestBody=_MESSAGE_BODY,
            ),
        },
        "/deployments/{id}/history": {
            "parameters": [_ID],
            "get": _op(
                "History, newest first (at most 32)",
                {"200": _json(_ref("HistoryList"), "History")},
                errors=("404",),
            ),
        },
        "/deployments/{id}/history/{revision}": {
            "parameters": [
                _ID,
                {
                    "name": "revision",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                },
            ],
            "get": _op(
                "One history entry", {"200": _json(_ref("HistoryEntry"), "Entry")}, errors=("404",)
            ),
        },
        "/deployments/{id}/clients": {
            "parameters": [_ID],
            "get": _op(
                "Client names of a private endpoint",
                {"200": _json(_ref("ClientList"), "Clients")},
                errors=("404",),
            ),
            "post": _op(
                "Add or replace a client; its token is returned this once",
                {"201": _json(_ref("ClientCreated"), "The client and its token")},
                errors=("400", "403", "404", "422"),
                requestBody=_body("NewClient"),
            ),
        },
        "/deployments/{id}/clients/{name}": {
            "parameters": [
                _ID,
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "delete": _op(
                "Delete a client", {"204": {"description": "Deleted"}}, errors=("403", "404")
            ),
        },
        "/deployments/{id}/replicas": {
            "parameters": [_ID],
            "get": _op(
                "Replica names that have logs",
                {"200": _json(_ref("ReplicaList"), "Replicas")},
                errors=("404",),
            ),
        },
        "/deployments/{id}/logs": {
            "parameters": [_ID],
            "get": _op(
                "Logs with UTC timestamps: tail, follow (a stream) or download",
                {
                    "200": {
                        "description": "Log lines (format=json: the replicas and the lines)",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/json": {"schema": _ref("LogLines")},
                        },
                    }
                },
                errors=("400", "404"),
                parameters=[
                    {
                        "name": "replica",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "Replica name or index; all current replicas when absent.",
                    },
                    {
                        "name": "tail",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^([0-9]{1,6}|all|-1)$"},
                        "description": "Last N lines (default 2000) or 'all'.",
                    },
                    {"name": "follow", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "download", "in": "query", "schema": {"type": "boolean"}},
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["text", "json"]},
                    },
                ],
            ),
        },
        "/deployments/{id}/metrics": {
            "parameters": [_ID],
            "get": _op(
                "Requests/s, success rate, 4xx, 5xx, latency, reward and replica usage over time",
                {
                    "200": _json(
                        _ref("MetricsReport"), "Series on a shared time axis (docs/internals.md)"
                    )
                },
                errors=("400", "404", "422"),
                parameters=[
                    {"name": "window", "in": "query", "schema": {"type": "number", "default": 900}},
                    {"name": "step", "in": "query", "schema": {"type": "number", "default": 5}},
                ],
            ),
        },
        "/deployments/{id}/rollback": {
            "parameters": [_ID],
            "post": _op(
                "Re-apply an earlier history entry's spec as a new update",
                {"200": deployment},
                errors=("400", "403", "404", "422"),
                requestBody=_body("Rollback"),
            ),
        },
        "/deployments/{id}/compare": {
            "parameters": [_ID],
            "get": _op(
                "Compare the predictors: requests, errors, latency, feedback, and a "
                "significance test of each challenger's success share against the primary's",
                {"200": _json(_ref("ComparisonReport"), "One row per predictor, primary first")},
                errors=("404",),
            ),
        },
        "/deployments/{id}/promote": {
            "parameters": [_ID],
            "post": _op(
                "Send every request to one predictor and remove the others (an update; "
                "rolling back to the revision before brings the split back)",
                {"200": deployment},
                errors=("400", "403", "404", "409", "422"),
                requestBody=_body("Promote"),
            ),
        },
        "/deployments/{id}/catalog": {
            "parameters": [_ID],
            "get": _op(
                "The deployment's service catalog: an OpenAPI 3 document of its endpoint, built "
                "from the model's signature with its sample as examples",
                {
                    "200": _json(_ref("CatalogDocument"), "OpenAPI document; servers = endpoint"),
                    "503": _json(_ref("ErrorBody"), "Not deployed now; no replica to ask."),
                },
                errors=("404",),
            ),
        },
        "/deployments/{id}/invoke": {
            "parameters": [
                _ID,
                {"name": "path", "in": "query", "schema": {**_INVOKE_PATH, "default": _DEFAULT}},
            ],
            "post": _op(
                "Send a prediction request as the signed-in user (private endpoints too)",
                {"200": _json(_OBJECT, "The model's response")},
                errors=("400", "404"),
                requestBody=_PREDICTION,
            ),
        },
        "/deployments/{id}/invoke/{path}": {
            "parameters": [
                _ID,
                {"name": "path", "in": "path", "required": True, "schema": _INVOKE_PATH},
            ],
            "post": _op(
                "Send a request to a path of the endpoint as the signed-in user",
                {"200": _json(_OBJECT, "The model's response")},
                errors=("400", "404"),
                requestBody=_PREDICTION,
            ),
        },
    }


_DEFAULT = "api/v1.0/predictions"
_JOB = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{JOB_ID.pattern}$"},
}


def _job_paths() -> dict[str, Any]:
    job = _json(_ref("JobRecord"), "The job with its progress.")
    return {
        "/deployments/{id}/jobs": {
            "parameters": [_ID],
            "get": _op(
                "The deployment's batch jobs, newest first (the last 50)",
                {"200": _json(_ref("JobList"), "Jobs")},
                errors=("404",),
            ),
            "post": _op(
                "Start a batch job: score a file (CSV, Parquet, JSONL) with the deployment's "
                "bundle in its own process; 422 names a missing input, an unknown format, a "
                "missing column, an existing output (without overwrite), an unknown predictor "
                "or the quota",
                {"201": job},
                errors=("400", "403", "404", "422"),
                requestBody=_body("CreateJob"),
            ),
        },
        "/deployments/{id}/jobs/{job_id}": {
            "parameters": [_ID, _JOB],
            "get": _op("One batch job", {"200": job}, errors=("404",)),
            "delete": _op(
                "Cancel a job that has not finished (200, phase Cancelled) or remove a "
                "finished one (204; its output stays)",
                {"200": job, "204": {"description": "Removed"}},
                errors=("403", "404"),
            ),
        },
        "/deployments/{id}/jobs/{job_id}/logs": {
            "parameters": [_ID, _JOB],
            "get": _op(
                "The job process's log lines, oldest first",
                {
                    "200": {
                        "description": "The job (as the one replica) and its lines",
                        "content": {
                            "application/json": {"schema": _ref("LogLines")},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    }
                },
                errors=("400", "404"),
                parameters=[
                    {
                        "name": "tail",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^([0-9]{1,6}|all|-1)$"},
                        "description": "Last N lines (default 2000) or 'all'.",
                    },
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["json", "text"]},
                    },
                ],
            ),
        },
    }


def openapi_document(base_url: str = "/") -> dict[str, Any]:
    """The OpenAPI document for a server mounted at `base_url`."""
    from .events import openapi_paths  # here: events.py imports the handlers, which import us

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PrimeHub Model Deployment API",
            "version": __version__,
            "description": "Deploy, update, stop, start, delete and observe ML model "
            "deployments. Authenticate as for the Jupyter server (token or cookie).",
        },
        "servers": [{"url": base_url.rstrip("/") + "/primehub/api"}],
        "security": [{"token": []}],
        "paths": {
            **_paths(),
            **_job_paths(),
            **openapi_paths({"content": _json(_ref("ErrorBody"), "")["content"]}),
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`token <Jupyter server token>`",
                },
            },
        },
    }
