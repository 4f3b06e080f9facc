"""The contracts in core/: request bodies refuse with 400/422, answers match their models, and
every file generated from them (CRD, API schema) is fresh."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from primehub_jupyter import generate
from primehub_jupyter.core.bodies import (
    REQUESTS,
    RESPONSES,
    ChangeMessage,
    ClientCreated,
    ClientList,
    CreateDeployment,
    DeploymentList,
    ErrorBody,
    GroupList,
    GroupSettings,
    HistoryList,
    InstanceTypeList,
    Me,
    NewClient,
    ReplicaList,
    Rollback,
    UpdateDeployment,
)
from primehub_jupyter.core.errors import (
    BadRequest,
    Conflict,
    FeatureDisabled,
    NotFound,
    StorageUnavailable,
    ValidationError,
)
from primehub_jupyter.core.models import DeploymentRecord, DeploymentSpec, HistoryEntry
from primehub_jupyter.core.schemas import (
    api_models,
    component_schemas,
    model_schema,
    structural_schema,
)
from primehub_jupyter.engines.kubernetes.crd import openapi_schema
from primehub_jupyter.kernel.client import Client
from primehub_jupyter.server.openapi import openapi_document

from .conftest import spec

SPEC = {
    "displayName": "Iris",
    "groupName": "default",
    "predictors": [{"instanceType": "cpu-1", "modelImage": "iris:1"}],
}


# ---- generated files ----------------------------------------------------------------------


def test_generated_files_are_up_to_date():
    stale = generate.stale_files()
    assert stale == [], f"out of date: {', '.join(map(str, stale))}; run `make generate`"


def test_a_stale_generated_file_is_named_with_the_command(tmp_path, capsys):
    assert generate.main(["--root", str(tmp_path)]) == 0
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0
    crd = tmp_path / generate.CRD_FILE
    crd.write_text(crd.read_text().replace("maxLength: 63", "maxLength: 64", 1))
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    assert "deploy/base/crd.yaml is out of date: run `make generate`" in capsys.readouterr().err


def test_the_typescript_schema_holds_every_body():
    schema = json.loads((generate.REPO / generate.TS_SCHEMA_FILE).read_text())
    names = {model.__name__ for model in api_models()}
    assert names <= set(schema["$defs"]) and names <= set(schema["properties"])
    assert "DeploymentSpecPatch" in schema["$defs"]


# ---- request bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("model", REQUESTS)
@pytest.mark.parametrize("body", [[1], "spec", 5, None])
def test_a_body_that_is_not_an_object_is_a_400_that_shows_the_shape(model, body):
    with pytest.raises(BadRequest) as raised:
        model.parse(body)
    assert raised.value.message == model.usage


def test_unknown_fields_are_named_together_first():
    with pytest.raises(ValidationError) as raised:
        CreateDeployment.parse({"nospec": True, "colour": 1})
    assert raised.value.message == "unknown fields: colour, nospec"
    with pytest.raises(ValidationError) as raised:
        ChangeMessage.parse({"update_message": "snake case is not the API's"})
    assert raised.value.message == "unknown fields: update_message"


def test_create_names_each_bad_field_with_its_path():
    body = {"id": "Bad_ID", "spec": {**SPEC, "predictors": [{"instanceType": "x", "replicas": 0}]}}
    with pytest.raises(ValidationError) as raised:
        CreateDeployment.parse(body)
    fields = {d["field"] for d in raised.value.details}
    assert {"id", "spec.predictors.0.replicas"} <= fields
    assert "not a valid id" in raised.value.message


def test_create_gives_the_deployment_to_the_signed_in_user():
    body = {"spec": {**SPEC, "userName": "mallory"}, "metadata": {"name": "iris", "uid": "x"}}
    request = CreateDeployment.parse(body, user="alice")
    assert request.spec.user_name == "alice" and request.requested_id == "iris"
    with pytest.raises(ValidationError, match="name different deployments"):
        CreateDeployment.parse({"id": "one", "metadata": {"name": "two"}, "spec": SPEC})
    with pytest.raises(ValidationError, match="metadata must be an object"):
        CreateDeployment.parse({"metadata": "x", "spec": SPEC})


def test_update_needs_a_spec_object_and_reads_the_version_from_either_place():
    for body in ({}, {"spec": "x"}, {"spec": [1]}):
        with pytest.raises(BadRequest):
            UpdateDeployment.parse(body)
    request = UpdateDeployment.parse(
        {"spec": {"userName": "x", "stop": True}, "resourceVersion": 7}
    )
    assert request.based_on == "7" and request.patch == {"stop": True}
    request = UpdateDeployment.parse({"spec": {}, "metadata": {"resourceVersion": "9"}})
    assert request.based_on == "9"
    for version in ([], True, 1.5, {}):
        with pytest.raises(ValidationError, match="resourceVersion"):
            UpdateDeployment.parse({"spec": {}, "resourceVersion": version})


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (ChangeMessage, {"updateMessage": 5}, "updateMessage"),
        (ChangeMessage, {"updateMessage": "x" * 1001}, "updateMessage"),
        (Rollback, {}, "revision"),
        (Rollback, {"revision": "1"}, "revision"),
        (Rollback, {"revision": True}, "revision"),
        (Rollback, {"revision": 0}, "revision"),
        (NewClient, {"name": "ok\n"}, "name"),
        (NewClient, {"name": None}, "name"),
        (GroupSettings, {"enabledDeployment": "yes"}, "enabledDeployment"),
    ],
)
def test_a_bad_field_is_a_422_naming_it(model, body, field):
    with pytest.raises(ValidationError) as raised:
        model.parse(body)
    assert raised.value.message.startswith(f"{field}: ")
    assert raised.value.details[0]["field"] == field


def test_a_parsed_request_passes_through_parse():
    request = Rollback.parse({"revision": 10**30})
    assert Rollback.parse(request) is request and request.revision == 10**30


# ---- answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        BadRequest("no"),
        ValidationError("bad", details=[{"field": "spec.x", "message": "unknown field"}]),
        NotFound("gone"),
        Conflict("stale"),
        FeatureDisabled("research"),
        StorageUnavailable("full"),
    ],
)
def test_every_error_answer_is_an_error_body(error):
    assert ErrorBody.model_validate(error.to_json()).message == error.message


async def test_every_answer_matches_its_model(api, bundles):
    body = {"id": "shapes", "spec": {**spec(bundles["v1"]), "stop": True}}
    created = await api.ok("POST", "deployments", body)
    DeploymentRecord.model_validate(created)
    await api.ok("PATCH", "deployments/shapes", {"spec": {"endpoint": {"accessType": "private"}}})
    ClientCreated.model_validate(await api.ok("POST", "deployments/shapes/clients", {"name": "a"}))
    answers = {
        Me: await api.ok("GET", "me"),
        GroupList: await api.ok("GET", "groups"),
        InstanceTypeList: await api.ok("GET", "instance-types"),
        DeploymentList: await api.ok("GET", "deployments"),
        DeploymentRecord: await api.ok("GET", "deployments/shapes"),
        HistoryList: await api.ok("GET", "deployments/shapes/history"),
        HistoryEntry: await api.ok("GET", "deployments/shapes/history/1"),
        ClientList: await api.ok("GET", "deployments/shapes/clients"),
        ReplicaList: await api.ok("GET", "deployments/shapes/replicas"),
    }
    for model, answer in answers.items():
        parsed = model.model_validate(answer)  # extra fields are refused: the shape is exact
        assert parsed.to_json() == answer, model.__name__
    listed = answers[DeploymentList]["deployments"][0]
    assert "history" not in listed["status"] and listed["id"] == "shapes"
    code, answer = await api.call("POST", "deployments/shapes/rollback", {"revision": 0})
    assert code == 422 and ErrorBody.model_validate(answer).details[0]["field"] == "revision"


# ---- schemas -----------------------------------------------------------------------------


def test_openapi_components_are_the_models():
    schemas = openapi_document()["components"]["schemas"]
    for model in (*REQUESTS, *RESPONSES):
        assert model.__name__ in schemas
    assert schemas == component_schemas(api_models(), "#/components/schemas/{model}")
    update = schemas["UpdateDeployment"]["properties"]["spec"]
    assert update["$ref"] == "#/components/schemas/DeploymentSpecPatch"
    patch = schemas["PredictorPatch"]
    assert "required" not in patch and "pattern" in patch["properties"]["instanceType"]
    assert schemas["DeploymentSpecPatch"]["properties"]["predictors"]["items"] == {
        "$ref": "#/components/schemas/PredictorPatch"
    }
    status = schemas["DeploymentStatus"]
    assert "phase" in status["required"] and "history" not in status["required"]


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]")


def test_the_crd_schema_is_generated_structural_and_keeps_the_name_rules():
    schema = openapi_schema()
    for path, node in _walk(schema):
        for banned in ("$ref", "anyOf", "title", "default", "$defs", "propertyNames"):
            assert banned not in node or path.endswith(".properties"), f"{path}: {banned}"
    spec_schema = schema["properties"]["spec"]
    predictor = spec_schema["properties"]["predictors"]["items"]["properties"]
    pydantic_spec = model_schema(DeploymentSpec)
    assert (
        spec_schema["properties"]["groupName"]["pattern"]
        == (pydantic_spec["properties"]["groupName"]["pattern"])
    )
    for name in ("name", "instanceType", "imagePullSecret"):
        assert predictor[name]["pattern"].startswith("^") and predictor[name]["pattern"].endswith(
            "$"
        )
    assert predictor["metadata"] == {"type": "object", "additionalProperties": {"type": "string"}}
    status = schema["properties"]["status"]["properties"]
    assert status["sampleRequest"] == {
        "type": "object",
        "description": "The bundle's recorded sample request, when the engine knows it.",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert status["history"]["maxItems"] == 32
    assert {"observedGeneration", "rolloutStarted", "admitted"} <= set(status)


def test_a_union_of_two_shapes_cannot_be_structural():
    with pytest.raises(ValueError, match="one of 2 shapes"):
        structural_schema({"anyOf": [{"type": "string"}, {"type": "integer"}]})


def _response(status: int, content: bytes, reason: str = "Bad") -> requests.Response:
    response = requests.Response()
    response.status_code, response._content, response.reason = status, content, reason
    return response


def test_the_client_reads_error_bodies_and_others():
    body = {"message": "bad", "reason": "Invalid", "details": [{"field": "x", "message": "y"}]}
    error = Client._error(_response(422, json.dumps(body).encode()))
    assert (error.message, error.status, error.details) == ("bad", 422, body["details"])
    error = Client._error(_response(403, b'{"message": null, "reason": null}', reason=""))
    assert error.message == "not authorized: check the token"
    error = Client._error(_response(502, b"<html>bad gateway</html>"))
    assert error.message == "<html>bad gateway</html>" and error.details == []
    error = Client._error(_response(500, b"[1, 2]", reason="Internal"))
    assert error.message == "[1, 2]"
