"""The service catalog of a real table bundle (a mixed-type DataFrame pipeline), every example
replayed against its model server. Runs once the table packaging (branch i10-tabular) is in."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from openapi_spec_validator import validate

pytest.importorskip("primehub_jupyter.serving.tables", reason="table signatures not merged yet")
tabular = pytest.importorskip("tests.runtimes.test_tabular_sklearn")

# The tabular tests' fixtures: the fitted pipeline, its bundle and a real model server.
fitted = tabular.fitted
bundle = tabular.bundle
server = tabular.server


def test_table_catalog_lists_invoke_and_every_example_is_answered(server):
    document = requests.get(server.url + "/openapi.json", timeout=30).json()
    validate(document)
    paths = document["paths"]
    assert "/api/model/invoke" in paths
    seldon = paths["/api/v1.0/predictions"]["post"]["requestBody"]["content"]["application/json"]
    row = seldon["schema"]["properties"]["data"]["properties"]["ndarray"]["items"]
    names = seldon["example"]["data"]["names"]
    assert row["minItems"] == row["maxItems"] == len(names)
    infer = paths[next(p for p in paths if p.endswith("/infer"))]["post"]
    v2_example = infer["requestBody"]["content"]["application/json"]["example"]
    assert v2_example["parameters"] == {"content_type": "pd"}
    assert [tensor["name"] for tensor in v2_example["inputs"]] == names
    for path, operations in paths.items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            example = content.get("example") if content else None
            answer = requests.request(method, server.url + path, json=example, timeout=30)
            assert answer.status_code == 200, (path, answer.text)
            expected = operation["responses"]["200"]["content"]["application/json"].get("example")
            got = answer.json()
            if expected and "prediction" in expected:  # ODAHU invoke
                assert got["columns"] == expected["columns"]
                assert np.allclose(got["prediction"], expected["prediction"])
            elif expected and "model_name" in expected:  # V2 infer, pandas-encoded
                assert np.allclose(got["outputs"][0]["data"], expected["outputs"][0]["data"])
            elif expected and "data" in expected:  # Seldon v1
                assert np.allclose(got["data"]["ndarray"], expected["data"]["ndarray"])
