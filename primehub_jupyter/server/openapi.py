"""The REST API's OpenAPI 3.1 document; schemas come from the pydantic models themselves."""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from .._version import __version__
from ..core.ids import CLIENT_NAME, DNS1035, MAX_INVOKE_PATH, PATH_SEGMENT
from ..core.models import Deployment, DeploymentSpec, HistoryEntry

REF = "#/components/schemas/{model}"


@functools.cache
def _schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [(m, "serialization") for m in (Deployment, DeploymentSpec, HistoryEntry)],
        by_alias=True,
        ref_template=REF,
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas["Error"] = {
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": {"type": "string", "description": "What went wrong, for a person."},
            "reason": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    }
    schemas["CreateDeployment"] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "id": {
                "type": "string",
                "pattern": f"^{DNS1035.pattern}$",
                "maxLength": 63,
                "description": "DNS-1035 label; generated when absent.",
            },
            "spec": {"$ref": REF.format(model="DeploymentSpec")},
        },
    }
    schemas.update(_patch_schemas(schemas))
    schemas["UpdateDeployment"] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                **_ref("DeploymentSpecPatch"),
                "description": "A JSON merge patch of the spec; list items of objects merge by "
                "index. groupName and displayName are immutable.",
            },
            "resourceVersion": {
                "type": "string",
                "description": "When given, the update fails with 409 if the deployment changed; "
                "without it the change is applied to the newest version.",
            },
        },
    }
    schemas["Client"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": f"^{CLIENT_NAME.pattern}$", "maxLength": 63},
            "token": {"type": "string", "description": "Returned once, when the client is added."},
        },
    }
    return schemas


_PATCHED = ("DeploymentSpec", "Predictor", "Endpoint", "EnvVar", "ClientRef")


def _patch_schemas(schemas: dict[str, Any]) -> dict[str, Any]:
    """`<Model>Patch` copies of the spec's schemas with nothing required (a merge patch)."""
    patches = {}
    for name in _PATCHED:
        patch = copy.deepcopy(schemas[name])
        patch.pop("required", None)
        patch["title"] = f"{name}Patch"
        patches[f"{name}Patch"] = _repoint(patch)
    return patches


def _repoint(node: Any) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in _PATCHED:
            return {**node, "$ref": ref + "Patch"}
        return {key: _repoint(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_repoint(item) for item in node]
    return node


def _ref(name: str) -> dict[str, Any]:
    """A reference to a component schema."""
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "Malformed request (e.g. not JSON)."),
    "403": _json(_ref("Error"), "Not a member of the group, or deployment disabled for it."),
    "404": _json(_ref("Error"), "No such deployment visible to this user."),
    "409": _json(_ref("Error"), "Conflict: the id exists, or a stale resourceVersion."),
    "422": _json(_ref("Error"), "A field is invalid; `details` lists which."),
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
_MESSAGE_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"updateMessage": {"type": "string", "maxLength": 1000}},
            }
        }
    }
}
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
    deployment = _json(_ref("Deployment"), "The deployment.")
    return {
        "/me": {"get": _op("The signed-in user and their groups", {"200": _json(_OBJECT, "Me")})},
        "/openapi.json": {"get": _op("This document", {"200": _json(_OBJECT, "OpenAPI 3.1")})},
        "/groups": {"get": _op("Groups with quota and usage", {"200": _json(_OBJECT, "Groups")})},
        "/groups/{group}": {
            "parameters": [
                {"name": "group", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "patch": _op(
                "Enable or disable model deployment for a group (admins)",
                {"200": _json(_OBJECT, "The group")},
                errors=("400", "403", "404"),
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["enabledDeployment"],
                                "properties": {"enabledDeployment": {"type": "boolean"}},
                            }
                        }
                    },
                },
            ),
        },
        "/instance-types": {
            "get": _op(
                "Instance types available to the user (optionally of one group)",
                {"200": _json(_OBJECT, "Instance types")},
                parameters=[{"name": "group", "in": "query", "schema": {"type": "string"}}],
            )
        },
        "/deployments": {
            "get": _op(
                "List deployments of the user's groups, newest update first",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "deployments": {"type": "array", "items": _ref("Deployment")}
                            },
                        },
                        "Deployments",
                    )
                },
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
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CreateDeployment")}},
                },
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
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("UpdateDeployment")}},
                },
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
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "history": {"type": "array", "items": _ref("HistoryEntry")}
                            },
                        },
                        "History",
                    )
                },
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
                {"200": _json(_OBJECT, "Clients")},
                errors=("404",),
            ),
            "post": _op(
                "Add or replace a client; its token is returned this once",
                {"201": _json(_ref("Client"), "The client and its token")},
                errors=("400", "403", "404", "422"),
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Client")}},
                },
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
                "Replica names that have logs", {"200": _json(_OBJECT, "Replicas")}, errors=("404",)
            ),
        },
        "/deployments/{id}/logs": {
            "parameters": [_ID],
            "get": _op(
                "Logs with UTC timestamps: tail, follow (a stream) or download",
                {
                    "200": {
                        "description": "Log lines",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
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
                {"200": _json(_OBJECT, "Series on a shared time axis (docs/internals.md)")},
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
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["revision"],
                                "properties": {
                                    "revision": {"type": "integer", "minimum": 1},
                                    "updateMessage": {"type": "string", "maxLength": 1000},
                                },
                            }
                        }
                    },
                },
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
        "paths": {**_paths(), **openapi_paths({"content": _json(_ref("Error"), "")["content"]})},
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
