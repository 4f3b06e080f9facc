"""The service catalog: the OpenAPI document a real model server answers for its bundle."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import requests
from openapi_spec_validator import validate
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from primehub_jupyter.serving.bundle import load_bundle
from primehub_jupyter.serving.catalog import CATALOG_PATHS, openapi_document, server_url
from primehub_jupyter.serving.descriptor import BundleDescriptor, Sample, Signature, TensorSpec
from primehub_jupyter.serving.packaging import package

try:
    from tests.serving_helpers import ModelServer, serve
except ImportError:  # tests/ is on sys.path instead of the repository root
    from serving_helpers import ModelServer, serve  # type: ignore[no-redef]

MODEL = "iris-cat"
CLASS_NAMES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def catalog_server(tmp_path_factory):
    """The iris LogisticRegression with class names, on one worker, as deployment iris-dep."""
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    root = tmp_path_factory.mktemp("catalog")
    bundle = package(model, root / "bundle", name=MODEL, class_names=CLASS_NAMES)
    for server in serve(ModelServer.on_port, bundle, root / "server", "--deployment", "iris-dep"):
        yield server, load_bundle(bundle)


@pytest.mark.parametrize("path", CATALOG_PATHS)
def test_document_is_valid_and_lists_every_protocol_route(catalog_server, path):
    server, _ = catalog_server
    answer = requests.get(server.url + path, timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    document = answer.json()
    validate(document)
    assert document["info"]["title"] == "Deployment iris-dep"
    assert document["servers"] == [{"url": "/"}]
    paths = document["paths"]
    expected = {
        "/api/v1.0/predictions": "post",
        "/api/v0.1/predictions": "post",
        "/api/v1.0/feedback": "post",
        f"/v2/models/{MODEL}/infer": "post",
        f"/v2/models/{MODEL}/ready": "get",
        f"/v2/models/{MODEL}": "get",
    }
    # ODAHU's table endpoint is listed exactly when this server answers it.
    invoke = requests.post(
        server.url + "/api/model/invoke", json={"data": [[5.1, 3.5, 1.4, 0.2]]}, timeout=30
    )
    if invoke.status_code != 404:
        expected["/api/model/invoke"] = "post"
    assert {p: next(iter(ops)) for p, ops in paths.items()} == expected
    # The row schema comes from the signature: four numbers.
    seldon = paths["/api/v1.0/predictions"]["post"]
    row = seldon["requestBody"]["content"]["application/json"]["schema"]["properties"]["data"][
        "properties"
    ]["ndarray"]["items"]
    assert row == {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}


def test_seldon_examples_are_the_bundle_sample(catalog_server):
    server, descriptor = catalog_server
    document = requests.get(server.url + "/api/model/info", timeout=30).json()
    for path in ("/api/v1.0/predictions", "/api/v0.1/predictions"):
        operation = document["paths"][path]["post"]
        request = operation["requestBody"]["content"]["application/json"]["example"]
        response = operation["responses"]["200"]["content"]["application/json"]["example"]
        assert request == descriptor.sample.request
        assert response == descriptor.sample.response


def test_every_example_request_gets_its_example_response(catalog_server):
    """Posting each operation's example request returns the example response's data."""
    server, _ = catalog_server
    document = requests.get(server.url + "/openapi.json", timeout=30).json()
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            example = content.get("example") if content else None
            answer = requests.request(method, server.url + path, json=example, timeout=30)
            assert answer.status_code == 200, (path, answer.text)
            expected = operation["responses"]["200"]["content"]["application/json"].get("example")
            if expected is None or path.endswith("/feedback"):
                continue
            got = answer.json()
            if "data" in expected:  # Seldon v1 (meta carries the request id)
                assert got["data"]["names"] == expected["data"]["names"]
                assert np.allclose(got["data"]["ndarray"], expected["data"]["ndarray"])
            elif "model_name" in expected:  # KServe V2 infer
                assert got["outputs"][0]["datatype"] == expected["outputs"][0]["datatype"], got
                assert got["outputs"][0]["shape"] == expected["outputs"][0]["shape"]
                assert got["outputs"][0]["data"] == pytest.approx(expected["outputs"][0]["data"])
            elif "prediction" in expected:  # ODAHU invoke
                assert got["columns"] == expected["columns"]
                assert np.allclose(got["prediction"], expected["prediction"])
            else:
                assert got == expected
            checked += 1
    assert checked >= 4


def test_forwarded_prefix_becomes_the_server(catalog_server):
    server, _ = catalog_server
    headers = {"X-Forwarded-Prefix": "/deployment/iris-dep"}
    document = requests.get(server.url + "/openapi.json", headers=headers, timeout=30).json()
    assert document["servers"] == [{"url": "/deployment/iris-dep"}]
    # Anything but plain path segments is ignored: Swagger UI must not be sent elsewhere.
    for bad in ("https://evil.example", "/a/../b", "//evil.example/x", "/a b"):
        document = requests.get(
            server.url + "/openapi.json", headers={"X-Forwarded-Prefix": bad}, timeout=30
        ).json()
        assert document["servers"] == [{"url": "/"}], bad
    assert server_url(None) == "/"


def test_catalog_answers_get_and_post_only(catalog_server):
    server, _ = catalog_server
    # POST is how the control plane's invoke asks (GET /primehub/api/deployments/<id>/catalog).
    posted = requests.post(server.url + "/api/model/info", timeout=30)
    assert posted.status_code == 200
    assert posted.json() == requests.get(server.url + "/api/model/info", timeout=30).json()
    assert requests.delete(server.url + "/api/model/info", timeout=30).status_code == 405


class _Column(TensorSpec):
    """A table column as the tabular branch's TensorSpec records it (pandas dtype, categories)."""

    dtype: str | None = None
    categories: list[Any] | None = None


class _TableSignature(Signature):
    """A table signature (contentType pd), mirrored here so this test does not need its home."""

    content_type: str | None = "pd"

    @property
    def is_table(self) -> bool:
        return self.content_type == "pd"


def _table_descriptor() -> BundleDescriptor:
    """A table bundle as the tabular packager writes it: one input per column."""
    signature = _TableSignature(
        inputs=[
            _Column(name="age", datatype="INT64", shape=[-1], dtype="int64"),
            _Column(
                name="city",
                datatype="BYTES",
                shape=[-1],
                dtype="object",
                categories=["Paris", "Rome"],
            ),
            _Column(name="member", datatype="BOOL", shape=[-1], dtype="bool"),
        ],
        outputs=[TensorSpec(name="output-0", datatype="FP64", shape=[-1, 2])],
    )
    sample = Sample(
        request={"data": {"names": ["age", "city", "member"], "ndarray": [[42, "Paris", True]]}},
        response={"data": {"names": ["no", "yes"], "ndarray": [[0.25, 0.75]]}, "meta": {}},
    )
    descriptor = BundleDescriptor(
        name="credit", framework="sklearn", runtime="sklearn", artifact="model.joblib"
    )
    descriptor.class_names = ["no", "yes"]
    descriptor.signature = signature
    descriptor.sample = sample
    return descriptor


def test_table_signature_document():
    served = {"/api/v1.0/predictions", "/api/v1.0/feedback", "/api/model/invoke"}
    document = openapi_document(
        _table_descriptor(), name="credit", version="v1", served=served, server="/deployment/c"
    )
    validate(document)
    paths = document["paths"]
    request = paths["/api/v1.0/predictions"]["post"]["requestBody"]["content"]["application/json"]
    row = request["schema"]["properties"]["data"]["properties"]["ndarray"]["items"]
    assert row["minItems"] == row["maxItems"] == 3
    assert [c["type"] for c in row["items"]["anyOf"]] == ["integer", "string", "boolean"]
    assert "Paris, Rome" in row["items"]["anyOf"][1]["description"]
    # V2: one input per column with content_type pd, as MLServer's PandasCodec writes it.
    infer = paths["/v2/models/credit/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert infer["example"] == {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": "age", "datatype": "INT64", "shape": [1], "data": [42]},
            {"name": "city", "datatype": "BYTES", "shape": [1], "data": ["Paris"]},
            {"name": "member", "datatype": "BOOL", "shape": [1], "data": [True]},
        ],
    }
    invoke = paths["/api/model/invoke"]["post"]
    assert invoke["requestBody"]["content"]["application/json"]["example"] == {
        "columns": ["age", "city", "member"],
        "data": [[42, "Paris", True]],
    }
    assert invoke["responses"]["200"]["content"]["application/json"]["example"] == {
        "prediction": [[0.25, 0.75]],
        "columns": ["no", "yes"],
    }
